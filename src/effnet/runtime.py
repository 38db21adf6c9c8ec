"""One interface over the inference engines a model can run on: PyTorch, ONNX Runtime and OpenVINO.

    rt = load_runtime(model, "openvino", "int8", calibration=images)   # or "onnxruntime"/"torch"; "fp32"/"bf16"
    logits = rt(x)                                                     # NCHW float32 in, float32 logits out

A runtime takes an `nn.Module` (exported on the fly into `workdir`) or a file made by `export_onnx` /
`export_openvino` (`effnet export --format onnx|openvino`).  Precisions: fp32 (≤ 1e-4 relative to eager),
bf16 (AMX; lossy), int8 (post-training quantization calibrated on real images; lossy).  Lossy paths are
measured against fp32 on real photos (`effnet.bench.accuracy_agreement`), never assumed.

int8 and the depthwise trap: ONNX Runtime's QDQ with signed int8 activations (S8S8) leaves depthwise convs
unfused — they fall back to float and B0 runs slower than fp32.  We quantize with unsigned activations and
signed per-channel weights (U8S8), which its CPU kernels fuse; OpenVINO's int8 comes from NNCF.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch
from torch import nn

from effnet.errors import EffnetError

BACKENDS = ("torch", "onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")


class RuntimeUnavailable(EffnetError, ValueError):
    """A runtime that cannot be made: unknown backend/precision, missing package, unreadable file."""


class Runtime(ABC):
    """Callable inference engine: `rt(x)` with x an NCHW float tensor (or array) → float32 logits tensor."""

    backend: str
    precision: str

    @abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray: ...

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        array = x.detach().cpu().float().contiguous().numpy() if isinstance(x, torch.Tensor) else \
            np.ascontiguousarray(x, dtype=np.float32)
        return torch.from_numpy(np.asarray(self.run(array), dtype=np.float32))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(backend={self.backend!r}, precision={self.precision!r})"


def _require(module: str, extra: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise RuntimeUnavailable(f"the {module!r} package is not installed; install it with "
                            f"`pip install 'effnet[{extra}]'` (or `pip install {module}`)") from None


def check_runtime(backend: str, precision: str) -> None:
    """Raise `RuntimeUnavailable` for an unknown backend or precision, or a pair no engine runs."""
    if backend not in BACKENDS:
        raise RuntimeUnavailable(f"runtime: got backend {backend!r}, expected one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise RuntimeUnavailable(f"runtime: got precision {precision!r}, expected one of {', '.join(PRECISIONS)}")
    if backend == "torch" and precision == "int8":
        raise RuntimeUnavailable("runtime: int8 runs on onnxruntime or openvino; use --runtime onnxruntime or openvino")
    if backend == "onnxruntime" and precision == "bf16":
        raise RuntimeUnavailable("runtime: onnxruntime has no bf16 CPU kernels for convolutions; use openvino or torch")


def _resolution(model: nn.Module, resolution: int | None) -> int:
    if resolution:
        return resolution
    spec = getattr(model, "spec", None)
    if spec is None:
        raise RuntimeUnavailable("runtime: a model without a spec needs an explicit resolution")
    return spec.resolution


def _in_channels(model: nn.Module) -> int:
    spec = getattr(model, "spec", None)
    return spec.in_channels if spec is not None else 3


@contextlib.contextmanager
def _quiet():
    """The exporters print progress to stdout and warn about tracing; keep stdout for the caller's output."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# --- export -------------------------------------------------------------------------------------------------------


def export_onnx(model: nn.Module, path: str | Path, *, resolution: int | None = None, opset: int = 18) -> Path:
    """ONNX file with a dynamic batch dimension (input `images`, output `logits`), BN left for ORT to fold."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    res = _resolution(model, resolution)
    x = torch.zeros(2, _in_channels(model), res, res)
    model = model.eval()
    with torch.no_grad(), _quiet():
        torch.onnx.export(
            model, (x,), str(path), input_names=["images"], output_names=["logits"], opset_version=opset,
            dynamo=True, dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}},
            external_data=False,
        )
    return path


def export_openvino(model: nn.Module, path: str | Path, *, resolution: int | None = None) -> Path:
    """OpenVINO IR (`path` .xml + .bin beside it), converted from the PyTorch module, dynamic batch."""
    ov = _require("openvino", "openvino")
    path = Path(path).with_suffix(".xml")
    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(_to_openvino(model, resolution), str(path), compress_to_fp16=False)  # keep fp32 weights
    return path


def save_openvino(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """`effnet.export` entry point: OpenVINO IR at `path` (.xml, weights in the .bin beside it), dynamic batch."""
    export_openvino(model, path, resolution=example.shape[-1])


def openvino_runner(path: Path):
    """`effnet.export` entry point: numpy batch → numpy logits through OpenVINO in fp32."""
    return load_runtime(Path(path), "openvino", "fp32").run


def _to_openvino(model: nn.Module, resolution: int | None):
    ov = _require("openvino", "openvino")
    res, ch = _resolution(model, resolution), _in_channels(model)
    with torch.no_grad(), _quiet():
        converted = ov.convert_model(model.eval(), example_input=torch.zeros(1, ch, res, res),
                                     input=[ov.PartialShape([-1, ch, res, res])])
    return converted


# --- ONNX Runtime -------------------------------------------------------------------------------------------------


class _OnnxRuntime(Runtime):
    backend = "onnxruntime"

    def __init__(self, path: Path, precision: str, threads: int | None) -> None:
        ort = _require("onnxruntime", "export")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.precision, self.path = precision, path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]


class _Calibration:
    """ORT's CalibrationDataReader over a float batch, one image at a time."""

    def __init__(self, name: str, images: np.ndarray) -> None:
        self.name, self.items = name, iter(list(images))

    def get_next(self):
        item = next(self.items, None)
        return None if item is None else {self.name: item[None]}

    def rewind(self):  # pragma: no cover - not used by quantize_static's single pass
        pass


def quantize_onnx(src: str | Path, dst: str | Path, calibration: torch.Tensor | np.ndarray) -> Path:
    """Static int8 QDQ: activations uint8 (per tensor), weights int8 per channel (U8S8), calibrated by
    MinMax on `calibration` (N×C×H×W real images, preprocessed as at inference)."""
    _require("onnxruntime", "export")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    pre = dst.with_name(dst.stem + ".pre.onnx")
    with _quiet():
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    images = calibration.numpy() if isinstance(calibration, torch.Tensor) else np.asarray(calibration)
    with _quiet():
        quantize_static(
            str(pre), str(dst), _Calibration("images", images.astype(np.float32)), quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
        )
    pre.unlink(missing_ok=True)
    return dst


# --- OpenVINO -----------------------------------------------------------------------------------------------------


class _OpenVino(Runtime):
    """OpenVINO CPU plugin, one compiled model per input shape (static shapes run faster than dynamic ones).

    A batch that splits evenly over the threads runs as that many single-threaded streams, one slice each, in
    parallel (OpenVINO's THROUGHPUT mode): no barrier between threads inside each layer (B0 bf16 at batch 32:
    1.64× ONNX Runtime fp32 in benchmarks/results/infer_b0.txt, 1.48× before this split).  Batch 1, or a
    batch that does not split evenly, runs as one request on all threads (LATENCY mode).

    On AMX/AVX512-BF16 CPUs OpenVINO silently infers in bf16 by default; fp32 pins INFERENCE_PRECISION_HINT=f32."""

    backend = "openvino"

    def __init__(self, ov_model, precision: str, threads: int | None) -> None:
        ov = _require("openvino", "openvino")
        self.core, self.model, self.precision = ov.Core(), ov_model, precision
        self.threads = threads or torch.get_num_threads()
        self.config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": self.threads}
        if precision == "fp32":
            self.config["INFERENCE_PRECISION_HINT"] = "f32"
        elif precision == "bf16":
            self.config["INFERENCE_PRECISION_HINT"] = "bf16"
        self._compiled: dict[tuple[int, ...], object] = {}  # LATENCY mode, one request on all threads
        self._streams: dict[tuple[int, ...], list] = {}  # THROUGHPUT mode: one request per single-threaded stream

    def _compile(self, shape: tuple[int, ...], config: dict):
        ov = _require("openvino", "openvino")
        model = self.model.clone()
        model.reshape({model.inputs[0]: ov.PartialShape(list(shape))})
        return self.core.compile_model(model, "CPU", config)

    def _for_shape(self, shape: tuple[int, ...]):
        compiled = self._compiled.get(shape)
        if compiled is None:
            compiled = self._compiled[shape] = self._compile(shape, self.config)
        return compiled

    def _stream_requests(self, shape: tuple[int, ...]) -> list:
        """`self.threads` infer requests of one model compiled with as many single-threaded streams."""
        requests = self._streams.get(shape)
        if requests is None:
            compiled = self._compile(shape, dict(self.config, PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS=self.threads))
            requests = self._streams[shape] = [compiled.create_infer_request() for _ in range(self.threads)]
        return requests

    def run(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        if self.threads > 1 and n >= self.threads and n % self.threads == 0:
            part = n // self.threads
            requests = self._stream_requests((part,) + tuple(x.shape[1:]))
            for i, request in enumerate(requests):
                request.start_async({0: x[i * part:(i + 1) * part]})
            for request in requests:
                request.wait()
            return np.concatenate([request.get_output_tensor(0).data for request in requests])
        return self._for_shape(tuple(x.shape))(x)[0]


def quantize_openvino(ov_model, calibration: torch.Tensor | np.ndarray):
    """int8 with NNCF post-training quantization (per-channel weights, statistics over the calibration images,
    fast bias correction), returning a new OpenVINO model."""
    import logging

    # nncf probes torch's C++-extension toolchain on import, which logs a CUDA_HOME warning on CPU-only machines.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    nncf = _require("nncf", "openvino")
    images = calibration.numpy() if isinstance(calibration, torch.Tensor) else np.asarray(calibration)
    dataset = nncf.Dataset([img[None].astype(np.float32) for img in images])
    with _quiet():  # MIXED: asymmetric activations (SiLU outputs go below zero), symmetric per-channel weights
        return nncf.quantize(ov_model, dataset, subset_size=len(images), preset=nncf.QuantizationPreset.MIXED)


# --- torch --------------------------------------------------------------------------------------------------------


class _Torch(Runtime):
    backend = "torch"

    def __init__(self, model: nn.Module, precision: str, compile: bool) -> None:
        from effnet.optimize import compile_for_inference, optimize_for_inference, to_bf16

        self.precision = precision
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        if compile:
            self.module = compile_for_inference(model, dtype=dtype)
        else:
            self.module = to_bf16(model) if precision == "bf16" else optimize_for_inference(model)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.__call__(x).numpy()

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float32)
        with torch.inference_mode():
            return self.module(x).float()


# --- entry point ----------------------------------------------------------------------------------------------------


def load_runtime(
    model: nn.Module | str | Path,
    backend: str = "onnxruntime",
    precision: str = "fp32",
    *,
    calibration: torch.Tensor | np.ndarray | None = None,
    resolution: int | None = None,
    threads: int | None = None,
    workdir: str | Path | None = None,
    compile: bool = False,
) -> Runtime:
    """A runtime for `model` (a module, or an exported .onnx / .xml file) on `backend` at `precision`.

    int8 needs `calibration`: a few dozen real images preprocessed exactly as at inference (see
    `effnet.bench.calibration_images`); quantizing on noise gives wrong ranges and loses accuracy."""
    check_runtime(backend, precision)
    if precision == "int8" and calibration is None:
        raise RuntimeUnavailable("runtime: int8 needs calibration images (N×C×H×W, preprocessed as at inference); "
                            "pass calibration=effnet.bench.calibration_images(...)")
    if isinstance(model, (str, Path)):
        return _from_file(Path(model), backend, precision, calibration, threads, workdir)
    if backend == "torch":
        return _Torch(model, precision, compile)
    if backend == "openvino":
        ov_model = _to_openvino(model, resolution)
        if precision == "int8":
            ov_model = quantize_openvino(ov_model, calibration)
        return _OpenVino(ov_model, precision, threads)
    with _workdir(workdir) as work:
        path = export_onnx(model, work / "model.onnx", resolution=resolution)
        if precision == "int8":
            path = quantize_onnx(path, work / "model.int8.onnx", calibration)
        return _OnnxRuntime(path, precision, threads)  # the session holds the model: the files may go


@contextlib.contextmanager
def _workdir(workdir: str | Path | None):
    """`workdir` (kept), or a temporary folder removed afterwards."""
    if workdir:
        yield Path(workdir)
        return
    with tempfile.TemporaryDirectory(prefix="effnet-ort-") as tmp:
        yield Path(tmp)


def _from_file(path: Path, backend: str, precision: str, calibration, threads, workdir) -> Runtime:
    if not path.is_file():
        raise RuntimeUnavailable(f"runtime: {path}: no such file; make one with `effnet export MODEL --format onnx` "
                            "or `--format openvino`")
    if backend == "torch":
        raise RuntimeUnavailable(f"runtime: {path}: an exported file runs on onnxruntime or openvino, not torch")
    if backend == "onnxruntime":
        if path.suffix != ".onnx":
            raise RuntimeUnavailable(f"runtime: {path}: onnxruntime needs a .onnx file, got {path.suffix!r}")
        if precision != "int8":
            return _OnnxRuntime(path, precision, threads)
        with _workdir(workdir) as work:
            return _OnnxRuntime(quantize_onnx(path, work / (path.stem + ".int8.onnx"), calibration), precision,
                                threads)
    ov = _require("openvino", "openvino")
    if path.suffix not in (".xml", ".onnx"):
        raise RuntimeUnavailable(f"runtime: {path}: openvino reads .xml (IR) or .onnx, got {path.suffix!r}")
    ov_model = ov.Core().read_model(str(path))
    if precision == "int8":
        ov_model = quantize_openvino(ov_model, calibration)
    return _OpenVino(ov_model, precision, threads)


class RuntimeModule(nn.Module):
    """A runtime dressed as an eval-only `nn.Module`, for code written against modules (`effnet predict`)."""

    def __init__(self, runtime: Runtime, spec=None) -> None:
        super().__init__()
        self.runtime, self.spec = runtime, spec
        self._device_marker = nn.Parameter(torch.empty(0), requires_grad=False)  # so parameters() names a device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.runtime(x)


def runtime_module(model: nn.Module, backend: str, precision: str = "fp32") -> nn.Module:
    """`model` on `backend` at `precision` as a module; int8 is calibrated on real photos (`effnet.lossy`)."""
    if backend == "torch" and precision == "fp32":
        return model
    spec = getattr(model, "spec", None)
    calibration = None
    if precision == "int8":
        from effnet.lossy import calibration_images

        if spec is None:
            raise RuntimeUnavailable("runtime: int8 calibration needs an effnet model (with a spec)")
        calibration = calibration_images(spec, 64)
    return RuntimeModule(load_runtime(model, backend, precision, calibration=calibration), spec)


def available_backends() -> list[str]:
    """Backends whose packages import here (torch always)."""
    import importlib.util

    found = ["torch"]
    for backend, module in (("onnxruntime", "onnxruntime"), ("openvino", "openvino")):
        if importlib.util.find_spec(module) is not None:
            found.append(backend)
    return found


__all__ = [
    "BACKENDS", "PRECISIONS", "Runtime", "RuntimeModule", "RuntimeUnavailable", "available_backends", "check_runtime",
    "export_onnx", "export_openvino", "load_runtime", "openvino_runner", "quantize_onnx", "quantize_openvino",
    "runtime_module", "save_openvino",
]

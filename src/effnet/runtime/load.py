"""`load_runtime`: the one way to a runtime, from a module or an exported file (`engine="auto"`: the fastest one
here, chosen by `effnet.runtime.auto`); `runtime_module` dresses one as an `nn.Module` for code written against
modules (`effnet predict`, `effnet eval --runtime`)."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from effnet.runtime.auto import fastest_runtime
from effnet.runtime.base import ENGINES, Runtime, RuntimeUnavailable, check_runtime
from effnet.runtime.onnxruntime_engine import OnnxRuntime, export_onnx, quantize_onnx
from effnet.runtime.openvino_engine import OpenVinoRuntime, _to_openvino, quantize_openvino, read_openvino
from effnet.runtime.torch_engine import TorchRuntime

_CALIBRATION_HINT = ("int8 needs calibration images (N×C×H×W, preprocessed as at inference); pass "
                     "calibration=effnet.data.calibration.calibration_images(...)")


def load_runtime(
    model: nn.Module | str | Path,
    backend: str | None = None,
    precision: str = "fp32",
    *,
    engine: str | None = None,
    batch: int = 1,
    calibration: torch.Tensor | np.ndarray | None = None,
    resolution: int | None = None,
    threads: int | None = None,
    workdir: str | Path | None = None,
    compile: bool = False,
) -> Runtime:
    """A runtime for `model` (a module, or an exported .onnx / .xml file) on `engine` at `precision`.

    `engine`: torch, onnxruntime (the default), openvino, or "auto": every installed engine that runs this
    precision is timed on a batch of `batch` images and the fastest returned, its timings in `runtime.choice`;
    the choice is cached per model, precision, batch, resolution, threads and CPU, so the next call times nothing
    (`effnet.runtime.auto`).  `backend` is the older name of `engine` (either may be given, not two different
    ones).  OpenVINO keeps several requests in flight by itself: a batch that splits evenly over the threads runs
    as one single-threaded stream per thread (`OpenVinoRuntime`), which is what auto times at `batch` > 1.

    int8 needs `calibration`: a few dozen real images preprocessed exactly as at inference (see
    `effnet.data.calibration.calibration_images`); quantizing on noise gives wrong ranges and loses accuracy."""
    name = _engine_name(engine, backend)
    check_runtime(name, precision)
    if precision == "int8" and calibration is None:
        raise RuntimeUnavailable(f"runtime: {_CALIBRATION_HINT}")
    if name == "auto":
        if isinstance(model, (str, Path)):
            _existing_file(Path(model))

        def build(candidate: str) -> Runtime:
            return load_runtime(model, engine=candidate, precision=precision, calibration=calibration,
                                resolution=resolution, threads=threads, workdir=workdir, compile=compile)

        return fastest_runtime(model, precision, build, batch=batch, resolution=resolution, threads=threads,
                               compile=compile)
    if isinstance(model, (str, Path)):
        return _from_file(Path(model), name, precision, calibration, threads, workdir)
    if name == "torch":
        return TorchRuntime(model, precision, compile)
    if name == "openvino":
        ov_model = _to_openvino(model, resolution)
        if precision == "int8":
            ov_model = quantize_openvino(ov_model, calibration)
        return OpenVinoRuntime(ov_model, precision, threads)
    with _workdir(workdir) as work:
        path = export_onnx(model, work / "model.onnx", resolution=resolution)
        if precision == "int8":
            path = quantize_onnx(path, work / "model.int8.onnx", calibration)
        return OnnxRuntime(path, precision, threads)  # the session holds the model: the files may go


def _engine_name(engine: str | None, backend: str | None) -> str:
    """The engine asked for by either name (default onnxruntime); two different ones are an error."""
    if engine is not None and backend is not None and engine != backend:
        raise RuntimeUnavailable(f"runtime: got engine={engine!r} and backend={backend!r}; pass one of them "
                                 f"(backend is the older name of engine), one of {', '.join(ENGINES)}")
    return engine or backend or "onnxruntime"


@contextlib.contextmanager
def _workdir(workdir: str | Path | None):
    """`workdir` (kept), or a temporary folder removed afterwards."""
    if workdir:
        yield Path(workdir)
        return
    with tempfile.TemporaryDirectory(prefix="effnet-ort-") as tmp:
        yield Path(tmp)


def _existing_file(path: Path) -> None:
    if not path.is_file():
        raise RuntimeUnavailable(f"runtime: {path}: no such file; make one with `effnet export MODEL --format onnx` "
                                 "or `--format openvino`")


def _from_file(path: Path, backend: str, precision: str, calibration, threads, workdir) -> Runtime:
    _existing_file(path)
    if backend == "torch":
        raise RuntimeUnavailable(f"runtime: {path}: an exported file runs on onnxruntime or openvino, not torch")
    if backend == "onnxruntime":
        if path.suffix != ".onnx":
            raise RuntimeUnavailable(f"runtime: {path}: onnxruntime needs a .onnx file, got {path.suffix!r}")
        if precision != "int8":
            return OnnxRuntime(path, precision, threads)
        with _workdir(workdir) as work:
            return OnnxRuntime(quantize_onnx(path, work / (path.stem + ".int8.onnx"), calibration), precision,
                               threads)
    if path.suffix not in (".xml", ".onnx"):
        raise RuntimeUnavailable(f"runtime: {path}: openvino reads .xml (IR) or .onnx, got {path.suffix!r}")
    ov_model = read_openvino(path)
    if precision == "int8":
        ov_model = quantize_openvino(ov_model, calibration)
    return OpenVinoRuntime(ov_model, precision, threads)


class RuntimeModule(nn.Module):
    """A runtime dressed as an eval-only `nn.Module`, for code written against modules (`effnet predict`)."""

    def __init__(self, runtime: Runtime, spec=None) -> None:
        super().__init__()
        self.runtime, self.spec = runtime, spec
        self._device_marker = nn.Parameter(torch.empty(0), requires_grad=False)  # so parameters() names a device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.runtime(x)


def runtime_module(
    model: nn.Module,
    backend: str,
    precision: str = "fp32",
    *,
    calibration: torch.Tensor | np.ndarray | None = None,
    resolution: int | None = None,
    batch: int = 1,
) -> nn.Module:
    """`model` on `backend` (an engine name, "auto" included) at `precision` as a module (torch fp32: `model`
    itself; "auto" times the engines at `batch`).  int8 is calibrated on `calibration`, by default on real photos
    preprocessed for the model (`effnet.data.calibration.calibration_images`)."""
    if backend == "torch" and precision == "fp32":
        return model
    spec = getattr(model, "spec", None)
    if precision == "int8" and calibration is None:
        from effnet.data.calibration import calibration_images

        if spec is None:
            raise RuntimeUnavailable("runtime: int8 calibration needs an effnet model (with a spec)")
        calibration = calibration_images(spec, 64, resolution)
    runtime = load_runtime(model, engine=backend, precision=precision, calibration=calibration,
                           resolution=resolution, batch=batch)
    return RuntimeModule(runtime, spec)


def available_backends() -> list[str]:
    """Backends whose packages import here (torch always)."""
    import importlib.util

    found = ["torch"]
    for backend, module in (("onnxruntime", "onnxruntime"), ("openvino", "openvino")):
        if importlib.util.find_spec(module) is not None:
            found.append(backend)
    return found


__all__ = ["RuntimeModule", "available_backends", "load_runtime", "runtime_module"]

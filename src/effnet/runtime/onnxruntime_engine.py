"""ONNX and ONNX Runtime: the one ONNX exporter (`export_onnx`), the one session factory (`onnx_session`), static
int8 quantization (`quantize_onnx`) and the runtime over a session.

Every ONNX file effnet writes has input `images` (N×C×H×W float32, the batch dynamic) and output `logits`.

int8 and the depthwise trap: ONNX Runtime's QDQ with signed int8 activations (S8S8) leaves depthwise convs
unfused — they fall back to float and B0 runs slower than fp32.  We quantize with unsigned activations and
signed per-channel weights (U8S8), which its CPU kernels fuse.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch import nn

from effnet.runtime.base import ExportError, Runtime, _as_array, _in_channels, _quiet, _require, _resolution

ONNX_INPUT, ONNX_OUTPUT = "images", "logits"
_EXTERNAL_DATA_BYTES = 1.5e9  # below protobuf's 2 GB limit on one file


def export_onnx(model: nn.Module, path: str | Path, *, resolution: int | None = None, opset: int = 18) -> Path:
    """ONNX file with a dynamic batch dimension (input `images`, output `logits`), BN left for ORT to fold.

    One self-contained file, unless the weights approach protobuf's 2 GB limit (EfficientNet-L2): then torch
    writes them beside it as PATH.data.  A failure of torch's exporter is one `ExportError` line with the tail of
    its log."""
    _require("onnxscript")  # torch's dynamo exporter needs onnx and onnxscript
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    res = _resolution(model, resolution)
    x = torch.zeros(2, _in_channels(model), res, res)
    model = model.eval()
    external = sum(p.numel() * p.element_size() for p in model.parameters()) > _EXTERNAL_DATA_BYTES
    log = io.StringIO()
    try:
        with torch.no_grad(), _quiet(log):
            torch.onnx.export(
                model, (x,), str(path), input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT], opset_version=opset,
                dynamo=True, dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=4096)}},
                external_data=external,
            )
    except Exception as exc:  # the exporter raises many types; report it as one line with its log tail
        tail = " | ".join(log.getvalue().strip().splitlines()[-3:])
        message = " ".join(str(exc).split())[:300]  # one line, as every effnet error
        raise ExportError(f"ONNX export failed: {type(exc).__name__}: {message} {tail}".strip()) from None
    return path


def onnx_session(path: str | Path, *, threads: int | None = None):
    """An ONNX Runtime CPU session over the file at `path`: all graph optimizations, `threads` intra-op threads
    (default: as many as torch uses) and one inter-op thread.  The one place effnet opens an ONNX file."""
    ort = _require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxRuntime(Runtime):
    backend = "onnxruntime"

    def __init__(self, path: Path, precision: str, threads: int | None) -> None:
        self.precision, self.path = precision, path
        self.session = onnx_session(path, threads=threads)
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
    _require("onnxruntime")
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    pre = dst.with_name(dst.stem + ".pre.onnx")
    with _quiet():
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    name = onnx.load(str(pre), load_external_data=False).graph.input[0].name  # a file of any exporter
    with _quiet():
        quantize_static(
            str(pre), str(dst), _Calibration(name, _as_array(calibration)), quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
        )
    pre.unlink(missing_ok=True)
    return dst


def save_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """`effnet.export` entry point: `export_onnx` at the example's resolution."""
    export_onnx(model, path, resolution=example.shape[-1])


def onnx_runner(path: Path):
    """`effnet.export` entry point: numpy batch → numpy logits through ONNX Runtime in fp32."""
    return OnnxRuntime(Path(path), "fp32", None).run


__all__ = ["ONNX_INPUT", "ONNX_OUTPUT", "OnnxRuntime", "export_onnx", "onnx_runner", "onnx_session", "quantize_onnx",
           "save_onnx"]

"""Export a model to ONNX or TorchScript, then check the exported file against eager PyTorch.

Every format is one `Exporter` in `EXPORTERS`: `save` writes the file from the eval-mode model and an example
batch; `runner` loads the file back in its own runtime (onnxruntime for ONNX) and returns a function
`numpy batch -> numpy logits`.  A new format is one more entry.

The batch dimension is dynamic; the spatial size is the one exported (TF-SAME padding, used by the Lite models,
is computed from the input size, and both formats fix it at export).  The parity check runs a batch of a
*different* size than the export example through both, so it also shows the batch is dynamic, and reports

    max abs error = max |exported − eager|,   relative error = max abs error / max |eager|

(relative to the logits' scale, so near-zero logits do not make it meaningless).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from effnet.files import checked_output
from effnet.runtime import ExportError, onnx_runner, openvino_runner, save_onnx, save_openvino

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Exporter:
    name: str
    suffix: str
    runtime: str
    save: Callable[[nn.Module, torch.Tensor, Path], None]
    runner: Callable[[Path], Runner]


@dataclass(frozen=True)
class ExportReport:
    path: str
    format: str
    runtime: str
    resolution: int
    batch_checked: int
    max_abs_error: float
    relative_error: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.relative_error <= self.tolerance


# -- TorchScript ------------------------------------------------------------------------------------------------------


def _save_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    # torch.jit.trace is deprecated in favour of torch.export but still the way to a file that C++/mobile
    # runtimes load; tracing records TF-SAME padding for the example's spatial size (the batch stays dynamic).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example, check_trace=False)
        traced.save(str(path))


def _torchscript_runner(path: Path) -> Runner:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu")

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()

    return run


EXPORTERS: dict[str, Exporter] = {
    # ONNX (input `images`, output `logits`) and OpenVINO IR (.xml + .bin, fp32 weights) are written and run by
    # effnet.runtime, the same exporter and sessions that `effnet bench` and `effnet eval --runtime` use.
    "onnx": Exporter("onnx", ".onnx", "onnxruntime", save_onnx, onnx_runner),
    "torchscript": Exporter("torchscript", ".pt", "torch.jit", _save_torchscript, _torchscript_runner),
    "openvino": Exporter("openvino", ".xml", "openvino", save_openvino, openvino_runner),
}


def get_exporter(fmt: str) -> Exporter:
    try:
        return EXPORTERS[fmt]
    except KeyError:
        raise ExportError(f"--format: got {fmt!r}, expected one of {', '.join(EXPORTERS)}") from None


def parity(eager: np.ndarray, exported: np.ndarray) -> tuple[float, float]:
    """(max abs error, max abs error / max |eager|)."""
    if eager.shape != exported.shape:
        raise ExportError(f"exported model returned shape {exported.shape}, eager PyTorch {eager.shape}")
    max_abs = float(np.max(np.abs(exported.astype(np.float64) - eager.astype(np.float64))))
    return max_abs, max_abs / max(float(np.max(np.abs(eager))), 1e-12)


def _above(value: float) -> str:
    """A round tolerance just above `value` (two significant digits, rounded up)."""
    digits = 1 - math.floor(math.log10(value)) if value > 0 else 0
    return f"{math.ceil(value * 10 ** digits) / 10 ** digits:g}"


def export(
    model: nn.Module,
    path: str | Path,
    fmt: str,
    *,
    resolution: int | None = None,
    check_batch: int = 3,
    tolerance: float = 1e-4,
    seed: int = 0,
) -> ExportReport:
    """Write `model` (eval mode, CPU, float32) to `path` in format `fmt` and check it against eager PyTorch.

    Raises `ExportError` when the relative error exceeds `tolerance`, after removing the file: a model that does not
    match its source must not be left where a later step would pick it up (a larger `tolerance` keeps it)."""
    exporter = get_exporter(fmt)
    path = checked_output(path, ExportError, (exporter.suffix,), name=f"{path} (format {fmt})")
    if resolution is not None and (isinstance(resolution, bool) or not isinstance(resolution, int) or resolution <= 0):
        raise ExportError(f"resolution: got {resolution!r}, expected a positive integer (or None: the model's own)")
    if not isinstance(tolerance, (int, float)) or not math.isfinite(tolerance) or tolerance <= 0:
        raise ExportError(f"tolerance: got {tolerance!r}, expected a finite positive number")
    spec = getattr(model, "spec", None)
    res = resolution if resolution is not None else (spec.resolution if spec is not None else 224)
    channels = spec.in_channels if spec is not None else 3
    model = model.eval().cpu().float()
    g = torch.Generator().manual_seed(seed)
    example = torch.randn(1, channels, res, res, generator=g)
    batch = torch.randn(check_batch, channels, res, res, generator=g)
    with torch.no_grad():
        try:
            exporter.save(model, example, path)
        except ExportError:
            raise
        except (OSError, RuntimeError) as exc:
            message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            raise ExportError(f"{path}: {fmt} export failed: {type(exc).__name__}: {message}") from None
        eager = model(batch).numpy()
    exported = exporter.runner(path)(batch.numpy())
    max_abs, rel = parity(eager, np.asarray(exported))
    report = ExportReport(str(path), fmt, exporter.runtime, res, check_batch, max_abs, rel, tolerance)
    if not report.ok:
        path.unlink(missing_ok=True)
        raise ExportError(f"{path}: {exporter.runtime} output differs from eager PyTorch: max abs error "
                          f"{max_abs:.3g}, relative {rel:.3g} > tolerance {tolerance:g}; the file was removed"
                          + (f" (--tolerance {_above(rel)} keeps it)" if math.isfinite(rel) else ""))
    return report

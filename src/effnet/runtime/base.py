"""What every engine shares: the `Runtime` interface and the `EngineChoice` that `engine="auto"` attaches to it,
the backend/precision vocabulary and its check, and the small helpers the engines use to import an optional package,
size the example input and keep exporters quiet."""

from __future__ import annotations

import contextlib
import importlib
import io
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from effnet.errors import EXTRA_OF_PACKAGE, EffnetError

BACKENDS = ("torch", "onnxruntime", "openvino")
ENGINES = (*BACKENDS, "auto")  # what `load_runtime(engine=...)` and `--runtime` accept: auto times the backends
PRECISIONS = ("fp32", "bf16", "int8")


class RuntimeUnavailable(EffnetError, ValueError):
    """A runtime that cannot be made: unknown backend/precision, missing package, unreadable file."""


class ExportError(EffnetError):
    """Export failed, its runtime is missing, or the exported model disagrees with eager PyTorch."""


@dataclass(frozen=True)
class EngineChoice:
    """What `engine="auto"` chose and why: the median seconds per call of each engine timed (as measured, also
    when the choice comes from the cache), the engines left out and the reason, and whether it was cached."""

    engine: str
    precision: str
    batch: int
    seconds: dict[str, float]
    skipped: dict[str, str] = field(default_factory=dict)
    cached: bool = False

    def describe(self) -> str:
        """One line: `auto chose openvino for fp32 at batch 16 (cached): openvino 2.1 ms, torch 3.4 ms per call`."""
        timed = ", ".join(f"{e} {1e3 * s:.3g} ms" for e, s in sorted(self.seconds.items(), key=lambda kv: kv[1]))
        return (f"auto chose {self.engine} for {self.precision} at batch {self.batch}"
                f"{' (cached)' if self.cached else ''}: {timed} per call")


class Runtime(ABC):
    """Callable inference engine: `rt(x)` with x an NCHW float tensor (or array) → float32 logits tensor."""

    backend: str
    precision: str
    choice: EngineChoice | None = None  # set when `engine="auto"` chose this engine: the timings, cached or not

    @abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray: ...

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        array = x.detach().cpu().float().contiguous().numpy() if isinstance(x, torch.Tensor) else \
            np.ascontiguousarray(x, dtype=np.float32)
        return torch.from_numpy(np.asarray(self.run(array), dtype=np.float32))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(backend={self.backend!r}, precision={self.precision!r})"


def check_runtime(backend: str, precision: str) -> None:
    """Raise `RuntimeUnavailable` for an unknown backend or precision, or a pair no engine runs ("auto": any
    precision, some backend runs each)."""
    if backend not in ENGINES:
        raise RuntimeUnavailable(f"runtime: got backend {backend!r}, expected one of {', '.join(ENGINES)}")
    if precision not in PRECISIONS:
        raise RuntimeUnavailable(f"runtime: got precision {precision!r}, expected one of {', '.join(PRECISIONS)}")
    if backend == "torch" and precision == "int8":
        raise RuntimeUnavailable("runtime: int8 runs on onnxruntime or openvino; use --runtime onnxruntime or openvino")
    if backend == "onnxruntime" and precision == "bf16":
        raise RuntimeUnavailable("runtime: onnxruntime has no bf16 CPU kernels for convolutions; use openvino or torch")


def _require(module: str):
    """`module` imported, or `RuntimeUnavailable` naming the effnet extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRA_OF_PACKAGE[module]
        raise RuntimeUnavailable(f"the {module!r} package is not installed; install it with "
                                 f"`pip install 'effnet[{extra}]'` (or `pip install {module}`)") from None


def _resolution(model: nn.Module, resolution: int | None) -> int:
    """`resolution`, or the model's own (its spec's); a model without a spec must be told."""
    if resolution:
        return resolution
    spec = getattr(model, "spec", None)
    if spec is None:
        raise RuntimeUnavailable("runtime: a model without a spec needs an explicit resolution")
    return spec.resolution


def _in_channels(model: nn.Module) -> int:
    spec = getattr(model, "spec", None)
    return spec.in_channels if spec is not None else 3


def _as_array(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """A float32 numpy batch from a tensor or an array (calibration images)."""
    array = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    return array.astype(np.float32)


@contextlib.contextmanager
def _quiet(log: io.StringIO | None = None):
    """The exporters print progress to stdout and warn about tracing; keep stdout for the caller's output
    (collected in `log` when given, for an error message's tail)."""
    with contextlib.redirect_stdout(log if log is not None else io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


__all__ = ["BACKENDS", "ENGINES", "PRECISIONS", "EngineChoice", "ExportError", "Runtime", "RuntimeUnavailable",
           "check_runtime"]

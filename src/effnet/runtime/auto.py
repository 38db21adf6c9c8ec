"""`engine="auto"`: time every engine that can run a model at a precision, keep the fastest, remember the choice.

Which engine is fastest depends on the model, the precision, the batch size, the threads and the CPU (OpenVINO
bf16 leads on AMX, ONNX Runtime fp32 often leads on AVX2; see docs/RESULTS.md), so it is measured on the spot
rather than assumed: each candidate runs a few warm-up calls (OpenVINO compiles per input shape on its first
call), then the median seconds per call over up to 5 short rounds, about a second per engine in all.

The choice is cached as JSON in the user's cache folder (`$XDG_CACHE_HOME/effnet`, else `~/.cache/effnet`), keyed
by everything it depends on: the model's identity (a file's resolved path, size and mtime; a module's class, spec
and a hash of its state_dict bytes), precision, batch, resolution, threads, the CPU (name, ISA, flags) and the
versions of the engines installed.  The second call builds only the cached engine and times nothing.  A corrupt
cache file is ignored and rewritten.

This module times and caches; `effnet.runtime.load` builds the engines and hands them in as `build`, so the timing
(`measure`) and the building can be replaced in tests and reused by benchmarks:

    choice, runtime = choose_engine(build, example, key)       # build: engine name → Runtime
    print(choice.describe())
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from torch import nn

from effnet.cpu import cpu_flags, cpu_model
from effnet.files import atomic_write_text, cache_dir
from effnet.runtime.base import (
    BACKENDS,
    EngineChoice,
    ExportError,
    Runtime,
    RuntimeUnavailable,
    _in_channels,
    _resolution,
)

CACHE_FILE = "engine-choices.json"
_FORMAT = 1  # bump when the key or the record changes: older entries are then simply not found
_LOG = logging.getLogger(__name__)

Measure = Callable[[Runtime, np.ndarray], float]


def measure_seconds(runtime: Runtime, example: np.ndarray, *, budget: float = 1.0, rounds: int = 5,
                    warmup: int = 2) -> float:
    """Median seconds per call of `runtime(example)` over up to `rounds` rounds of about budget/rounds seconds
    each, after `warmup` untimed calls; at least 3 rounds even when one call takes longer than the budget."""
    for _ in range(warmup):
        runtime(example)
    start = time.perf_counter()
    runtime(example)
    per_call = max(time.perf_counter() - start, 1e-6)
    calls = max(1, int(budget / rounds / per_call))
    deadline, times = time.perf_counter() + budget, []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            runtime(example)
        times.append((time.perf_counter() - start) / calls)
        if len(times) >= 3 and time.perf_counter() > deadline:
            break
    return statistics.median(times)


def choose_engine(
    build: Callable[[str], Runtime],
    example: np.ndarray,
    key: Mapping[str, Any] | None,
    *,
    precision: str = "fp32",
    engines: Sequence[str] = BACKENDS,
    measure: Measure | None = None,
    cache_file: str | Path | None = None,
) -> tuple[EngineChoice, Runtime]:
    """The fastest of `engines` on `example` (a batch, N×C×H×W float32) and its runtime, built by `build(engine)`.

    An engine whose `build` raises `RuntimeUnavailable` (not installed, no such precision) or `ExportError` is left
    out, with the reason in `EngineChoice.skipped`.  `measure(runtime, example)` → seconds per call (default
    `measure_seconds`).  With a `key` (see `choice_key`), the choice is read from and written to `cache_file`
    (default: `cache_path()`); a cached engine is built and returned without timing anything."""
    path = Path(cache_file) if cache_file is not None else cache_path()
    digest = _digest(key) if key is not None else None
    cached = _read_cache(path).get(digest) if digest is not None else None
    if cached is not None and cached.get("engine") in engines:
        try:
            runtime = build(cached["engine"])
        except (RuntimeUnavailable, ExportError):
            pass  # gone since (uninstalled, say): time the others again
        else:
            choice = EngineChoice(cached["engine"], precision, len(example), cached["seconds"], cached["skipped"],
                                  cached=True)
            _LOG.info("%s", choice.describe())
            return choice, runtime
    choice, runtime = _time_engines(build, example, precision, engines, measure or measure_seconds)
    if digest is not None:
        _write_cache(path, digest, key, choice)
    _LOG.info("%s", choice.describe())
    return choice, runtime


def _time_engines(build, example, precision, engines, measure) -> tuple[EngineChoice, Runtime]:
    seconds: dict[str, float] = {}
    skipped: dict[str, str] = {}
    best: tuple[str, Runtime] | None = None
    for engine in engines:
        try:
            runtime = build(engine)
            seconds[engine] = float(measure(runtime, example))
        except (RuntimeUnavailable, ExportError) as exc:
            skipped[engine] = str(exc)
            continue
        except Exception as exc:  # an engine that builds but cannot run this model is not a candidate
            skipped[engine] = f"failed to run: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            continue
        if best is None or seconds[engine] < seconds[best[0]]:
            best = (engine, runtime)  # a loser is dropped at once: at most two engines in memory
    if best is None:
        reasons = "; ".join(f"{e}: {why}" for e, why in skipped.items())
        raise RuntimeUnavailable(f"runtime: auto found no engine for {precision} ({reasons})")
    return EngineChoice(best[0], precision, len(example), seconds, skipped), best[1]


def fastest_runtime(
    model: nn.Module | str | Path,
    precision: str,
    build: Callable[[str], Runtime],
    *,
    batch: int = 1,
    resolution: int | None = None,
    threads: int | None = None,
    compile: bool = False,
    measure: Measure | None = None,
) -> Runtime:
    """`load_runtime(..., engine="auto")`: the fastest runtime of `model` at `precision` on a batch of `batch`,
    with the choice attached as `runtime.choice`."""
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise RuntimeUnavailable(f"runtime: batch got {batch!r}, expected a positive number of images")
    channels, res = _input_size(model, resolution)
    example = np.random.default_rng(0).standard_normal((batch, channels, res, res), dtype=np.float32)
    key = choice_key(model, precision, batch=batch, resolution=res, threads=threads, compile=compile)
    choice, runtime = choose_engine(build, example, key, precision=precision, measure=measure)
    runtime.choice = choice
    return runtime


def choice_key(model: nn.Module | str | Path, precision: str, *, batch: int, resolution: int,
               threads: int | None = None, compile: bool = False) -> dict[str, Any]:
    """Everything the fastest engine depends on, as JSON-able data: the cache entry's key."""
    return {"format": _FORMAT, "model": model_identity(model), "precision": precision, "batch": batch,
            "resolution": resolution, "threads": threads or torch.get_num_threads(), "compile": compile,
            "cpu": _cpu(), "engines": _engine_versions()}


def model_identity(model: nn.Module | str | Path) -> dict[str, Any]:
    """A file: its resolved path, size and mtime (and its OpenVINO .bin's).  A module: its class, its spec and a
    SHA-256 of its state_dict (names, shapes, dtypes, bytes) — about 20 ms for B0."""
    if isinstance(model, (str, Path)):
        files = [Path(model).resolve()]
        files += [p for p in (files[0].with_suffix(".bin"),) if files[0].suffix == ".xml" and p.is_file()]
        return {"files": [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files]}
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    spec = getattr(model, "spec", None)
    return {"class": type(model).__name__, "spec": spec.to_dict() if spec is not None else None,
            "state_dict_sha256": h.hexdigest()}


def cache_path() -> Path:
    """The cache file: `$XDG_CACHE_HOME/effnet/engine-choices.json`, else `~/.cache/effnet/engine-choices.json`."""
    return cache_dir() / CACHE_FILE


@contextlib.contextmanager
def announce_choices(prefix: str, stream: TextIO | None = None) -> Iterator[None]:
    """While inside, each choice `engine="auto"` makes is printed as one line `PREFIX: auto chose ...` on
    `stream` (default stderr) — how the command line says what it picked, wherever the runtime is made."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(logging.Formatter(f"{prefix}: %(message)s"))
    level = _LOG.level
    _LOG.addHandler(handler)
    _LOG.setLevel(logging.INFO)
    try:
        yield
    finally:
        _LOG.removeHandler(handler)
        _LOG.setLevel(level)


def _input_size(model: nn.Module | str | Path, resolution: int | None) -> tuple[int, int]:
    """(channels, resolution) of the batch to time: a module's spec, or the input an exported file declares."""
    if not isinstance(model, (str, Path)):
        return _in_channels(model), _resolution(model, resolution)
    shape = _file_input_shape(Path(model))
    channels = shape[1] if shape and len(shape) == 4 and shape[1] > 0 else 3
    res = resolution or (shape[2] if shape and len(shape) == 4 and shape[2] > 0 else None)
    if res is None:
        raise RuntimeUnavailable(f"runtime: {model}: no fixed input size in the file; auto needs resolution=")
    return channels, res


def _file_input_shape(path: Path) -> list[int] | None:
    """The first input's shape as the file declares it (a dynamic dimension as -1), or None when unreadable."""
    try:
        if path.suffix == ".xml":  # OpenVINO IR: <layer type="Parameter"><data shape="?,3,224,224" .../>
            import xml.etree.ElementTree as ET

            data = ET.parse(path).getroot().find(".//layer[@type='Parameter']/data")
            dims = (data.get("shape") or "").split(",") if data is not None else []
            return [int(d) if d.strip().isdigit() else -1 for d in dims] or None
        if path.suffix == ".onnx":
            import onnx

            graph = onnx.load(str(path), load_external_data=False).graph
            return [d.dim_value or -1 for d in graph.input[0].type.tensor_type.shape.dim]
    except Exception:  # an unreadable header only means "ask for the resolution"
        return None
    return None


def _cpu() -> dict[str, str]:
    flags = hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest()[:16]
    return {"name": cpu_model(), "machine": platform.machine(), "isa": torch.backends.cpu.get_cpu_capability(),
            "flags": flags}


def _engine_versions() -> dict[str, str]:
    """The installed engines' versions: a new engine, or a new version of one, is timed afresh."""
    versions = {}
    for package in ("torch", "onnxruntime", "openvino"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def _digest(key: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def _read_cache(path: Path) -> dict[str, dict]:
    """The cached choices by key digest; {} for a missing, unreadable or corrupt file (rewritten on the next
    choice), and an entry not of the expected form left out."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        choices = data["choices"] if data.get("format") == _FORMAT else {}
        return {k: v for k, v in choices.items() if _well_formed(v)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _well_formed(entry: Any) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("engine"), str)
            and isinstance(entry.get("seconds"), dict) and isinstance(entry.get("skipped"), dict)
            and all(isinstance(v, (int, float)) for v in entry["seconds"].values()))


def _write_cache(path: Path, digest: str, key: Mapping[str, Any], choice: EngineChoice) -> None:
    """Add the choice to the cache file, written whole to a temporary file and renamed over it (a reader never
    sees half a file).  A cache that cannot be written is a warning: the next call times again."""
    choices = _read_cache(path)
    choices[digest] = {"engine": choice.engine, "seconds": choice.seconds, "skipped": choice.skipped,
                       "measured": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "key": dict(key)}
    text = json.dumps({"format": _FORMAT, "choices": choices}, indent=1, sort_keys=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(text, path)
    except OSError as exc:
        warnings.warn(f"could not save the engine choice in {path} ({exc.strerror or exc}); the next call times "
                      "the engines again", stacklevel=2)


__all__ = ["CACHE_FILE", "EngineChoice", "announce_choices", "cache_path", "choice_key", "choose_engine",
           "fastest_runtime", "measure_seconds", "model_identity"]

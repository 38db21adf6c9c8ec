"""Side-by-side speed and memory: effnet's paths against the peers a user would pick instead, in one run.

A shared 2-core machine makes absolute times meaningless, so every number here is taken next to its peers:
each candidate is built and warmed up, then `repeats` rounds run every candidate in turn (rotating the order each
round), and a path's ratio to a peer is the median over rounds of the *paired* per-round ratio.  Throughput is
reported as the median and min–max over rounds.  Peak memory is the rise in resident memory (VmHWM) during one
call, after `malloc_trim` has returned freed memory to the OS ("peak MB": what the OS sees, including freed memory
the C allocator keeps); train mode also reports the peak of live tensor bytes ("tensor MB": what the step needs,
from the profiler's allocation events) and the bytes autograd saves for backward ("act MB").

A candidate that fails to build, compile or run (a missing compiler, a broken inductor cache, an engine error) is
reported as a `Failure` row with the first line of its reason, and the others are still measured.

Ceiling: the fp32 FMA peak of the cores in use (2 FMA ports × 16 fp32 lanes per cycle with AVX-512, 8 with AVX2,
at the clock /proc/cpuinfo reports); bf16/int8 paths on AMX can exceed it, and their fraction says so.
"""

from __future__ import annotations

import ctypes
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from effnet.errors import EffnetError
from effnet.optimize import (
    compile_for_inference,
    cpu_flags,
    fuse_bn_silu_for_training,
    optimize_for_inference,
    to_bf16,
)
from effnet.spec import NetSpec, with_options

INFER_PATHS = ("eager", "channels_last", "folded", "compile", "bf16", "compile-bf16", "onnxruntime-int8",
               "openvino-bf16", "openvino-int8")
TRAIN_PATHS = ("eager", "channels_last", "channels_last-fused", "channels_last-checkpoint", "bf16", "bf16-fused",
               "checkpoint", "bf16-checkpoint")
PEERS = ("timm", "torchvision", "onnxruntime", "openvino")
TRAIN_PEERS = ("timm", "torchvision", "timm-bf16", "timm-channels_last")
LOSSY = {"bf16", "bf16-fused", "compile-bf16", "onnxruntime-int8", "openvino-bf16", "openvino-int8"}
_TORCHVISION = {f"efficientnet_b{i}" for i in range(8)}


class BenchError(EffnetError, ValueError):
    """A benchmark that cannot run as asked (unknown path or peer, bad batch list)."""


@dataclass
class Candidate:
    """One thing to time: `step(x)` runs one batch.  `peer` marks what we compare against."""

    name: str
    step: Callable[[torch.Tensor], object]
    peer: bool = False
    note: str = ""


@dataclass
class Result:
    name: str
    peer: bool
    batch: int
    images_per_s: float
    images_per_s_min: float
    images_per_s_max: float
    latency_ms: float
    latency_ms_min: float
    latency_ms_max: float
    peak_mem_mb: float
    gmacs_per_s: float
    ceiling_fraction: float
    saved_activations_mb: float | None = None
    peak_tensor_mb: float | None = None
    rounds: list[float] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)
    ratio_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    note: str = ""
    status: str = "measured"


@dataclass
class Failure:
    """A candidate that could not be measured: at which stage (build, warm-up, timing, memory), for which batch
    (None: at build, so for all), and the first line of the reason."""

    name: str
    peer: bool
    stage: str
    reason: str
    batch: int | None = None
    status: str = "failed"


@dataclass
class Machine:
    cpus: int
    threads: int
    isa: str
    ghz: float
    fp32_gmacs_ceiling: float
    amx: bool
    note: str
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)
    omp_wait_policy: str = ""


def machine(threads: int | None = None) -> Machine:
    """The fp32 multiply-accumulate ceiling of the cores torch uses, from the ISA and clock this CPU reports."""
    import os

    flags, threads = cpu_flags(), threads or torch.get_num_threads()
    isa, lanes = ("avx512", 16) if "avx512f" in flags else ("avx2", 8) if "avx2" in flags else ("sse", 4)
    ghz = 0.0
    try:
        with open("/proc/cpuinfo") as f:
            mhz = [float(line.split(":")[1]) for line in f if line.startswith("cpu MHz")]
        ghz = max(mhz) / 1000 if mhz else 0.0
    except OSError:
        pass
    ghz = ghz or 2.0
    ceiling = threads * 2 * lanes * ghz  # 2 FMA ports per core
    amx = "amx_bf16" in flags
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return Machine(os.cpu_count() or 1, threads, isa + ("+amx" if amx else ""), ghz, ceiling, amx,
                   f"{threads} threads x 2 FMA x {lanes} fp32 lanes x {ghz:.2f} GHz (clock as /proc/cpuinfo reports)",
                   tuple(round(v, 2) for v in load), os.environ.get("OMP_WAIT_POLICY", ""))


# --- memory -------------------------------------------------------------------------------------------------------


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def peak_memory_mb(fn: Callable[[], object]) -> float:
    """Rise of the resident-set high-water mark during fn(), in MB (Linux; 0.0 elsewhere)."""
    import gc

    gc.collect()
    _trim()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        before = _status_kb("VmRSS")
    except OSError:
        fn()
        return 0.0
    fn()
    return max(0, _status_kb("VmHWM") - before) / 1024


def peak_tensor_mb(fn: Callable[[], object]) -> float | None:
    """Peak of live CPU tensor bytes allocated during fn() above what was live before, in MB, from the profiler's
    allocation events: what the step needs, without the C allocator's retained free memory that VmHWM includes
    (glibc keeps freed blocks under its mmap threshold in the heap).  None if the profiler gives no events."""
    from torch.autograd import DeviceType
    from torch.profiler import profile

    with profile(profile_memory=True) as prof:
        fn()
    try:
        events = prof.profiler.kineto_results.events()
    except AttributeError:  # pragma: no cover - a torch without kineto results
        return None
    changes = sorted((e.start_ns(), e.nbytes()) for e in events
                     if e.name() == "[memory]" and e.device_type() == DeviceType.CPU)
    if not changes:
        return None
    live = peak = 0
    for _, nbytes in changes:
        live += nbytes
        peak = max(peak, live)
    return peak / 2**20


_ISOLATED_TRAIN_MEMORY = r"""
import json, sys
import torch
from effnet.bench import peak_memory_mb, peak_tensor_mb, train_candidate
from effnet.spec import NetSpec
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
spec = NetSpec.from_dict(args["spec"])
candidate = train_candidate(args["model"], args["path"], spec=spec)
x = torch.randn(args["batch"], spec.in_channels, spec.resolution, spec.resolution)
for _ in range(2):
    candidate.step(x)
print(json.dumps([peak_memory_mb(lambda: candidate.step(x)), peak_tensor_mb(lambda: candidate.step(x))]))
"""


def isolated_train_memory(model_name: str, path: str, spec: NetSpec, batch: int) -> tuple[float, float | None]:
    """(peak MB, tensor MB) of one training step of `path`, measured in a fresh Python process after two warm-up
    steps.  In one shared process the C allocator's heap keeps the other candidates' freed memory and fragments,
    so the resident peak depends on what ran before; a process of its own is what a user's training run sees."""
    args = json.dumps({"model": model_name, "path": path, "spec": spec.to_dict(), "batch": batch,
                       "threads": torch.get_num_threads()})
    env = dict(os.environ, KINETO_LOG_LEVEL="5")
    proc = subprocess.run([sys.executable, "-c", _ISOLATED_TRAIN_MEMORY, args], capture_output=True, text=True,
                          env=env, check=False)
    lines = proc.stdout.strip().splitlines()
    try:
        if proc.returncode != 0 or not lines:
            raise ValueError((proc.stderr.strip().splitlines() or ["no output"])[-1])
        rss, tensors = json.loads(lines[-1])
    except ValueError as exc:  # includes json.JSONDecodeError and a wrong number of values
        raise BenchError(f"bench: measuring {path}'s memory in its own process failed: {exc}") from None
    return rss, tensors


def saved_activation_mb(step: Callable[[], object]) -> float:
    """Bytes autograd keeps for backward during one training step (distinct storages), in MB."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        if t.device.type == "cpu" and not isinstance(t, nn.Parameter):
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values()) / 2**20


# --- candidates -----------------------------------------------------------------------------------------------------


def _effnet_model(name: str | NetSpec, grad_checkpointing: bool = False) -> nn.Module:
    from effnet.registry import create_model

    return create_model(name, grad_checkpointing=grad_checkpointing)


def peer_model(peer: str, name: str) -> nn.Module | None:
    """The same architecture from timm or torchvision (randomly initialised), or None when the peer lacks it."""
    import importlib.util

    if peer.startswith("timm"):
        if importlib.util.find_spec("timm") is None:
            return None
        import timm

        return timm.create_model(name) if name in timm.list_models(name) else None
    if peer == "torchvision":
        if name not in _TORCHVISION:
            return None
        import torchvision

        return getattr(torchvision.models, name)()
    return None


def _infer_step(module: nn.Module) -> Callable[[torch.Tensor], object]:
    def step(x: torch.Tensor):
        with torch.inference_mode():
            return module(x)

    return step


def infer_candidate(
    model_name: str, path: str, calibration: torch.Tensor | None = None, spec: NetSpec | None = None
) -> Candidate:
    """An effnet inference path (see INFER_PATHS) or a peer (see PEERS) for `model_name` (built from `spec`
    when given, e.g. at another resolution)."""
    from effnet.runtime import load_runtime

    model = _effnet_model(spec or model_name).eval()
    if path == "eager":
        return Candidate(path, _infer_step(model))
    if path == "channels_last":
        return Candidate(path, _infer_step(optimize_for_inference(model, fold_bn=False)))
    if path == "folded":
        return Candidate(path, _infer_step(optimize_for_inference(model)), note="BN folded + channels_last")
    if path == "compile":
        return Candidate(path, _infer_step(compile_for_inference(model)), note="inductor, freezing, channels_last")
    if path == "bf16":
        return Candidate(path, _infer_step(to_bf16(model)), note="bf16 weights, folded, channels_last")
    if path == "compile-bf16":
        return Candidate(path, _infer_step(compile_for_inference(model, dtype=torch.bfloat16)),
                         note="bf16, inductor, freezing")
    if path in ("onnxruntime-int8", "openvino-int8", "openvino-bf16"):
        backend, precision = path.split("-")
        rt = load_runtime(model, backend, precision, calibration=calibration)
        return Candidate(path, rt, note="int8 PTQ on real photos" if precision == "int8" else "")
    if path in ("onnxruntime", "openvino"):
        return Candidate(path, load_runtime(model, path, "fp32"), peer=True, note=f"{path} fp32 (exported model)")
    if path in ("timm", "torchvision"):
        peer = peer_model(path, model_name)
        if peer is None:
            raise _Missing(f"{path} has no {model_name}")
        return Candidate(path, _infer_step(peer.eval()), peer=True, note=f"{path} eager fp32")
    raise BenchError(f"bench: unknown path {path!r}; expected one of {', '.join(INFER_PATHS + PEERS)}")


class _Missing(Exception):
    """A peer that is not installed or lacks the model: skipped with a note."""


def _train_step(model: nn.Module, *, bf16: bool, channels_last: bool) -> Callable[[torch.Tensor], object]:
    model.train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step(x: torch.Tensor):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        target = torch.zeros(x.shape[0], dtype=torch.long)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def train_candidate(model_name: str, path: str, spec: NetSpec | None = None) -> Candidate:
    """One training step (forward, backward, SGD update) of an effnet path (TRAIN_PATHS) or a peer."""
    if path in TRAIN_PATHS:
        model = _effnet_model(spec or model_name, grad_checkpointing="checkpoint" in path)
        if path.endswith("-fused"):
            fuse_bn_silu_for_training(model)
        bf16 = path.startswith("bf16")
        notes = {"eager": "fp32", "channels_last": "fp32 channels_last", "bf16": "bf16 autocast, channels_last",
                 "channels_last-fused": "fp32 channels_last, BN+SiLU saving only BN input",
                 "channels_last-checkpoint": "fp32 channels_last, per-stage checkpointing",
                 "bf16-fused": "bf16, channels_last, BN+SiLU saving only BN input",
                 "checkpoint": "fp32, per-stage checkpointing", "bf16-checkpoint": "bf16, channels_last, checkpointing"}
        return Candidate(path, _train_step(model, bf16=bf16, channels_last=bf16 or path.startswith("channels_last")),
                         note=notes[path])
    if path in TRAIN_PEERS:
        peer = peer_model(path, model_name)
        if peer is None:
            raise _Missing(f"{path.split('-')[0]} has no {model_name}")
        bf16, channels_last = path.endswith("bf16"), path.endswith(("bf16", "channels_last"))
        note = "bf16 autocast, channels_last" if bf16 else "fp32 channels_last" if channels_last else "fp32"
        return Candidate(path, _train_step(peer, bf16=bf16, channels_last=channels_last), peer=True, note=note)
    raise BenchError(f"bench: unknown train path {path!r}; expected one of {', '.join(TRAIN_PATHS + TRAIN_PEERS)}")


# --- the run --------------------------------------------------------------------------------------------------------


@dataclass
class Report:
    model: str
    mode: str
    resolution: int
    macs_per_image: int
    machine: Machine
    results: list[Result]
    skipped: list[str]
    repeats: int
    iters: int
    memory_isolated: bool = False  # peak MB / tensor MB measured in a fresh process per candidate
    failed: list[Failure] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _attempt(c: Candidate, stage: str, batch: int, failed: list[Failure], fn: Callable[[], object]) -> bool:
    """Run `fn`; a candidate's own failure becomes its Failure row instead of ending the benchmark."""
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - any failure of one candidate is reported, and the others go on
        failed.append(Failure(c.name, c.peer, stage, _reason(exc), batch))
        return False
    return True


def _time_rounds(candidates: list[Candidate], x: torch.Tensor, repeats: int, iters: int,
                 failed: list[Failure] | None = None) -> dict[str, list[float]]:
    """Seconds per batch for each candidate in each round; the order rotates every round.  With `failed`, a
    candidate that raises is dropped (its Failure recorded) and the others go on."""
    times: dict[str, list[float]] = {c.name: [] for c in candidates}
    live = list(candidates)
    for r in range(repeats):
        order = live[r % len(live):] + live[:r % len(live)] if live else []
        for c in order:
            start = time.perf_counter()

            def calls(c: Candidate = c) -> None:
                for _ in range(iters):
                    c.step(x)

            if failed is None:
                calls()
            elif not _attempt(c, "timing", len(x), failed, calls):
                live.remove(c)
                del times[c.name]
                continue
            times[c.name].append((time.perf_counter() - start) / iters)
    return times


def run_bench(
    model_name: str,
    *,
    batches: Sequence[int] = (1, 32),
    mode: str = "infer",
    paths: Sequence[str] | None = None,
    peers: Sequence[str] = ("timm", "torchvision", "onnxruntime", "openvino"),
    resolution: int | None = None,
    repeats: int = 5,
    iters: int = 0,
    warmup: int = 2,
    calibration: torch.Tensor | None = None,
    isolate_memory: bool = False,
    log: Callable[[str], None] = lambda _s: None,
) -> Report:
    """Build every path and peer, warm them up, time them interleaved, and compute paired ratios.

    iters=0 picks the calls per round from one timed call each: ~0.5 s of the fastest, ≤ ~1.5 s of the slowest.
    isolate_memory (train mode) measures each candidate's memory in a process of its own
    (`isolated_train_memory`)."""
    from effnet.profile import count_macs
    from effnet.registry import get_spec

    if mode not in ("infer", "train"):
        raise BenchError(f"bench: --mode got {mode!r}, expected infer or train")
    if repeats < 1 or iters < 0 or warmup < 0:
        raise BenchError(f"bench: --repeats got {repeats}, --iters {iters}, --warmup {warmup}; expected repeats >= 1 "
                         "and iters, warmup >= 0")
    if not batches or any(b < 1 for b in batches):
        raise BenchError(f"bench: --batch got {list(batches)}, expected positive integers such as 1,32")
    if isolate_memory and mode != "train":
        raise BenchError("bench: --isolate-memory measures training steps; use it with --mode train")
    spec = get_spec(model_name)
    res = resolution or spec.resolution
    spec = with_options(spec, resolution=res)
    model_name = spec.name
    paths = list(paths or (("eager", "folded", "compile") if mode == "infer" else ("eager", "bf16", "checkpoint")))
    macs = count_macs(spec, res)
    if mode == "train":
        macs *= 3  # forward + input and weight gradients
    mach = machine()
    make = (lambda p: infer_candidate(model_name, p, calibration, spec)) if mode == "infer" else \
        (lambda p: train_candidate(model_name, p, spec))
    results: list[Result] = []
    skipped: list[str] = []
    failed: list[Failure] = []
    candidates: list[Candidate] = []
    for p in list(paths) + list(peers):
        try:
            log(f"building {p}")
            candidates.append(make(p))
        except _Missing as exc:
            skipped.append(f"{p}: {exc}")
        except ImportError as exc:
            skipped.append(f"{p}: not installed ({exc.name})")
        except EffnetError as exc:
            if p not in PEERS + TRAIN_PEERS:
                raise
            skipped.append(f"{p}: {exc}")
        except Exception as exc:  # noqa: BLE001 - a candidate that cannot be built is its row; the rest go on
            failed.append(Failure(p, p in PEERS + TRAIN_PEERS, "build", _reason(exc)))
            log(f"{p} failed to build: {_reason(exc)}")
    for batch in batches:
        gone = {f.name for f in failed}  # a candidate that failed once is not tried again
        x = torch.randn(batch, spec.in_channels, res, res)
        results += _bench_batch([c for c in candidates if c.name not in gone], x, warmup=warmup, repeats=repeats,
                                iters=iters, failed=failed, log=log,
                                measure=partial(_measure, mode=mode, isolate=isolate_memory, model_name=model_name,
                                                spec=spec, log=log),
                                result=partial(_result, macs=macs, mach=mach))
    for f in failed:
        log(f"{f.name} failed ({f.stage}{'' if f.batch is None else f', batch {f.batch}'}): {f.reason}")
    _add_ratios(results)
    return Report(model_name, mode, res, macs, mach, results, sorted(set(skipped)), repeats, iters, isolate_memory,
                  failed)


def _bench_batch(candidates: list[Candidate], x: torch.Tensor, *, warmup: int, repeats: int, iters: int,
                 failed: list[Failure], log: Callable[[str], None], measure: Callable[..., dict],
                 result: Callable[..., Result]) -> list[Result]:
    """Warm up, time and measure `candidates` on batch `x`; each one that raises is left out with its Failure."""
    batch = len(x)
    log(f"warming up (batch {batch})")
    per_call: dict[str, float] = {}

    def warm(c: Candidate) -> None:
        for _ in range(warmup):
            c.step(x)
        per_call[c.name] = _timed(c, x)

    live = [c for c in candidates if _attempt(c, "warm-up", batch, failed, partial(warm, c))]
    if not live:
        return []
    # about 0.5 s of the fastest candidate per round, but no more than ~1.5 s of the slowest
    fastest, slowest = min(per_call.values()), max(per_call.values())
    n = iters or max(1, min(50, int(0.5 / max(fastest, 1e-4)), int(1.5 / slowest)))
    log(f"timing {len(live)} candidates, {repeats} rounds x {n} calls (batch {batch})")
    times = _time_rounds(live, x, repeats, n, failed)
    results = []
    for c in (c for c in live if c.name in times):
        memory: dict[str, float | None] = {}
        if _attempt(c, "memory", batch, failed, lambda c=c, m=memory: m.update(measure(c, x))):
            results.append(result(c, batch, times, **memory))
    return results


def _measure(c: Candidate, x: torch.Tensor, *, mode: str, isolate: bool, model_name: str, spec: NetSpec,
             log: Callable[[str], None]) -> dict[str, float | None]:
    """Peak memory of one call (and, training, the live-tensor peak and the activations saved for backward)."""
    saved = saved_activation_mb(lambda: c.step(x)) if mode == "train" else None
    if isolate:
        log(f"memory of {c.name} in its own process")
        mem, tensors = isolated_train_memory(model_name, c.name, spec, len(x))
    else:
        mem = peak_memory_mb(lambda: c.step(x))
        tensors = peak_tensor_mb(lambda: c.step(x)) if mode == "train" else None
    return {"mem": mem, "saved": saved, "tensors": tensors}


def _timed(c: Candidate, x: torch.Tensor) -> float:
    start = time.perf_counter()
    c.step(x)
    return time.perf_counter() - start


def _result(c: Candidate, batch: int, times: dict[str, list[float]], *, macs: int, mach: Machine, mem: float,
            saved: float | None, tensors: float | None) -> Result:
    t = times[c.name]
    ips = [batch / s for s in t]
    med = statistics.median(ips)
    gmacs = med * macs / 1e9
    return Result(c.name, c.peer, batch, med, min(ips), max(ips), 1000 * statistics.median(t), 1000 * min(t),
                  1000 * max(t), mem, gmacs, gmacs / mach.fp32_gmacs_ceiling, saved, tensors, ips, note=c.note)


def _add_ratios(results: list[Result]) -> None:
    """Paired ratios: per round, this path's images/s over the peer's, then the median over rounds."""
    by_batch: dict[int, list[Result]] = {}
    for r in results:
        by_batch.setdefault(r.batch, []).append(r)
    for group in by_batch.values():
        for r in group:
            for p in (p for p in group if p.peer and p is not r):
                paired = [a / b for a, b in zip(r.rounds, p.rounds)]
                r.ratios[p.name] = statistics.median(paired)
                r.ratio_ranges[p.name] = (min(paired), max(paired))


__all__ = [
    "INFER_PATHS", "PEERS", "TRAIN_PATHS", "TRAIN_PEERS", "BenchError", "Candidate", "Failure", "Machine", "Report",
    "Result",
    "infer_candidate", "isolated_train_memory", "machine", "peak_memory_mb", "peak_tensor_mb", "peer_model",
    "run_bench", "saved_activation_mb", "train_candidate",
]

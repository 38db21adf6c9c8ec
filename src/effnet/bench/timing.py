"""The timed run: every candidate built and warmed up, then timed in interleaved rounds, with paired ratios.

A shared 2-core machine makes absolute times meaningless, so every number here is taken next to its peers:
each candidate is built and warmed up, then `repeats` rounds run every candidate in turn (rotating the order each
round), and a path's ratio to a peer is the median over rounds of the *paired* per-round ratio.  Throughput is
reported as the median and min–max over rounds; memory as `effnet.bench.memory` measures it.

A candidate that fails to build, compile or run (a missing compiler, a broken inductor cache, an engine error) is
reported as a `Failure` row with the first line of its reason, and the others are still measured.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial

import torch

from effnet.bench.candidates import (
    DEFAULT_PEERS,
    PEERS,
    TRAIN_PEERS,
    BenchError,
    Candidate,
    PeerMissing,
    infer_candidate,
    train_candidate,
)
from effnet.bench.ceiling import machine_ceiling
from effnet.bench.machine import Machine, machine
from effnet.bench.memory import isolated_train_memory, peak_memory_mb, peak_tensor_mb, saved_activation_mb
from effnet.errors import EffnetError
from effnet.spec import NetSpec, with_options


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
    peers: Sequence[str] = DEFAULT_PEERS,
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
        raise BenchError(f"--batch-size: got {list(batches)}, expected positive integers such as 1,32")
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
    mach = machine(ceiling=machine_ceiling(log=log))  # the measured fp32 ceiling, cached per machine
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
        except PeerMissing as exc:
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


__all__ = ["Failure", "Report", "Result", "run_bench"]

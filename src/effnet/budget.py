"""Budget solving, torch side: the φ of Eq. 3, or the nominal multiplier s of any scaling strategy, that fits a
MACs or latency budget.

`scaling.solve_phi` / `scaling.solve_scale` do the search on specs with any cost function and never import torch;
here are the two costs they are used with: MACs counted by `profile.count_macs` (exact, on the "meta" device) and
latency measured on this machine (`measure_latency`: min or median wall time of a forward pass in eval mode, after
warm-up).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypedDict

import torch

from effnet.network import ConvNet
from effnet.profile import count_macs
from effnet.registry import get_spec
from effnet.scaling import (
    DEFAULT_LOG2_SCALE_RANGE,
    DEFAULT_PHI_RANGE,
    PhiSolution,
    ScaleSolution,
    solve_phi,
    solve_scale,
)
from effnet.spec import NetSpec, SpecError

if TYPE_CHECKING:
    from typing_extensions import Unpack


class Scaling(TypedDict, total=False):
    """How a solver scales the base.  `strategy` None (the default) solves for φ of Eq. 3 (a `PhiSolution`);
    a name of `scaling.STRATEGIES` solves for its nominal multiplier s (a `ScaleSolution`).  `alpha`, `beta`,
    `gamma`: compound scaling's bases (default 1.2, 1.1, 1.15); `a`: Dollár's parameter of strategy "dollar"."""

    strategy: str | None
    alpha: float
    beta: float
    gamma: float
    a: float | None


def solve_for_macs(
    base: str | NetSpec,
    target_macs: float,
    *,
    tolerance: float = 0.03,
    phi_range: tuple[float, float] = DEFAULT_PHI_RANGE,
    log2_range: tuple[float, float] = DEFAULT_LOG2_SCALE_RANGE,
    **scaling: Unpack[Scaling],
) -> PhiSolution | ScaleSolution:
    """φ (or, with a `strategy`, s; see `Scaling`) whose rounded model has `target_macs` multiply-accumulates per
    image (±tolerance)."""
    return _solve(base, target_macs, count_macs, tolerance, phi_range, log2_range, scaling)


def solve_scale_for_macs(base: str | NetSpec, target_macs: float, *, strategy: str = "compound",
                         **options: Any) -> ScaleSolution:
    """`solve_for_macs` with a strategy (compound by default): s whose model, scaled and rounded, has
    `target_macs` multiply-accumulates per image."""
    return solve_for_macs(base, target_macs, strategy=strategy, **options)


def measure_latency(
    spec: NetSpec,
    *,
    batch: int = 1,
    repeats: int = 10,
    warmup: int = 2,
    device: str = "cpu",
    max_seconds: float = 10.0,
    statistic: str = "min",
    threads: int | None = None,
) -> float:
    """Seconds for one forward pass of `spec`'s model on a random `batch` at the spec's resolution.

    `statistic` "min" (default) is the least disturbed of the timed runs: on a machine whose cores are shared
    with other work it is far more repeatable than the median, and repeatability is what a bisection needs;
    "median" gives a typical latency under the current load.  Randomly initialised weights cost the same as
    trained ones.  Timing stops early after `max_seconds` (at least three timed runs), so a huge candidate does not
    stall a search.  `threads` sets torch's intra-op threads for the measurement (on a loaded machine one thread is
    often faster and far steadier than several competing for busy cores).
    """
    if statistic not in ("min", "median"):
        raise SpecError(f"statistic: got {statistic!r}, expected 'min' or 'median'")
    if batch < 1 or repeats < 1 or warmup < 0:
        raise SpecError(f"latency measurement: got batch={batch}, repeats={repeats}, warmup={warmup}; expected "
                        "batch >= 1, repeats >= 1, warmup >= 0")
    previous = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise SpecError(f"threads: got {threads}, expected at least 1")
        torch.set_num_threads(threads)
    try:
        return _timed(spec, batch, repeats, warmup, device, max_seconds, statistic)
    finally:
        torch.set_num_threads(previous)


def _timed(spec: NetSpec, batch: int, repeats: int, warmup: int, device: str, max_seconds: float,
           statistic: str) -> float:
    model = ConvNet(spec).to(device).eval()
    x = torch.randn(batch, spec.in_channels, spec.resolution, spec.resolution, device=device)
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        start = time.perf_counter()
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            if len(times) >= 3 and time.perf_counter() - start > max_seconds:
                break
    return min(times) if statistic == "min" else statistics.median(times)


def solve_for_latency(
    base: str | NetSpec,
    target_seconds: float,
    *,
    batch: int = 1,
    threads: int | None = None,
    measure: Callable[[NetSpec], float] | None = None,
    tolerance: float = 0.05,
    phi_range: tuple[float, float] = (-3.0, 4.0),
    log2_range: tuple[float, float] = (-6.0, 6.0),
    **scaling: Unpack[Scaling],
) -> PhiSolution | ScaleSolution:
    """φ (or, with a `strategy`, s; see `Scaling`) whose rounded model runs one forward pass of `batch` images in
    `target_seconds` on this machine.

    Measurements are noisy (other processes share the cores), so the default tolerance is 5%, and every distinct
    rounded model is measured once; the default s range reaches 64x the base's cost.  `measure` replaces
    `measure_latency` (e.g. in tests).
    """
    def cost(spec: NetSpec) -> float:
        return measure(spec) if measure is not None else measure_latency(spec, batch=batch, threads=threads)

    return _solve(base, target_seconds, cost, tolerance, phi_range, log2_range, scaling)


def solve_scale_for_latency(base: str | NetSpec, target_seconds: float, *, strategy: str = "compound",
                            **options: Any) -> ScaleSolution:
    """`solve_for_latency` with a strategy (compound by default): s whose model, scaled and rounded, runs in
    `target_seconds` on this machine."""
    return solve_for_latency(base, target_seconds, strategy=strategy, **options)


def _solve(base: str | NetSpec, target: float, cost: Callable[[NetSpec], float], tolerance: float,
           phi_range: tuple[float, float], log2_range: tuple[float, float], scaling: Scaling
           ) -> PhiSolution | ScaleSolution:
    """`scaling.solve_phi` without a strategy, `scaling.solve_scale` with one (their defaults for what is not
    given)."""
    spec, options = get_spec(base), dict(scaling)
    strategy = options.pop("strategy", None)
    if strategy is None:
        if options.pop("a", None) is not None:
            raise SpecError("a is Dollár's parameter of the 'dollar' strategy; give strategy='dollar' with it")
        return solve_phi(spec, target, cost, tolerance=tolerance, phi_range=phi_range, **options)
    return solve_scale(spec, target, cost, strategy=strategy, tolerance=tolerance, log2_range=log2_range, **options)


__all__ = ["Scaling", "measure_latency", "solve_for_latency", "solve_for_macs", "solve_scale_for_latency",
           "solve_scale_for_macs"]

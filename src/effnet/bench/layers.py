"""Per-layer cost and time of one forward pass, placed on the roofline of this machine's measured ceiling.

    report = layer_report(get_spec("efficientnet_b0"), batch=1, ceiling=machine_ceiling())

Every ATen operator of the forward pass is seen by a dispatch mode, timed around its own call (CPU kernels are
synchronous, so that is the kernel's time, without Python's module overhead) and costed:

- MACs by PyTorch's flop formulas, the very ones `effnet.profile.count_macs` uses (FLOPs / 2), so the rows add up
  to the model's MACs;
- bytes moved: every tensor the operator reads (input activations, weights, bias) and writes (its output) at the
  dtype it runs in — the least traffic the layer can have if nothing stays in cache between layers.

A compute operator (convolution, matrix product) that reads a parameter is a row named after that parameter's
module, so squeeze-excite's 1x1 convolutions, which run as matrix products on the pooled vector, are the rows
`stages.i.j.se.reduce` / `.se.expand` of kind "linear".  Everything else (norms, activations, pooling, the SE gate,
residual additions) has no MACs and is folded into one "other" row per operator (e.g. `other: silu_`); a view
(`t`, `unsqueeze`) moves no bytes.

Roofline (Williams, Waterman & Patterson 2009): a layer of arithmetic intensity I (MACs per byte) can reach at most
min(C, I × B) GMAC/s, C the GEMM ceiling for its dtype and B the copy bandwidth (GB/s).  It is "compute" bound
where I × B ≥ C and "memory" bound below the ridge point C / B.  "% roof" is the achieved GMAC/s over that limit;
for a row without MACs it is the achieved GB/s over B.  Time is the median over passes.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import flop_registry

from effnet.bench.candidates import BenchError
from effnet.bench.ceiling import Ceiling
from effnet.spec import NetSpec

LAYER_PATHS = ("eager", "channels_last", "folded", "bf16")
_DTYPES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.int8: "int8"}


@dataclass(frozen=True)
class LayerRow:
    """One layer (or, for "other", one kind of operator over the whole pass) at the report's batch."""

    name: str
    kind: str  # conv1x1, depthwise kxk, conv kxk, linear or other
    dtype: str
    output_shape: tuple[int, ...] | None  # None for a row folding many operators
    calls: int
    macs: int
    bytes: int
    intensity: float  # MACs per byte
    time_ms: float
    gmacs_per_s: float
    gb_per_s: float
    limit_gmacs: float | None  # roofline limit at this intensity; None without MACs or without a ceiling
    fraction: float | None  # of the roofline limit
    bound: str  # compute or memory


@dataclass
class LayerReport:
    model: str
    path: str
    resolution: int
    batch: int
    threads: int
    repeats: int
    rows: list[LayerRow]
    model_macs: int  # count_macs of the spec × batch
    ops_ms: float  # the timed operators, added up (median over passes)
    forward_ms: float  # one plain forward pass (median), for comparison
    ceiling: Ceiling
    call_floor_us: float | None = None  # median time of a view operator's call: the floor of any row's time per call

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.rows)

    def shares(self) -> dict[str, dict[str, float]]:
        """Per kind: layers, time (ms and share of the timed operators), MACs and achieved GMAC/s."""
        total = sum(r.time_ms for r in self.rows) or 1.0
        out: dict[str, dict[str, float]] = {}
        for r in self.rows:
            s = out.setdefault(r.kind, {"layers": 0, "time_ms": 0.0, "macs": 0})
            s["layers"] += 1
            s["time_ms"] += r.time_ms
            s["macs"] += r.macs
        for s in out.values():
            s["time_share"] = s["time_ms"] / total
            s["gmacs_per_s"] = s["macs"] / (s["time_ms"] * 1e6) if s["time_ms"] else 0.0
        return dict(sorted(out.items(), key=lambda kv: -kv[1]["time_ms"]))

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(macs=self.macs, shares=self.shares())
        return data


def roofline(intensity: float, ceiling_gmacs: float, bandwidth_gbs: float) -> tuple[float, str]:
    """(limit GMAC/s, "compute" or "memory") at `intensity` MACs/byte: min(C, I × B), compute bound where
    I × B ≥ C."""
    memory_limit = intensity * bandwidth_gbs
    return (ceiling_gmacs, "compute") if memory_limit >= ceiling_gmacs else (memory_limit, "memory")


def _kind(func, args: tuple, kwargs: dict, weight: torch.Tensor | None) -> str:
    if func._overloadpacket not in flop_registry or weight is None:
        return "other"
    if weight.dim() != 4:
        return "linear"
    k = "x".join(str(s) for s in weight.shape[2:])
    groups = args[8] if len(args) > 8 else kwargs.get("groups", 1)  # aten.convolution(..., groups)
    if groups > 1 and weight.shape[1] == 1:  # one input channel per group: depthwise (or a channel multiplier)
        return f"depthwise {k}"
    return "conv1x1" if k == "1x1" else f"conv {k}"


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


class _OpCosts(TorchDispatchMode):
    """Names and costs each ATen operator of one pass; compute operators are named by the parameter they read."""

    def __init__(self, params: dict[int, str]) -> None:
        super().__init__()
        self.params = params
        self.ops: list[tuple[str, str, str, tuple[int, ...] | None, int, int]] = []
        self.views: list[int] = []  # indices of the operators that only make a view

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        outputs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        packet = func._overloadpacket
        macs = flop_registry[packet](*args, **kwargs, out_val=out) // 2 if packet in flop_registry else 0
        named = [(t, self.params[t.data_ptr()]) for t in inputs if t.data_ptr() in self.params]
        weight, name = max(named, key=lambda tn: tn[0].numel()) if named else (None, None)
        kind = _kind(func, args, kwargs, weight)
        if kind == "other" or name is None:
            kind, name, shape = "other", f"other: {packet.__name__}", None
        else:
            name, shape = name.rpartition(".")[0] or name, tuple(outputs[0].shape) if outputs else None
        ref = weight if weight is not None else next(iter(inputs + outputs), None)
        dtype = "-" if ref is None else _DTYPES.get(ref.dtype, str(ref.dtype).removeprefix("torch."))
        moved = 0 if func.is_view else _nbytes(inputs) + _nbytes(outputs)  # a view moves no data
        if func.is_view:
            self.views.append(len(self.ops))
        self.ops.append((name, kind, dtype, shape, macs, moved))
        return out


class _OpTimes(TorchDispatchMode):
    """Seconds of each ATen operator's own call, and nothing else, so the gaps between operators stay short."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        self.seconds.append(time.perf_counter() - start)
        return out


def _param_names(model: nn.Module) -> dict[int, str]:
    """data_ptr → parameter name, without the wrappers' `model.` prefixes (`_ChannelsLast`, `_Cast`)."""
    names = {p.data_ptr(): n for n, p in model.named_parameters()}
    while names and all(n.startswith("model.") for n in names.values()):
        names = {k: n[len("model."):] for k, n in names.items()}
    return names


def layer_model(spec: NetSpec, path: str = "eager") -> nn.Module:
    """The model `effnet bench` would time on `path` (see LAYER_PATHS), randomly initialised, in eval mode."""
    from effnet.optimize import optimize_for_inference, to_bf16
    from effnet.registry import create_model

    if path not in LAYER_PATHS:
        raise BenchError(f"bench: --layers times one path; got {path!r}, expected one of {', '.join(LAYER_PATHS)}")
    model = create_model(spec).eval()
    if path == "channels_last":
        return optimize_for_inference(model, fold_bn=False)
    if path == "folded":
        return optimize_for_inference(model)
    return to_bf16(model) if path == "bf16" else model


def _median_ms(values: list[float]) -> float:
    return 1000 * statistics.median(values)


def time_layers(model: nn.Module, x: torch.Tensor, ceiling: Ceiling, *, repeats: int = 5, warmup: int = 2
                ) -> tuple[list[LayerRow], float, float, float | None]:
    """(rows, timed operators in ms, plain forward in ms, µs per call of a view) of `model(x)`: `warmup` plain
    passes and one costing pass, then `repeats` rounds of a plain pass and a pass timing each operator; times are
    medians over rounds.  A view does no work, so its time is what timing one call adds (dispatch, the clock)."""
    costs = _OpCosts(_param_names(model))
    plain: list[float] = []
    timed: list[list[float]] = []
    with torch.no_grad():  # not inference_mode: under it the modes would see conv2d/linear before decomposition
        for _ in range(warmup):
            model(x)
        with costs:
            model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            plain.append(time.perf_counter() - start)
            times = _OpTimes()
            with times:
                model(x)
            if len(times.seconds) != len(costs.ops):
                raise RuntimeError(f"time_layers: a pass ran {len(times.seconds)} operators, the costing pass "
                                   f"{len(costs.ops)}; the model's forward must run the same operators every time")
            timed.append(times.seconds)
    rows: dict[str, dict] = {}
    for i, (name, kind, dtype, shape, macs, nbytes) in enumerate(costs.ops):
        row = rows.setdefault(name, {"kind": kind, "dtype": dtype, "shape": shape, "calls": 0, "macs": 0,
                                     "bytes": 0, "seconds": [0.0] * repeats})
        row["calls"] += 1
        row["macs"] += macs
        row["bytes"] += nbytes
        for r, seconds in enumerate(timed):
            row["seconds"][r] += seconds[i]
    out = [_row(name, r, _median_ms(r["seconds"]), ceiling) for name, r in rows.items()]
    # compute layers in execution order, then the folded operators, the slowest first
    out.sort(key=lambda r: (r.kind == "other", -r.time_ms if r.kind == "other" else 0.0))
    views = [seconds[i] for seconds in timed for i in costs.views]
    floor_us = 1e6 * statistics.median(views) if views else None
    return out, _median_ms([sum(s) for s in timed]), _median_ms(plain), floor_us


def _row(name: str, r: dict, ms: float, ceiling: Ceiling) -> LayerRow:
    seconds = max(ms / 1000, 1e-12)
    macs, nbytes = r["macs"], r["bytes"]
    intensity = macs / nbytes if nbytes else 0.0
    gmacs, gbs = macs / seconds / 1e9, nbytes / seconds / 1e9
    dtype = next((d for d, name in _DTYPES.items() if name == r["dtype"]), None)
    compute = ceiling.gmacs(dtype) if dtype is not None else None
    if macs and compute is not None:
        limit, bound = roofline(intensity, compute, ceiling.bandwidth_gbs)
        fraction: float | None = gmacs / limit
    else:
        limit, bound, fraction = None, "memory", gbs / ceiling.bandwidth_gbs if nbytes else None
    return LayerRow(name, r["kind"], r["dtype"], r["shape"], r["calls"], macs, nbytes, intensity, ms, gmacs, gbs,
                    limit, fraction, bound)


def layer_report(spec: NetSpec, *, batch: int = 1, resolution: int | None = None, path: str = "eager",
                 ceiling: Ceiling, repeats: int = 5, warmup: int = 2) -> LayerReport:
    """Per-layer MACs, bytes, time and roofline of one forward pass of `spec` at `batch` × `resolution`."""
    from effnet.profile import count_macs
    from effnet.spec import with_options

    if batch < 1 or repeats < 1 or warmup < 0:
        raise BenchError(f"bench: --layers got batch {batch}, repeats {repeats}, warmup {warmup}; expected batch >= 1,"
                         " repeats >= 1, warmup >= 0")
    res = resolution or spec.resolution
    spec = with_options(spec, resolution=res)
    model = layer_model(spec, path)
    x = torch.randn(batch, spec.in_channels, res, res)
    rows, ops_ms, forward_ms, floor_us = time_layers(model, x, ceiling, repeats=repeats, warmup=warmup)
    return LayerReport(spec.name, path, res, batch, torch.get_num_threads(), repeats, rows,
                       count_macs(spec, res) * batch, ops_ms, forward_ms, ceiling, floor_us)


__all__ = ["LAYER_PATHS", "LayerReport", "LayerRow", "layer_model", "layer_report", "roofline", "time_layers"]

"""`effnet models`, `effnet info`, `effnet scale`: what the registry holds and what scaling does to it.

Every table shows the three costs side by side: parameters, MACs and activations (Dollár et al. 2021).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass

from effnet.cli import _args
from effnet.cli._args import (
    check_output_file,
    finite_float,
    flags_apply_only,
    it_or_them,
    pixels,
    positive_float,
    positive_int,
)
from effnet.errors import EffnetError
from effnet.experiments.family import ModelRow
from effnet.families.efficientnet import PAPER_TABLE2, PAPER_TABLE2_TOP1
from effnet.families.efficientnet_v2 import PUBLISHED
from effnet.profile import ModelProfile, profile, profile_stages
from effnet.registry import get_spec, list_models
from effnet.report import format_table
from effnet.scaling import MIN_RESOLUTION, STRATEGIES, Multipliers, compound, scale, strategy_multipliers
from effnet.spec import NetSpec, save_spec


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list models with params, MACs and their paper's figures (V1's Table 2, V2's "
                                      "Table 7; V2-B0-B3 from the V2 reference release)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--filter", default=None, help="only names containing this text")
    p.set_defaults(func=run_models)

    p = sub.add_parser("info", help="per-stage table of a model or spec file")
    p.add_argument("model", help="registered name or path to a spec .json")
    p.add_argument("--resolution", type=pixels, default=None, help="input size in px (default: the model's)")
    p.add_argument("--format", choices=("table", "json"), default=None,
                   help="table (default) or json")
    p.add_argument("--spec", action="store_true", help="print the spec as JSON instead")
    p.set_defaults(func=run_info)

    p = sub.add_parser("scale", help="scale a model by φ (compound), by a strategy and a cost multiplier, or by "
                                      "explicit multipliers")
    p.add_argument("base", help="registered name or path to a spec .json")
    p.add_argument("--phi", type=finite_float, default=None, help="compound coefficient φ (Eq. 3)")
    p.add_argument("--alpha", type=finite_float, default=None, help="depth base α of compound scaling (default 1.2)")
    p.add_argument("--beta", type=finite_float, default=None, help="width base β of compound scaling (default 1.1)")
    p.add_argument("--gamma", type=finite_float, default=None,
                   help="resolution base γ of compound scaling (default 1.15)")
    p.add_argument("--strategy", choices=STRATEGIES, default=None,
                   help="how --scale-by or a target splits the cost into depth, width and resolution "
                        "(default compound); uniform and fast are Dollár et al.'s a=1/3 and a=0.8")
    p.add_argument("--dollar-a", type=finite_float, default=None, metavar="A",
                   help="Dollár et al.'s a in [0, 1] for --strategy dollar: d=s^((1-a)/2), w=s^(a/2), r=s^((1-a)/4)")
    p.add_argument("--scale-by", type=finite_float, default=None, metavar="S",
                   help="nominal cost multiplier s: the strategy's d*w^2*r^2 = s")
    p.add_argument("--depth", type=finite_float, default=None, help="depth multiplier d")
    p.add_argument("--width", type=finite_float, default=None, help="width multiplier w")
    p.add_argument("--resolution", type=finite_float, default=None, help="resolution multiplier r")
    p.add_argument("--target-macs", type=_args.macs, default=None, metavar="MACS",
                   help="solve for the phi (or, with --strategy, the s) whose rounded model has these MACs "
                        "(e.g. 1.8G, 600M)")
    p.add_argument("--target-latency", type=_args.seconds, default=None, metavar="TIME",
                   help="solve for the phi (or s) whose model runs this fast on this machine (e.g. 25ms)")
    p.add_argument("--batch-size", dest="batch", type=positive_int, default=None,
                   help="batch size for --target-latency (default 1)")
    p.add_argument("--batch", dest="batch", type=positive_int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch threads while measuring --target-latency (default: torch's setting)")
    p.add_argument("--tolerance", type=positive_float, default=None,
                   help="relative tolerance of a target (default 0.03 for MACs, 0.05 for latency)")
    p.add_argument("--name", default=None, help="name of the scaled spec")
    p.add_argument("-o", "--output", default=None, help="write the scaled spec to this .json file")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=run_scale)


_COMPOUND_DEFAULTS = {"alpha": 1.2, "beta": 1.1, "gamma": 1.15}


def _macs_text(macs: float) -> str:
    for factor, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if macs >= factor:
            return f"{macs / factor:.3f} {unit}MACs"
    return f"{macs:.0f} MACs"


def _g(macs: int) -> float:
    return macs / 1e9


@dataclass(frozen=True)
class _Paper:
    """A model's figures as published: V1's Table 2 (params, FLOPs, top-1) or V2's Table 7 (params, FLOPs, top-1 on
    ImageNet-1k and after ImageNet-21k pre-training); V2's B0-B3, absent from the paper, from the reference release's
    table (`effnet.families.efficientnet_v2.REFERENCE_B0_B3`)."""

    params_m: float | None = None
    macs_b: float | None = None
    top1: float | None = None
    top1_21k: float | None = None
    table: str | None = None

    @property
    def top1_text(self) -> str | None:
        if self.top1 is not None:
            return f"{self.top1:g}"
        return None if self.top1_21k is None else f"{self.top1_21k:g} (21k)"


def _paper(name: str) -> _Paper:
    if name in PUBLISHED:
        f = PUBLISHED[name]
        return _Paper(f.params_m, f.flops_b, f.top1, f.top1_21k, f.source)
    if name in PAPER_TABLE2:
        return _Paper(*PAPER_TABLE2[name], top1=PAPER_TABLE2_TOP1.get(name), table="V1 Table 2")
    return _Paper()


def _model_rows(names: list[str]) -> list[tuple[ModelRow, ModelProfile, _Paper]]:
    """Each model's row beside its paper's table (V1's Table 2, V2's Table 7), and its profile (activations
    included), from one pass."""
    rows = []
    for name in names:
        p, paper = profile(get_spec(name)), _paper(name)
        rows.append((ModelRow(name, p.params, p.macs, p.resolution, paper.params_m, paper.macs_b), p, paper))
    return rows


def run_models(args: argparse.Namespace) -> int:
    names = list_models()
    if args.filter:
        names = list_models(args.filter)
        if not names:
            raise EffnetError(f"no registered model name contains {args.filter!r}; `effnet models` lists them all")
    rows = _model_rows(names)
    if args.format == "json":
        print(json.dumps([{**r.to_dict(), "activations": p.activations, "paper_top1": paper.top1,
                           "paper_top1_21k": paper.top1_21k, "paper_table": paper.table} for r, p, paper in rows],
                         indent=2))
        return 0
    table = [
        (r.name, r.resolution, r.params / 1e6, r.paper_params_m, _g(r.macs), r.paper_macs_b, r.macs_vs_paper,
         p.activations / 1e6, paper.top1_text, paper.table)
        for r, p, paper in rows
    ]
    print(format_table(["model", "res", "params (M)", "paper (M)", "GMACs", "paper GMACs", "MACs vs paper",
                        "acts (M)", "paper top-1", "paper"], table, right=("paper top-1",)))
    return 0


def _ratio(value: float) -> str:
    """Three decimals, or three significant digits below 0.01 (a model scaled far down is not 0.000x)."""
    return f"{value:.3f}" if abs(value) >= 0.01 else f"{value:.3g}"


def _stage_table(spec: NetSpec, resolution: int | None) -> str:
    rows = [
        (r.name, r.operator, r.kernel, f"{r.output_size[0]}x{r.output_size[1]}", r.in_channels, r.out_channels,
         r.repeats, r.params, r.macs / 1e6, r.activations)
        for r in profile_stages(spec, resolution)
    ]
    return format_table(["stage", "operator", "k", "output", "in", "out", "layers", "params", "MMACs", "acts"], rows)


def _costs_text(p: ModelProfile) -> str:
    return f"{p.params:,} params, {_g(p.macs):.3f} GMACs, {p.activations / 1e6:.3f} M activations"


def run_info(args: argparse.Namespace) -> int:
    if args.spec and args.format == "table":
        raise EffnetError("--format table chooses the cost tables' output; --spec prints the spec as JSON: drop one of "
                          "them")
    if args.spec and args.resolution is not None:
        raise EffnetError(f"--resolution {args.resolution} applies only to the cost tables; --spec prints the spec as "
                          "it is stored: drop one of them")
    spec = get_spec(args.model)
    if args.spec:
        print(spec.to_json())
        return 0
    p = profile(spec, args.resolution)
    if args.format == "json":
        stages = [r.__dict__ for r in profile_stages(spec, args.resolution)]
        print(json.dumps({"name": p.name, "params": p.params, "macs": p.macs, "activations": p.activations,
                          "resolution": p.resolution, "stages": stages}, indent=2))
        return 0
    print(f"{spec.name} at {p.resolution}x{p.resolution}: {_costs_text(p)}")
    print(_stage_table(spec, args.resolution))
    return 0


def _coefficients(args: argparse.Namespace) -> dict[str, float]:
    return {k: _COMPOUND_DEFAULTS[k] if getattr(args, k) is None else getattr(args, k) for k in _COMPOUND_DEFAULTS}


def _check_options(args: argparse.Namespace) -> None:
    """One clear line for each way the scale options contradict each other, before any work."""
    targets = [f for f, v in (("--target-macs", args.target_macs), ("--target-latency", args.target_latency)) if
               v is not None]
    explicit = any(v is not None for v in (args.depth, args.width, args.resolution))
    if len(targets) > 1 or (targets and (args.phi is not None or explicit or args.scale_by is not None)):
        raise EffnetError("give one of --target-macs / --target-latency, without --phi, --scale-by or "
                          "--depth/--width/--resolution (the solver finds phi, or s for --strategy)")
    if args.scale_by is not None and not (math.isfinite(args.scale_by) and args.scale_by > 0):
        raise EffnetError(f"--scale-by: got {args.scale_by:g}, expected a finite number > 0 (the nominal cost "
                          "multiplier s: 2 doubles d*w^2*r^2, 0.5 halves it)")
    if args.scale_by is not None and (args.phi is not None or explicit):
        raise EffnetError(f"--scale-by {args.scale_by:g} sets the cost multiplier; give it without --phi and "
                          "--depth/--width/--resolution (--strategy chooses how it is split)")
    if args.phi is not None and explicit:
        raise EffnetError("give either --phi (with --alpha/--beta/--gamma) or --depth/--width/--resolution, not both")
    bases = [f"--{k}" for k in _COMPOUND_DEFAULTS if getattr(args, k) is not None]
    if bases and explicit:
        raise EffnetError(f"{flags_apply_only(bases)} to compound scaling (--phi, --scale-by or a target); "
                          f"--depth/--width/--resolution give the multipliers themselves: drop {it_or_them(bases)}")
    if args.tolerance is not None and not targets:
        raise EffnetError(f"--tolerance {args.tolerance:g} is the tolerance of a target; give it with --target-macs "
                          "or --target-latency, or drop it")
    timing = [f for f, v in (("--batch-size", args.batch), ("--threads", args.threads)) if v is not None]
    if timing and args.target_latency is None:
        raise EffnetError(f"{flags_apply_only(timing)} to --target-latency (how its time is measured); add "
                          f"--target-latency or drop {it_or_them(timing)}")
    if args.name is not None and not args.name.strip():
        raise EffnetError("--name: got an empty name; give the scaled spec a name, or drop --name for the default")
    if args.strategy is not None and not (targets or args.scale_by is not None):
        raise EffnetError(f"--strategy {args.strategy} needs --scale-by S or --target-macs/--target-latency; "
                          "--phi and --depth/--width/--resolution give the multipliers themselves")
    strategy = args.strategy or "compound"
    given = [f"--{k}" for k in _COMPOUND_DEFAULTS if getattr(args, k) is not None]
    if given and strategy != "compound" and args.phi is None:
        raise EffnetError(f"{'/'.join(given)} set compound scaling's bases; --strategy {strategy} does not use them "
                          "(drop them, or use --strategy compound)")
    if args.dollar_a is not None and strategy != "dollar":
        raise EffnetError(f"--dollar-a {args.dollar_a:g} is the parameter of --strategy dollar, got --strategy "
                          f"{strategy}; add --strategy dollar or drop --dollar-a")
    if strategy == "dollar" and args.dollar_a is None:
        raise EffnetError("--strategy dollar needs --dollar-a A, a number in [0, 1] (0.8 is --strategy fast, "
                          "1/3 is --strategy uniform)")
    if args.dollar_a is not None and not 0.0 <= args.dollar_a <= 1.0:
        raise EffnetError(f"--dollar-a: got {args.dollar_a:g}, expected a number in [0, 1] (1 scales width only, "
                          "0 depth and resolution only)")


def _solve_target(args: argparse.Namespace, base: NetSpec) -> tuple[float, Multipliers] | None:
    """(φ or s, multipliers) for --target-macs / --target-latency (None when neither is given); prints what the
    solver did.  Compound without --strategy solves for φ, every other strategy for s."""
    from effnet import budget

    if args.target_macs is None and args.target_latency is None:
        return None
    coefficients = _coefficients(args)
    scaling = {"strategy": args.strategy, "a": args.dollar_a, **coefficients}
    by_phi = args.strategy is None
    if args.target_macs is not None:
        solution = budget.solve_for_macs(base, args.target_macs, tolerance=args.tolerance or 0.03, **scaling)
        show = _macs_text
    else:
        batch = args.batch or 1
        print(f"measuring forward latency at batch {batch} on this machine ...", flush=True)
        solution = budget.solve_for_latency(base, args.target_latency, batch=batch, threads=args.threads,
                                            tolerance=args.tolerance or 0.05, **scaling)
        show = lambda v: f"{v * 1e3:.2f} ms"
    key = "phi" if by_phi else "s"
    if not solution.within_tolerance:
        near = [f"{key}={x:.4f} -> {show(cost)}" for x, cost in filter(None, (solution.below, solution.above))]
        where = "phi" if by_phi else "s"
        raise EffnetError(f"no {where} lands within {100 * solution.tolerance:g}% of {show(solution.target)} (rounding "
                          f"jumps over it, or it lies outside the {where} range or the builder's limits); nearest "
                          "reachable: " + ("; ".join(near) or "none") + "; aim at one of those, or widen --tolerance")
    x = solution.phi if by_phi else solution.scale
    print(f"solved: {key}={x:.4f} gives {show(solution.cost)} for target {show(solution.target)} "
          f"({100 * solution.relative_error:+.2f}%, {solution.evaluations} models evaluated)")
    if by_phi:
        return x, compound(x, **coefficients)
    return x, solution.multipliers


def _multipliers(args: argparse.Namespace, base: NetSpec) -> tuple[Multipliers, float | None, float | None]:
    """The multipliers asked for, φ when they came from Eq. 3, and s when they came from a strategy."""
    solved = _solve_target(args, base)
    if solved is not None:
        x, m = solved
        return (m, x, None) if args.strategy is None else (m, _compound_phi(args, x), x)
    if args.scale_by is not None:
        s = args.scale_by
        m = strategy_multipliers(s, args.strategy or "compound", a=args.dollar_a, **_coefficients(args))
        return m, _compound_phi(args, s), s
    if args.phi is not None:
        return compound(args.phi, **_coefficients(args)), args.phi, None
    explicit = (args.depth, args.width, args.resolution)
    if all(v is None for v in explicit):
        raise EffnetError("nothing to scale: give --phi P, --scale-by S (with --strategy), --target-macs/"
                          "--target-latency, or any of --depth/--width/--resolution")
    d, w, r = (1.0 if v is None else v for v in explicit)
    return Multipliers(d, w, r), None, None


def _compound_phi(args: argparse.Namespace, s: float) -> float | None:
    """φ of the compound strategy's s (φ = ln s / ln(α·β²·γ²)); None for the other strategies."""
    if (args.strategy or "compound") != "compound":
        return None
    c = _coefficients(args)
    return math.log(s) / math.log(c["alpha"] * c["beta"] ** 2 * c["gamma"] ** 2)


def run_scale(args: argparse.Namespace) -> int:
    _check_options(args)
    if args.output:
        check_output_file(args.output, suffixes=(".json",))
    base = get_spec(args.base)
    m, phi, s = _multipliers(args, base)
    wanted = base.resolution * m.resolution
    if round(wanted) < MIN_RESOLUTION:  # `scale` would raise it to MIN_RESOLUTION without a word
        least = math.ceil((MIN_RESOLUTION - 0.5) / base.resolution * 1e4) / 1e4  # rounds to MIN_RESOLUTION px
        raise EffnetError(f"resolution multiplier {m.resolution:.4g}: {base.name}'s {base.resolution} px would become "
                          f"{wanted:.3g} px, below the smallest input effnet builds ({MIN_RESOLUTION} px); use a "
                          f"multiplier of at least {least:g}")
    strategy = None if s is None else args.strategy or "compound"
    scaled = scale(base, m.depth, m.width, m.resolution, name=args.name or _scaled_name(base.name, m, phi, strategy, s))
    base_p, scaled_p = profile(base), profile(scaled)
    ratio = scaled_p.macs / base_p.macs
    if args.output:
        save_spec(scaled, args.output)
    coefficients = _coefficients(args)
    result = {
        "base": base.name, "name": scaled.name, "phi": phi, "strategy": strategy, "scale_by": s,
        "dollar_a": args.dollar_a, "depth": m.depth, "width": m.width, "resolution_multiplier": m.resolution,
        "resolution": scaled.resolution, "params": scaled_p.params, "macs": scaled_p.macs,
        "activations": scaled_p.activations, "base_params": base_p.params, "base_macs": base_p.macs,
        "base_activations": base_p.activations, "macs_ratio": ratio,
        "activations_ratio": scaled_p.activations / base_p.activations,
        "ideal_ratio": m.macs_factor, "two_pow_phi": None if phi is None else 2.0**phi,
        "spec": scaled.to_dict(),
    }
    if args.format == "json":
        print(json.dumps(result, indent=2))
        return 0
    head = f"{base.name} scaled by depth {m.depth:.3f}, width {m.width:.3f}, resolution {m.resolution:.3f}"
    how = []
    if strategy is not None:
        how.append(f"strategy {strategy}" + (f" a={args.dollar_a:g}" if args.dollar_a is not None else "")
                   + f", s={s:.4g}")
    if phi is not None:
        how.append(f"phi={phi:g}, alpha={coefficients['alpha']:g}, beta={coefficients['beta']:g}, "
                   f"gamma={coefficients['gamma']:g}")
    print(head + (f" ({'; '.join(how)})" if how else ""))
    print(_stage_table(scaled, None))
    print(f"\nparams {scaled_p.params:,} (base {base_p.params:,}); MACs {_g(scaled_p.macs):.3f} G at "
          f"{scaled.resolution}px (base {_g(base_p.macs):.3f} G at {base.resolution}px); activations "
          f"{scaled_p.activations / 1e6:.3f} M (base {base_p.activations / 1e6:.3f} M)")
    line = (f"MACs ratio vs base: {_ratio(ratio)}  (d*w^2*r^2 = {_ratio(m.macs_factor)}"
            + (f", 2^phi = {_ratio(2.0**phi)})" if phi is not None and strategy is None else ")"))
    print(line + f"; activations ratio: {_ratio(result['activations_ratio'])}")
    if args.output:
        print(f"scaled spec written to {args.output}")
    return 0


def _scaled_name(base: str, m: Multipliers, phi: float | None, strategy: str | None, s: float | None) -> str:
    if strategy is not None:
        return f"{base}_{strategy}_s{s:.4g}"
    if phi is not None:
        return f"{base}_phi{phi:g}"
    return f"{base}_d{m.depth:g}_w{m.width:g}_r{m.resolution:g}"


__all__ = ["register"]

"""`effnet models`, `effnet info`, `effnet scale`: what the registry holds and what scaling does to it."""

from __future__ import annotations

import argparse
import json

from effnet.cli._args import positive_int
from effnet.errors import EffnetError
from effnet.experiments.family import model_rows
from effnet.profile import profile, profile_stages
from effnet.registry import get_spec, list_models
from effnet.report import format_table
from effnet.scaling import Multipliers, compound, scale
from effnet.spec import NetSpec, save_spec


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list models with params, MACs and the paper's figures")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--filter", default=None, help="only names containing this text")
    p.set_defaults(func=run_models)

    p = sub.add_parser("info", help="per-stage table of a model or spec file")
    p.add_argument("model", help="registered name or path to a spec .json")
    p.add_argument("--resolution", type=positive_int, default=None)
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--spec", action="store_true", help="print the spec as JSON instead")
    p.set_defaults(func=run_info)

    p = sub.add_parser("scale", help="scale a model by φ (compound) or by explicit multipliers")
    p.add_argument("base", help="registered name or path to a spec .json")
    p.add_argument("--phi", type=float, default=None, help="compound coefficient φ (Eq. 3)")
    p.add_argument("--alpha", type=float, default=1.2, help="depth base α (default 1.2)")
    p.add_argument("--beta", type=float, default=1.1, help="width base β (default 1.1)")
    p.add_argument("--gamma", type=float, default=1.15, help="resolution base γ (default 1.15)")
    p.add_argument("--depth", type=float, default=None, help="depth multiplier d")
    p.add_argument("--width", type=float, default=None, help="width multiplier w")
    p.add_argument("--resolution", type=float, default=None, help="resolution multiplier r")
    p.add_argument("--target-macs", type=_macs, default=None, metavar="MACS",
                   help="solve for the phi whose rounded model has these MACs (e.g. 1.8G, 600M)")
    p.add_argument("--target-latency", type=_seconds, default=None, metavar="TIME",
                   help="solve for the phi whose model runs this fast on this machine (e.g. 25ms)")
    p.add_argument("--batch", type=positive_int, default=1, help="batch size for --target-latency (default 1)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch threads while measuring --target-latency (default: torch's setting)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="relative tolerance of a target (default 0.03 for MACs, 0.05 for latency)")
    p.add_argument("--name", default=None, help="name of the scaled spec")
    p.add_argument("-o", "--output", default=None, help="write the scaled spec to this .json file")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=run_scale)




_MAC_UNITS = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9, "T": 1e12}
_TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def _number_with_unit(text: str, units: dict[str, float], what: str, example: str) -> float:
    stripped = text.strip()
    for unit in sorted(units, key=len, reverse=True):
        if unit and stripped.upper().endswith(unit.upper()):
            number, factor = stripped[: -len(unit)], units[unit]
            break
    else:
        number, factor = stripped, units.get("", None)
    try:
        value = float(number) * factor if factor is not None else float("nan")
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected {what} > 0 such as {example}, got {text!r}")
    return value


def _macs(text: str) -> float:
    return _number_with_unit(text, _MAC_UNITS, "a MACs count", "1.8G, 600M or 1.8e9")


def _seconds(text: str) -> float:
    return _number_with_unit(text, _TIME_UNITS, "a time with a unit", "25ms, 0.1s or 800us")


def _macs_text(macs: float) -> str:
    for factor, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if macs >= factor:
            return f"{macs / factor:.3f} {unit}MACs"
    return f"{macs:.0f} MACs"


def _g(macs: int) -> float:
    return macs / 1e9


def run_models(args: argparse.Namespace) -> int:
    names = None
    if args.filter:
        names = list_models(args.filter)
        if not names:
            raise EffnetError(f"no registered model name contains {args.filter!r}; `effnet models` lists them all")
    rows = model_rows(names)
    if args.format == "json":
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return 0
    table = [
        (r.name, r.resolution, r.params / 1e6, r.paper_params_m, _g(r.macs), r.paper_macs_b, r.macs_vs_paper)
        for r in rows
    ]
    print(format_table(["model", "res", "params (M)", "paper (M)", "GMACs", "paper GMACs", "MACs vs paper"], table))
    return 0


def _stage_table(spec: NetSpec, resolution: int | None) -> str:
    rows = [
        (r.name, r.operator, r.kernel, f"{r.output_size[0]}x{r.output_size[1]}", r.in_channels, r.out_channels,
         r.repeats, r.params, r.macs / 1e6)
        for r in profile_stages(spec, resolution)
    ]
    return format_table(["stage", "operator", "k", "output", "in", "out", "layers", "params", "MMACs"], rows)


def run_info(args: argparse.Namespace) -> int:
    spec = get_spec(args.model)
    if args.spec:
        print(spec.to_json())
        return 0
    p = profile(spec, args.resolution)
    if args.format == "json":
        stages = [r.__dict__ for r in profile_stages(spec, args.resolution)]
        print(json.dumps({"name": p.name, "params": p.params, "macs": p.macs, "resolution": p.resolution,
                          "stages": stages}, indent=2))
        return 0
    print(f"{spec.name} at {p.resolution}x{p.resolution}: {p.params:,} params, {_g(p.macs):.3f} GMACs")
    print(_stage_table(spec, args.resolution))
    return 0


def _solve_target(args: argparse.Namespace, base: NetSpec) -> float | None:
    """φ for --target-macs / --target-latency (None when neither is given); prints what the solver did."""
    from effnet.budget import solve_for_latency, solve_for_macs

    targets = [t for t in (args.target_macs, args.target_latency) if t is not None]
    if not targets:
        return None
    explicit = (args.phi, args.depth, args.width, args.resolution)
    if len(targets) > 1 or any(v is not None for v in explicit):
        raise EffnetError("give one of --target-macs / --target-latency, without --phi or "
                          "--depth/--width/--resolution (the solver finds phi for --alpha/--beta/--gamma)")
    coefficients = {"alpha": args.alpha, "beta": args.beta, "gamma": args.gamma}
    if args.target_macs is not None:
        solution = solve_for_macs(base, args.target_macs, tolerance=args.tolerance or 0.03, **coefficients)
        show = _macs_text
    else:
        print(f"measuring forward latency at batch {args.batch} on this machine ...", flush=True)
        solution = solve_for_latency(base, args.target_latency, batch=args.batch, tolerance=args.tolerance or 0.05,
                                     threads=args.threads, **coefficients)
        show = lambda v: f"{v * 1e3:.2f} ms"
    if not solution.within_tolerance:
        near = [f"phi={phi:.4f} -> {show(cost)}" for phi, cost in filter(None, (solution.below, solution.above))]
        print(f"no phi lands within {100 * solution.tolerance:g}% of {show(solution.target)} (rounding jumps over it, "
              f"or it lies outside the phi range); nearest reachable: " + "; ".join(near))
        raise SystemExit(1)
    print(f"solved: phi={solution.phi:.4f} gives {show(solution.cost)} for target {show(solution.target)} "
          f"({100 * solution.relative_error:+.2f}%, {solution.evaluations} models evaluated)")
    return solution.phi


def _multipliers(args: argparse.Namespace) -> tuple[Multipliers, float | None]:
    """The multipliers asked for, and φ when they came from Eq. 3."""
    explicit = (args.depth, args.width, args.resolution)
    if args.phi is not None:
        if any(v is not None for v in explicit):
            raise EffnetError("give either --phi (with --alpha/--beta/--gamma) or --depth/--width/--resolution, "
                              "not both")
        return compound(args.phi, args.alpha, args.beta, args.gamma), args.phi
    if all(v is None for v in explicit):
        raise EffnetError("nothing to scale: give --phi P, --target-macs/--target-latency, or any of "
                          "--depth/--width/--resolution")
    d, w, r = (1.0 if v is None else v for v in explicit)
    return Multipliers(d, w, r), None


def run_scale(args: argparse.Namespace) -> int:
    base = get_spec(args.base)
    solved = _solve_target(args, base)
    if solved is not None:
        args.phi = solved
    m, phi = _multipliers(args)
    scaled = scale(base, m.depth, m.width, m.resolution, name=args.name or _scaled_name(base.name, m, phi))
    base_p, scaled_p = profile(base), profile(scaled)
    ratio = scaled_p.macs / base_p.macs
    if args.output:
        save_spec(scaled, args.output)
    result = {
        "base": base.name, "name": scaled.name, "phi": phi,
        "depth": m.depth, "width": m.width, "resolution_multiplier": m.resolution,
        "resolution": scaled.resolution, "params": scaled_p.params, "macs": scaled_p.macs,
        "base_params": base_p.params, "base_macs": base_p.macs, "macs_ratio": ratio,
        "ideal_ratio": m.macs_factor, "two_pow_phi": None if phi is None else 2.0**phi,
        "spec": scaled.to_dict(),
    }
    if args.format == "json":
        print(json.dumps(result, indent=2))
        return 0
    head = f"{base.name} scaled by depth {m.depth:.3f}, width {m.width:.3f}, resolution {m.resolution:.3f}"
    print(head + (f" (phi={phi:g}, alpha={args.alpha:g}, beta={args.beta:g}, gamma={args.gamma:g})" if phi is not None
                  else ""))
    print(_stage_table(scaled, None))
    print(f"\nparams {scaled_p.params:,} (base {base_p.params:,}); MACs {_g(scaled_p.macs):.3f} G at "
          f"{scaled.resolution}px (base {_g(base_p.macs):.3f} G at {base.resolution}px)")
    line = f"MACs ratio vs base: {ratio:.3f}  (d*w^2*r^2 = {m.macs_factor:.3f}"
    print(line + (f", 2^phi = {2.0**phi:.3f})" if phi is not None else ")"))
    if args.output:
        print(f"scaled spec written to {args.output}")
    return 0


def _scaled_name(base: str, m: Multipliers, phi: float | None) -> str:
    if phi is not None:
        return f"{base}_phi{phi:g}"
    return f"{base}_d{m.depth:g}_w{m.width:g}_r{m.resolution:g}"


__all__ = ["register"]

"""`effnet models`, `effnet info`, `effnet scale`: what the registry holds and what scaling does to it."""

from __future__ import annotations

import argparse
import json


from effnet.experiments.family import model_rows
from effnet.profile import profile, profile_stages
from effnet.registry import get_spec
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
    p.add_argument("--resolution", type=_positive_int, default=None)
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
    p.add_argument("--name", default=None, help="name of the scaled spec")
    p.add_argument("-o", "--output", default=None, help="write the scaled spec to this .json file")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=run_scale)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _g(macs: int) -> float:
    return macs / 1e9


def run_models(args: argparse.Namespace) -> int:
    names = None
    if args.filter:
        from effnet.registry import list_models

        names = list_models(args.filter)
    rows = model_rows(names)
    if args.format == "json":
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return 0
    table = [
        (r.name, r.resolution, r.params / 1e6, r.paper_params_m, _g(r.macs), r.paper_macs_b,
         None if r.paper_macs_b is None else f"{100 * (_g(r.macs) / r.paper_macs_b - 1):+.1f}%")
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


def _multipliers(args: argparse.Namespace) -> tuple[Multipliers, float | None]:
    """The multipliers asked for, and φ when they came from Eq. 3."""
    explicit = (args.depth, args.width, args.resolution)
    if args.phi is not None:
        if any(v is not None for v in explicit):
            raise SystemExit("effnet scale: error: give either --phi (with --alpha/--beta/--gamma) or "
                             "--depth/--width/--resolution, not both")
        return compound(args.phi, args.alpha, args.beta, args.gamma), args.phi
    if all(v is None for v in explicit):
        raise SystemExit("effnet scale: error: nothing to scale: give --phi P, or any of --depth/--width/--resolution")
    d, w, r = (1.0 if v is None else v for v in explicit)
    return Multipliers(d, w, r), None


def run_scale(args: argparse.Namespace) -> int:
    base = get_spec(args.base)
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

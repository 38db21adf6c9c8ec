"""Figure 4 (Observation 2): width scaling under four (depth, resolution) settings — (1, 1), (2, 1), (1, 1.3),
(2, 1.3) — several widths each; if the dimensions interact, width pays more on a deeper, higher-resolution
network than on the baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from effnet.experiments import design, tables
from effnet.experiments.runner import Run
from effnet.profile import count_macs
from effnet.report import format_table
from effnet.scaling import scale
from effnet.spec import NetSpec

NAME = "width-at-depth-res"
SETTINGS = ((1.0, 1.0), (2.0, 1.0), (1.0, 1.3), (2.0, 1.3))
WIDTHS = (1.0, 1.4, 2.0, 2.8)
QUICK_SETTINGS = ((1.0, 1.0), (2.0, 1.3))
QUICK_WIDTHS = (1.0, 1.4)


def setting_label(d: float, r: float) -> str:
    return f"d={d:g}, r={r:g}"


def plan(out: Path, quick: bool, seeds: int, log=print) -> tuple[list[Run], dict[str, Any]]:
    base = design.baseline()
    base_macs = count_macs(base)
    settings, widths = (QUICK_SETTINGS, QUICK_WIDTHS) if quick else (SETTINGS, WIDTHS)
    train = design.recipe(quick)
    points = []
    for d, r in settings:
        for w in widths:
            spec = scale(base, d, w, r, name=f"{base.name}_d{d:g}_w{w:g}_r{r:g}")
            if (d, w, r) == (1.0, 1.0, 1.0):
                spec = base
            macs = count_macs(spec)
            points.append({"setting": setting_label(d, r), "d": d, "r": r, "w": w, "spec": spec.to_dict(),
                           "macs": macs, "ratio": macs / base_macs, **design.shape_of(spec, base)})
    runs = []
    for seed in range(seeds):
        for p in points:
            spec = NetSpec.from_dict(p["spec"])
            runs.append(Run.make(spec, seed, train, setting=p["setting"], width=p["w"]))
    meta = {"baseline": base.to_dict(), "points": points, "seeds": seeds, "recipe": design.recipe_text(train)}
    return runs, meta


def report(results: dict[str, Any]) -> tuple[str, str]:
    rows = results["runs"]
    table_rows, text_rows = [], []
    for p in results["points"]:
        test = tables.summary(rows, setting=p["setting"], width=p["w"])
        table_rows.append((p["setting"], f"{p['w']:g}", p["blocks"], f"{p['resolution']}"
                           f"{'*' if p['upsampled'] else ''}", f"{p['ratio']:.2f}x", tables.pct(test), test.n))
        text_rows.append((p["setting"], p["w"], p["ratio"], tables.pct(test)))
    md = [tables.markdown_table(["(d, r)", "width", "blocks", "res", "MACs", "test top-1", "seeds"], table_rows), ""]
    md += [f"- {s}" for s in _observation(results)]
    text = format_table(["(d, r)", "width", "MACs", "test top-1"], text_rows, formats={"width": "g", "MACs": "{:.2f}x"},
                        right=("test top-1",))
    return "\n".join(md), text


def comparisons(results: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The report's paired comparisons: per setting, the widest model against the narrowest (`_widening`); then
    at matched cost, each other setting's model nearest in MACs to the baseline setting's widest against that
    model (`_at_matched_macs`: Figure 4's question, is width worth more on a deeper or larger-input network?)."""
    return _widening(results) + _at_matched_macs(results)


def _widening(results: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    widths = sorted({p["w"] for p in results["points"]})
    return [({"setting": setting, "width": widths[-1]}, {"setting": setting, "width": widths[0]})
            for setting in dict.fromkeys(p["setting"] for p in results["points"])]


def _at_matched_macs(results: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    import math

    points = results["points"]
    base_setting = points[0]["setting"]  # (d, r) = (1, 1): the baseline's own setting comes first
    anchor = max((p for p in points if p["setting"] == base_setting), key=lambda p: p["w"])
    pairs = []
    for setting in dict.fromkeys(p["setting"] for p in points if p["setting"] != base_setting):
        near = min((p for p in points if p["setting"] == setting),
                   key=lambda p: abs(math.log(p["macs"] / anchor["macs"])))
        pairs.append(({"setting": setting, "width": near["w"]}, {"setting": base_setting, "width": anchor["w"]}))
    return pairs


def _observation(results: dict[str, Any]) -> list[str]:
    """Per setting: the paired gain from the narrowest to the widest model; then each setting against the
    baseline setting at about the same MACs."""
    rows, ratio = results["runs"], {(p["setting"], p["w"]): p["ratio"] for p in results["points"]}
    out = []
    for wide, narrow in _widening(results):
        gain = tables.compare(rows, wide, narrow)
        if gain.n:
            out.append(f"{wide['setting']}: widening {narrow['width']:g} → {wide['width']:g} gains "
                       f"{tables.pct(gain)} pp (paired over {gain.n} seed(s)).")
    for a, b in _at_matched_macs(results):
        diff = tables.compare(rows, a, b)
        if diff.n:
            what = f"{a['setting']}, width {a['width']:g} ({ratio[a['setting'], a['width']]:.2f}x MACs)"
            against = f"{b['setting']}, width {b['width']:g} ({ratio[b['setting'], b['width']]:.2f}x)"
            out.append("At about the same MACs: " + tables.verdict(diff, what, against))
    return out


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    rows = results["runs"]
    curves: dict[str, list] = {}
    for p in results["points"]:
        curves.setdefault(p["setting"], []).append(
            (p["macs"] / 1e6, tables.summary(rows, setting=p["setting"], width=p["w"]), bool(p["upsampled"])))
    return [tables.plot_curves(out / "width_at_depth_res.png", curves,
                               title="Width scaling at four (depth, resolution) settings (Fashion-MNIST, 95% CI)",
                               xlabel="MMACs per image")]


__all__ = ["NAME", "SETTINGS", "WIDTHS", "comparisons", "plan", "plots", "report"]

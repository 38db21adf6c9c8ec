"""EfficientNetV2's progressive learning (Tan & Le 2021, Sec. 4.2, Algorithm 1) against fixed-size training: the
experiments' baseline at Fashion-MNIST's native 28 px, trained with the experiments' recipe for the same steps
either at 28 px throughout ("fixed") or in four stages whose image size and dropout grow linearly from 12 px and
0.1 to 28 px and 0.3 ("progressive": Table 6's V2-S ends, sizes scaled to 28 px; `effnet.train.progressive`).
Both validate and test at 28 px.  Paired by seed: test top-1 and training wall time.

The recipe augments with crops and flips only (the in-memory batched path), so the stages' RandAugment magnitude
is not applied, and V2-S's mixup alpha is 0 at both ends: what changes from stage to stage is the image size and
the classifier dropout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from effnet.experiments import design, tables
from effnet.experiments.runner import Run
from effnet.report import format_table
from effnet.train.progressive import PAPER_STAGES, stage_plan

NAME = "progressive"
RESOLUTION = design.NATIVE_RESOLUTION
STAGES = PAPER_STAGES
ARMS = ("fixed", "progressive")


def settings(quick: bool) -> dict[str, dict[str, Any]]:
    """Each arm's TrainConfig settings: the experiments' recipe at 28 px, and the same in `STAGES` stages."""
    base = {**design.recipe(quick), "resolution": RESOLUTION}
    return {"fixed": base, "progressive": {**base, "progressive": STAGES}}


def plan(out: Path, quick: bool, seeds: int, log=print) -> tuple[list[Run], dict[str, Any]]:
    arms = settings(quick)
    spec = design.baseline()
    runs = [Run.make(spec, seed, arms[arm], arm=arm) for seed in range(seeds) for arm in ARMS]
    stages = stage_plan(stages=STAGES, total_steps=arms["fixed"]["steps"], final_size=RESOLUTION,
                        dropout=spec.dropout, randaugment_m=9)
    meta = {"recipe": design.recipe_text(arms["fixed"]), "baseline": {"name": spec.name},
            "dropout_fixed": spec.dropout, "stages": [s.to_dict() for s in stages]}
    return runs, meta


def _minutes(i) -> str:
    return "-" if i.n == 0 else f"{i.mean / 60:.1f}" + (f" ± {i.half_width / 60:.1f}" if i.n > 1 else "")


def report(results: dict[str, Any]) -> tuple[str, str]:
    rows = results["runs"]
    stages = results.get("stages", [])
    train_px = {"fixed": f"{RESOLUTION}", "progressive": " → ".join(str(s["size"]) for s in stages)}
    dropout = {"fixed": f"{results.get('dropout_fixed', '-')}",
               "progressive": " → ".join(f"{s['dropout']:.2g}" for s in stages)}
    out_rows = []
    for arm in ARMS:
        test = tables.summary(rows, arm=arm)
        out_rows.append((arm, train_px[arm], dropout[arm], tables.pct(tables.summary(rows, "train_acc_end", arm=arm)),
                         tables.pct(tables.summary(rows, "val_top1", arm=arm)), tables.pct(test),
                         _minutes(tables.summary(rows, "wall_s", arm=arm)), test.n))
    headers = ["training", "train px", "dropout", "train acc (last 10% of steps)", "val top-1", "test top-1",
               "wall per run (min)", "seeds"]
    md = [tables.markdown_table(headers, out_rows), ""]
    if stages:
        md.append("Stages of the progressive runs (steps, image size, dropout): "
                  + "; ".join(f"from step {s['first_step']}: {s['size']} px, dropout {s['dropout']:g}"
                              for s in stages) + ". Both arms validate and test at "
                  f"{RESOLUTION} px.")
        md.append("")
    for sentence in _verdicts(rows):
        md.append(f"- {sentence}")
    md.append("")
    md.append("Intervals: mean ± 95% t-interval over seeds; differences are paired by seed (same initial weights, "
              "data order and augmentation draws). Wall time is the training loop's (validation excluded), on a "
              "machine shared with other work: compare the arms by the paired ratio, not with other reports.")
    md.append("")
    md.extend(tables.discussion(results, "the three seeds of both arms on a machine whose load is recorded"))
    text = format_table(["training", "train px", "test top-1", "wall (min)", "seeds"],
                        [(r[0], r[1], r[5], r[6], r[7]) for r in out_rows], right=("test top-1", "wall (min)"))
    return "\n".join(md), text


def _verdicts(rows) -> list[str]:
    out = []
    top1 = tables.compare(rows, {"arm": "progressive"}, {"arm": "fixed"})
    if top1.n:
        out.append("Test top-1: " + tables.verdict(top1, "progressive training", "fixed-size training"))
    wall = tables.compare(rows, {"arm": "progressive"}, {"arm": "fixed"}, metric="wall_s")
    fixed, prog = tables.by_seed(rows, "wall_s", arm="fixed"), tables.by_seed(rows, "wall_s", arm="progressive")
    ratios = [prog[s] / fixed[s] for s in sorted(set(fixed) & set(prog)) if fixed[s] > 0]
    if ratios:
        spread = f" (per seed: {', '.join(f'{r:.2f}' for r in ratios)})" if len(ratios) > 1 else ""
        out.append(f"Wall time: progressive / fixed = {sum(ratios) / len(ratios):.2f} on average{spread}; paired "
                   f"difference {wall.mean / 60:+.1f} min per run"
                   + (f" (95% CI {wall.low / 60:+.1f} to {wall.high / 60:+.1f} min, {wall.n} paired seeds)"
                      if wall.n > 1 else "") + ".")
    return out


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    rows = results["runs"]
    curves = {}
    for arm in ARMS:
        wall = tables.summary(rows, "wall_s", arm=arm)
        if wall.n:
            curves[arm] = [(wall.mean / 60, tables.summary(rows, arm=arm), False)]
    if not curves:
        return []
    path = tables.plot_curves(out / "progressive.png", curves, logx=False, xlabel="training wall time per run (min)",
                              title=f"Progressive vs fixed-size training of the same model, same steps (Fashion-MNIST, "
                                    f"{tables.seeds_of(curves)}, 95% CI)")
    return [path]


__all__ = ["ARMS", "NAME", "plan", "plots", "report", "settings"]

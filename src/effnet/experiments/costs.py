"""Which cost predicts time: MACs (the paper's "FLOPS"), parameters, or activations?

The paper ranks models by FLOPS and shows in Table 4 that fewer FLOPS also run faster on a CPU.  Dollár, Singh &
Girshick ("Fast and Accurate Model Scaling", CVPR 2021) argue that a model's activations predict its runtime better
than its FLOPs.  This part of `effnet experiments latency` puts the three costs of `effnet.profile.profile` beside
two measured times of the same models, in one sitting on one CPU, one thread:

- inference: the mean latency of one image (batch 1, torch eager, eval mode; the latency experiment's record);
- training: seconds per image of a few SGD steps on random data in train mode, at one fixed batch per group.

Two groups are kept apart, because a cost can only rank models that do comparable work per image: the
ImageNet-size models of the latency experiment, and the Fashion-MNIST-size models that `effnet experiments
compound-vs-single` trained (each distinct spec once).  Per group, cost and time: Spearman's rank correlation, and
Pearson's on the logarithms (costs and times span orders of magnitude, and a power law is a line in logs).
Both correlations are computed here (a few lines each) so the library needs no statistics package.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

GROUPS = ("ImageNet-size", "Fashion-MNIST-size")
COSTS = (("macs", "MACs"), ("params", "params"), ("activations", "activations"))
TIMES = (("inference", "inference latency (batch 1)"), ("training", "training time per image"))
TRAIN_BATCH = {"ImageNet-size": 8, "Fashion-MNIST-size": 32}
"""Fixed within a group.  8 for the ImageNet-size models: B3 at 300 px already needs several GB per batch of 8 in
fp32 training, and B4–B7 (`--full`) would not fit a batch of 32 in the memory of a typical machine."""
QUICK_TRAIN_BATCH = 2
TRAIN_WARMUP, TRAIN_STEPS = 1, 5
QUICK_TRAIN_STEPS = 2
QUICK_SOURCE_MODELS = 3
MIN_POINTS = 3
"""A correlation of fewer models says nothing (two points are always perfectly ranked)."""


# -- correlations ----------------------------------------------------------------------------------------------

def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank (as Spearman's coefficient needs)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's correlation coefficient; nan for fewer than two points or a constant sequence."""
    if len(x) != len(y):
        raise ValueError(f"pearson: got {len(x)} and {len(y)} values; expected two sequences of one length")
    n = len(x)
    if n < 2:
        return math.nan
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation: Pearson's on the ranks (ties averaged)."""
    return pearson(ranks(x), ranks(y))


def log_pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson's correlation of log x and log y (all values positive)."""
    return pearson([math.log(v) for v in x], [math.log(v) for v in y])


# -- the models and the training measurement --------------------------------------------------------------------

def source_models(source: Path, quick: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """(name, spec dict) of each distinct spec among the runs of compound-vs-single's results.json, in MACs order;
    with `quick`, three of them spread over the range.  Empty when the file is missing."""
    path = source / "results.json"
    if not path.is_file():
        return []
    try:
        runs = json.loads(path.read_text())["runs"]
        found: dict[str, tuple[str, dict[str, Any], int]] = {}
        for r in runs:
            found.setdefault(json.dumps(r["spec"], sort_keys=True), (r.get("model") or r["spec"]["name"], r["spec"],
                                                                     int(r.get("macs") or 0)))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        from effnet.experiments.runner import ExperimentError

        raise ExperimentError(f"{path}: not a results file of `effnet experiments compound-vs-single` ({exc}); "
                              "run it again, or point --source at its output folder") from None
    models, names = sorted(found.values(), key=lambda m: (m[2], m[0])), set()
    out = []
    for name, spec, _ in models:
        unique, i = name, 2
        while unique in names:
            unique, i = f"{name}#{i}", i + 1
        names.add(unique)
        out.append((unique, spec))
    if quick and len(out) > QUICK_SOURCE_MODELS:
        last = len(out) - 1
        out = [out[round(k * last / (QUICK_SOURCE_MODELS - 1))] for k in range(QUICK_SOURCE_MODELS)]
    return out


def train_step_times(spec, *, batch: int, steps: int, warmup: int = TRAIN_WARMUP, threads: int = 1) -> list[float]:
    """Seconds of each of `steps` SGD steps (forward, cross-entropy, backward, update) of `spec`'s model in train
    mode on one random batch at the spec's resolution, after `warmup` steps, on `threads` torch threads."""
    import torch
    import torch.nn.functional as F

    from effnet.network import ConvNet

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        model = ConvNet(spec).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = torch.randn(batch, spec.in_channels, spec.resolution, spec.resolution)
        y = torch.randint(0, max(1, spec.num_classes), (batch,))

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()

        return timed(step, warmup, steps)
    finally:
        torch.set_num_threads(previous)


def timed(fn: Callable[[], object], warmup: int, runs: int) -> list[float]:
    """Seconds of each of `runs` calls of `fn`, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


# -- from results.json: points, correlations, sentences, table, plot --------------------------------------------

def points(results: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Per group, one point per model with both times measured: its costs and its seconds per image."""
    inference = {r["model"]: r["mean_s"] for r in results.get("records", [])
                 if r["engine"] == "torch-eager" and r["threads"] == 1 and r["batch"] == 1}
    training = {t["model"]: t for t in results.get("training", [])}
    out: dict[str, list[dict[str, Any]]] = {g: [] for g in GROUPS}
    for name, m in results.get("models", {}).items():
        if name in inference and name in training and m.get("group") in out:
            out[m["group"]].append({"model": name, "family": m["family"], "resolution": m["resolution"],
                                    **{k: m[k] for k, _ in COSTS}, "inference": inference[name],
                                    "training": training[name]["seconds_per_image"],
                                    "train_batch": training[name]["batch"],
                                    "images_per_s": training[name]["images_per_s"]})
    return out


def correlations(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (group, time, cost): n, Spearman, Pearson on logs (None below MIN_POINTS models)."""
    rows = []
    for group, pts in points(results).items():
        for t, _ in TIMES:
            for c, _ in COSTS:
                x, y = [p[c] for p in pts], [p[t] for p in pts]
                enough = len(pts) >= MIN_POINTS
                rows.append({"group": group, "time": t, "cost": c, "n": len(pts),
                             "spearman": _round(spearman(x, y)) if enough else None,
                             "pearson_log": _round(log_pearson(x, y)) if enough else None})
    return rows


def _round(v: float) -> float | None:
    return None if math.isnan(v) else round(v, 4)


def _r(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _num(v: float) -> str:
    """Three or more significant digits."""
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 1 else f"{v:.3f}"


def best_sentences(rows: list[dict[str, Any]]) -> list[str]:
    """Per group and time: which cost correlates best (Spearman, then Pearson on logs), written from the rows."""
    names, times = dict(COSTS), dict(TIMES)
    out = []
    for group in GROUPS:
        for t, _ in TIMES:
            mine = [r for r in rows if r["group"] == group and r["time"] == t]
            if not mine or mine[0]["spearman"] is None:
                n = mine[0]["n"] if mine else 0
                out.append(f"{group} models, {times[t]}: {n} model(s) measured, too few for a correlation "
                           f"(at least {MIN_POINTS}).")
                continue
            ranked = sorted(mine, key=lambda r: (r["spearman"] if r["spearman"] is not None else -2,
                                                 r["pearson_log"] if r["pearson_log"] is not None else -2),
                            reverse=True)
            best, rest = ranked[0], ranked[1:]
            tied = [r for r in rest if r["spearman"] == best["spearman"]]
            lead = " and ".join(names[r["cost"]] for r in [best, *tied])
            others = "; ".join(f"{names[r['cost']]} {_r(r['spearman'])} / {_r(r['pearson_log'])}"
                               if r["spearman"] is not None else f"{names[r['cost']]} undefined (the same for every "
                               "model)" for r in rest if r not in tied)
            out.append(f"{group} models ({best['n']}), {times[t]}: {lead} correlate{'s' if not tied else ''} best "
                       f"(Spearman {_r(best['spearman'])}, Pearson on logs {_r(best['pearson_log'])})"
                       + (f"; {others}." if others else "."))
    return out


def section(results: dict[str, Any], figure: str | None) -> list[str]:
    """The report's markdown lines for this part."""
    from effnet.experiments.tables import markdown_table

    pts = points(results)
    if not any(pts.values()):
        return []
    md = ["## Which cost predicts time?", "",
          "Each model's three costs per image (`effnet.profile.profile`) against two times measured in the same "
          "sitting, on one thread: inference latency of one image (torch eager, batch 1, mean of the timed runs) "
          "and training time per image (SGD steps on random data in train mode, mean step time / batch). "
          "Correlations per group: Spearman's rank correlation, then Pearson's on the logarithms.", ""]
    md += [f"- {s}" for s in best_sentences(correlations(results))]
    rows = [(r["group"], dict(TIMES)[r["time"]], dict(COSTS)[r["cost"]], r["n"], _r(r["spearman"]),
             _r(r["pearson_log"])) for r in correlations(results) if r["n"] >= MIN_POINTS]
    md += ["", markdown_table(["group", "time", "cost", "models", "Spearman", "Pearson (logs)"], rows)] if rows else []
    md.append("")
    if figure:
        md += [f"![costs]({figure})", ""]
    for group, group_points in pts.items():
        if not group_points:
            continue
        batch = sorted({p["train_batch"] for p in group_points})
        md += [f"### {group} models", "",
               markdown_table(["model", "res", "params (M)", "MMACs", "activations (M)", "inference (ms)",
                               f"training (images/s, batch {'/'.join(map(str, batch))})"],
                              [(p["model"], p["resolution"], _num(p["params"] / 1e6), _num(p["macs"] / 1e6),
                                _num(p["activations"] / 1e6), _num(1e3 * p["inference"]), _num(p["images_per_s"]))
                               for p in sorted(group_points, key=lambda p: p["macs"])]),
               ""]
    return md


def plot(results: dict[str, Any], path: Path) -> Path | None:
    """Three panels (MACs, params, activations) of seconds per image, log-log: filled markers inference, hollow
    markers training, one colour per group."""
    pts = points(results)
    if not any(pts.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(COSTS), figsize=(15, 4.8))
    for ax, (cost, label) in zip(axes, COSTS):
        for i, (group, group_points) in enumerate(pts.items()):
            if not group_points:
                continue
            x = [p[cost] for p in group_points]
            ax.scatter(x, [p["inference"] for p in group_points], color=f"C{i}", label=f"{group}: inference")
            ax.scatter(x, [p["training"] for p in group_points], facecolors="white", edgecolors=f"C{i}",
                       label=f"{group}: training")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(label if cost == "params" else f"{label} per image")
        ax.set_ylabel("seconds per image (1 thread)")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    fig.suptitle("Which cost predicts time: inference (filled, batch 1) and training (hollow) per image", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = ["COSTS", "GROUPS", "TIMES", "TRAIN_BATCH", "best_sentences", "correlations", "log_pearson", "pearson",
           "plot", "points", "ranks", "section", "source_models", "spearman", "timed", "train_step_times"]

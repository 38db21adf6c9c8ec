"""Figure 7 re-made on real data, and measured.

- **photos**: the pretrained EfficientNet-Lite0, Lite1 and Lite2 (bundled ImageNet weights) side by side on the
  real photos scikit-image and scikit-learn ship, each map for the model's own top-1 class.
- **fashion-mnist**: the models of `effnet experiments compound-vs-single` scaled to one MACs budget (3x when it
  was run, else the middle budget found) by depth, width, resolution and compound scaling, beside the baseline,
  on the same Fashion-MNIST test images, each map for the image's true class.  Fashion-MNIST's background is
  exactly black, so the object is known: every model is scored by the share of its map's mass on the object
  (`effnet.cam.on_object_fraction`), averaged over the same fixed test images, per method with a 95% interval
  over the training seeds and the paired (same seed) difference of compound scaling against each single
  dimension.  A map spread evenly scores the object's area; the table shows that chance level beside each score.

The maps are computed with the chosen weights of each run (the EMA ones) and each model's recorded
preprocessing, so the resolution-scaled models see the images at their own, larger, size.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from effnet.experiments import tables
from effnet.experiments.records import machine
from effnet.experiments.runner import ExperimentError
from effnet.files import atomic_write_text
from effnet.report import format_duration

NAME = "cam"
SOURCE = "compound-vs-single"
PREFERRED_BUDGET = 3.0
METHOD_ORDER = ("baseline", "depth", "width", "resolution", "compound (paper)", "compound (grid)")
PHOTO_MODELS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
PHOTOS = ("coffee", "chelsea", "astronaut", "rocket", "sklearn_china", "sklearn_flower")
OBJECT_THRESHOLD = 0.1
"""A pixel is on the object when its grey value, as the model sees it (after resizing), exceeds 0.1 of white:
Fashion-MNIST's background is 0, and the threshold keeps resampling's faint halo off the object."""
MASS_IMAGES, QUICK_MASS_IMAGES = 1000, 64
FIGURE_CLASSES, QUICK_FIGURE_CLASSES = 10, 4
PARTS = ("photos", "fashion-mnist")


@dataclass(frozen=True)
class Options:
    out: Path
    source: Path = Path("docs/experiments") / SOURCE
    runs_dir: Path = Path("runs/experiments")
    quick: bool = False
    method: str = "gradcam"
    layer: str | None = None
    budget: float | None = None
    retrain: bool = False
    jobs: int = 1


# -- photos: pretrained Lite0/1/2 --------------------------------------------------------------------------------

def photos_part(options: Options, log: Callable[[str], None] = print) -> dict[str, Any]:
    from PIL import Image

    from effnet.cam import Column, compute, denormalise, preprocess, save_figure
    from effnet.data.photos import photos
    from effnet.predict import model_config
    from effnet.registry import create_model
    from effnet.weights import imagenet_classes

    loaded = photos(PHOTOS[:2] if options.quick else PHOTOS)  # in effnet.data.photos' fixed order
    names = [name for name, _ in loaded]
    images = [Image.fromarray(pixels) for _, pixels in loaded]
    labels = imagenet_classes()
    columns, models = [], []
    for name in PHOTO_MODELS:
        model = create_model(name, pretrained=True).eval()
        config = model_config(model.spec)
        inputs = preprocess(images, config)
        log(f"cam: {name} ({config.resolution} px) on {len(images)} photos")
        result = compute(model, inputs, method=options.method, layer=options.layer)
        probs = result.logits.softmax(1)
        captions = [f"{labels[t]} {100 * float(probs[i, t]):.0f}%" for i, t in enumerate(result.targets)]
        if not columns:
            columns.append(Column("photo (Lite0 input)", denormalise(inputs, config)))
        columns.append(Column(f"{name.removeprefix('efficientnet_')} ({config.resolution} px)",
                              denormalise(inputs, config), result.maps, captions))
        models.append({"model": name, "resolution": config.resolution, "layer": result.layer, "photos": [
            {"photo": photo, "top1": labels[t], "probability": round(float(probs[i, t]), 4),
             "peak_fraction": [round((x + 0.5) / inputs.shape[-1], 3), round((y + 0.5) / inputs.shape[-2], 3)]}
            for i, (photo, t, (x, y)) in enumerate(zip(names, result.targets, result.peaks()))]})
    figure = save_figure(options.out / "photos_lite.png", columns, row_titles=list(names),
                         title=f"{options.method} on the last feature map of the pretrained Lite models "
                               "(each model's top-1 class)", dpi=80)
    return {"method": options.method, "figure": figure.name, "models": models}


# -- fashion-mnist: the compound-vs-single models ------------------------------------------------------------------

def chosen_runs(options: Options) -> tuple[float, list[dict[str, Any]]]:
    """(budget, the baseline's and that budget's runs, in METHOD_ORDER then seed) from the source experiment's
    results.json; `ExperimentError` naming the command to run first when it or a checkpoint is missing."""
    path = options.source / "results.json"
    first = f"run `effnet experiments {SOURCE}` first (or point --source at its output folder)"
    if not path.is_file():
        raise ExperimentError(f"{path}: not found; {first}")
    try:
        runs = json.loads(path.read_text())["runs"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ExperimentError(f"{path}: not a results file of `effnet experiments {SOURCE}` ({exc}); {first}") \
            from None
    budgets = sorted({float(r["budget"]) for r in runs if r.get("method") != "baseline"})
    if not budgets:
        raise ExperimentError(f"{path}: no scaled model has finished yet; {first}")
    budget = options.budget if options.budget is not None else \
        PREFERRED_BUDGET if PREFERRED_BUDGET in budgets else budgets[len(budgets) // 2]
    if budget not in budgets:
        raise ExperimentError(f"--budget: got {budget:g}, expected one of {[f'{b:g}' for b in budgets]} (in {path})")
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    chosen = sorted((r for r in runs if r.get("method") == "baseline" or float(r["budget"]) == budget),
                    key=lambda r: (order.get(r["method"], len(order)), r["method"], r["seed"]))
    for r in chosen:
        checkpoint = _checkpoint(options, r)
        if not checkpoint.is_file() and not options.retrain:
            raise ExperimentError(f"{checkpoint}: checkpoint of the {r['method']} run (seed {r['seed']}) not found; "
                                  "pass --retrain to train it again, or --runs DIR where the runs were trained")
    return budget, chosen


def retrain_missing(options: Options, chosen: list[dict[str, Any]], log: Callable[[str], None] = print) -> list[
        dict[str, Any]]:
    """Train again every chosen run whose checkpoint is missing, in its own run folder (the record's spec,
    settings and seed make the same run key), `options.jobs` at a time in child processes of one torch thread
    each (one process, torch's default threads, when `jobs` is 1); returns, per retrained run, the recorded and the
    new accuracy."""
    from effnet.experiments.runner import run_of_record, train_run, training_cost

    missing = [r for r in chosen if not _checkpoint(options, r).is_file()]
    if missing:
        names = ", ".join(f"{r['method']} seed {r['seed']}" for r in missing)
        log(f"cam: training again, {options.jobs} at a time, the runs whose checkpoints are missing: {names} ...")
    runs = [run_of_record(r) for r in missing]
    costs = [training_cost(run) for run in runs]  # each run's share of the work (activations x images trained)
    if not all(costs):
        costs = [1.0] * len(runs)  # not known for all: every run counts the same
    started = time.monotonic()
    records: dict[int, dict[str, Any]] = {}

    def done(index: int, record: dict[str, Any]) -> None:
        records[index] = record
        r, left = missing[index], len(missing) - len(records)
        finished = sum(costs[i] for i in records)
        rate = (time.monotonic() - started) / finished  # wall time per unit of work finished, with `jobs` at work
        eta = f", ETA {format_duration(rate * (sum(costs) - finished))}" if left else ""
        log(f"cam: [{len(records)}/{len(missing)} retrained{eta}] {r['method']} seed {r['seed']}: test "
            f"{record['test_top1']:.2f}% (recorded {r['test_top1']:.2f}%)")

    if options.jobs > 1 and len(runs) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(options.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(train_run, run, options.runs_dir, threads=1): i for i, run in enumerate(runs)}
            for future in as_completed(futures):
                done(futures[future], future.result())
    else:
        for i, run in enumerate(runs):
            done(i, train_run(run, options.runs_dir))
    return [{"key": r["key"], "method": r["method"], "seed": r["seed"], "recorded_test_top1": r["test_top1"],
             "retrained_test_top1": records[i]["test_top1"], "machine": records[i]["machine"]["cpu"]}
            for i, r in enumerate(missing)]


def _checkpoint(options: Options, run: dict[str, Any]) -> Path:
    return options.runs_dir / run["key"] / "checkpoints" / "best.pt"


def object_masks(inputs: torch.Tensor, config) -> torch.Tensor:
    """The object's pixels (N×H×W booleans) of Fashion-MNIST model inputs: grey value above OBJECT_THRESHOLD."""
    from effnet.cam import denormalise

    return denormalise(inputs, config)[..., 0] > OBJECT_THRESHOLD


def _inputs(source, indices: list[int], config) -> torch.Tensor:
    from effnet.data.transforms import eval_transform

    transform = eval_transform(config, grayscale=True)
    return torch.stack([transform(source.load(i)[0]) for i in indices])


def fashion_part(options: Options, log: Callable[[str], None] = print) -> dict[str, Any]:
    from effnet.cam import Column, compute, denormalise, from_checkpoint, on_object_fraction, save_figure
    from effnet.data import FashionMNISTSource
    from effnet.data.loader import subset_indices

    budget, chosen = chosen_runs(options)
    retrained = retrain_missing(options, chosen, log) if options.retrain else []
    source = FashionMNISTSource("test")
    count = QUICK_MASS_IMAGES if options.quick else MASS_IMAGES
    measured = subset_indices(len(source), count, 0) or list(range(len(source)))
    classes = QUICK_FIGURE_CLASSES if options.quick else FIGURE_CLASSES
    shown = [source.targets.index(c) for c in range(classes)]
    labels = torch.tensor([source.targets[i] for i in measured])
    rows, columns = [], []
    for run in chosen:
        model, config, names = from_checkpoint(_checkpoint(options, run))
        inputs = _inputs(source, measured, config)
        result = compute(model, inputs, labels.tolist(), options.method, layer=options.layer)
        masks = object_masks(inputs, config)
        share = on_object_fraction(result.maps, masks)
        kept = share[~share.isnan()]
        rows.append({"key": run["key"], "method": run["method"], "budget": run["budget"], "seed": run["seed"],
                     "model": run.get("model"), "resolution": config.resolution, "layer": result.layer,
                     "images": len(measured), "empty_maps": int(share.isnan().sum()),
                     "on_object": round(100 * float(kept.mean()), 3) if len(kept) else None,
                     "object_area": round(100 * float(masks.float().mean()), 3),
                     "top1": round(100 * float((result.logits.argmax(1) == labels).float().mean()), 2),
                     "test_top1": run.get("test_top1")})
        log(f"cam: {run['method']} seed {run['seed']} ({config.resolution} px): {rows[-1]['on_object']}% of the "
            f"maps' mass on the object (area {rows[-1]['object_area']}%)")
        if run["seed"] == min(r["seed"] for r in chosen if r["method"] == run["method"]):
            figure_inputs = _inputs(source, shown, config)
            maps = compute(model, figure_inputs, [source.targets[i] for i in shown], options.method,
                           layer=options.layer)
            if not columns:
                columns.append(Column("image", torch.stack([source.load(i)[0][0] for i in shown])[..., None]
                                      .expand(-1, -1, -1, 3) / 255.0))
            captions = [f"says {(names or ())[p] if names else p}" for p in maps.logits.argmax(1).tolist()]
            columns.append(Column(f"{run['method']}\n{config.resolution} px", denormalise(figure_inputs, config),
                                  maps.maps, captions))
    class_names = list(source.classes)
    figure = save_figure(options.out / "fashion_mnist.png", columns, row_titles=[class_names[source.targets[i]]
                                                                                 for i in shown],
                         title=f"{options.method}, true class, models at {budget:g}x the baseline's MACs "
                               "(lowest seed of each)")
    return {"method": options.method, "budget": budget, "figure": figure.name, "images": len(measured),
            "object_threshold": OBJECT_THRESHOLD, "source": str(options.source / "results.json"), "runs": rows,
            "retrained": retrained}


# -- results and report ------------------------------------------------------------------------------------------

def run(options: Options, parts: tuple[str, ...] = PARTS, *, command: str,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Make the figures of `parts`, update `out/results.json` (other parts' sections are kept) and report.md."""
    if "fashion-mnist" in parts:
        chosen_runs(options)  # a missing prerequisite is reported before any work
    path = options.out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    options.out.mkdir(parents=True, exist_ok=True)
    stamp = {"command": command, "quick": options.quick, "machine": machine(),
             "updated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    if "photos" in parts:
        results["photos"] = {**photos_part(options, log), **stamp}
    if "fashion-mnist" in parts:
        fashion = {**fashion_part(options, log), **stamp}
        keys = {r["key"] for r in fashion["runs"]}
        earlier = [a for a in (results.get("fashion_mnist") or {}).get("retrained", []) if a["key"] in keys]
        if not fashion["retrained"] and earlier:  # these checkpoints were trained again by an earlier call
            fashion["retrained"] = earlier
        results["fashion_mnist"] = fashion
    results["experiment"] = NAME
    atomic_write_text(json.dumps(results, indent=2) + "\n", path)
    atomic_write_text(report(results), options.out / "report.md")
    return results


def write_report(out: Path) -> dict[str, Any]:
    """report.md written again from `out/results.json` alone (`--report-only`); returns the results."""
    path = out / "results.json"
    if not path.is_file():
        raise ExperimentError(f"--out {out}: no results.json there; run `effnet experiments cam` first")
    try:
        results = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExperimentError(f"{path}: not readable JSON ({exc}); run `effnet experiments cam` again") from None
    if not isinstance(results, dict) or results.get("experiment") != NAME:
        raise ExperimentError(f"{path}: not a results file of `effnet experiments {NAME}`; choose its --out folder")
    atomic_write_text(report(results), out / "report.md")
    return results


def summary_rows(section: dict[str, Any]) -> list[tuple]:
    rows = section["runs"]
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        share = tables.summary(rows, "on_object", method=method)
        area = tables.summary(rows, "object_area", method=method)
        top1 = tables.summary(rows, "top1", method=method)
        res = sorted({r["resolution"] for r in rows if r["method"] == method})
        out.append((method, "/".join(map(str, res)), tables.pct(share), tables.pct(area), tables.pct(top1), share.n))
    return out


def _paired(section: dict[str, Any]) -> list[str]:
    rows = section["runs"]
    methods = list(dict.fromkeys(r["method"] for r in rows))
    sentences = []
    for name in (m for m in methods if m.startswith("compound")):
        for single in (m for m in ("depth", "width", "resolution") if m in methods):
            diff = tables.compare(rows, {"method": name}, {"method": single}, metric="on_object")
            if diff.n:
                sentences.append(tables.verdict(diff, f"{name} (on-object mass)", f"{single}-only"))
    return sentences


def report(results: dict[str, Any]) -> str:
    md = ["# Class activation maps (Figure 7)", ""]
    photos = results.get("photos")
    if photos:
        md += [f"## Pretrained Lite0, Lite1, Lite2 on real photos{' (quick)' if photos['quick'] else ''}", "",
               f"![maps]({photos['figure']})", "",
               f"`{photos['command']}` — {photos['updated']}, {photos['machine']['cpu']}. {photos['method']} on "
               "each model's last feature map, for its own top-1 class.", ""]
        headers = ["photo", *(m["model"].removeprefix("efficientnet_") for m in photos["models"])]
        cells = [[p["photo"]] for p in photos["models"][0]["photos"]]
        for m in photos["models"]:
            for row, p in zip(cells, m["photos"]):
                row.append(f"{p['top1']} {100 * p['probability']:.0f}%, peak ({p['peak_fraction'][0]:.2f}, "
                           f"{p['peak_fraction'][1]:.2f})")
        md += [tables.markdown_table(headers, cells), "",
               "Peak: the map's maximum as (x, y) fractions of the model's input (0, 0 = top left).", ""]
    fashion = results.get("fashion_mnist")
    if fashion:
        md += [f"## Fashion-MNIST, models scaled to {fashion['budget']:g}x the baseline's MACs"
               f"{' (quick: a smoke test, not a result)' if fashion['quick'] else ''}", "",
               f"![maps]({fashion['figure']})", "",
               f"`{fashion['command']}` — {fashion['updated']}, {fashion['machine']['cpu']}. Models and checkpoints "
               f"from `{fashion['source']}`; {fashion['method']} on each model's last feature map, for the true "
               f"class, on {fashion['images']} fixed test images (the same for every model).", "",
               tables.markdown_table(["method", "res", "mass on object (%)", "object area (%)", "top-1 (%)",
                                      "seeds"], summary_rows(fashion)), "",
               "Mass on object: the share of the map's sum on the object's pixels (grey value above "
               f"{fashion['object_threshold']:g} in the model's input), averaged over the images; object area: "
               "the share of the input the object covers, what an even map would score. Top-1: on these images. "
               "Mean ± 95% t-interval over each method's seeds (the seeds column).", ""]
        md += [f"- {s}" for s in _paired(fashion)]
        empty = sum(r["empty_maps"] for r in fashion["runs"])
        if empty:
            md += ["", f"{empty} map(s) held no positive evidence for the true class (all zero) and are left out."]
        again = fashion.get("retrained") or []
        if again:
            same = sum(a["recorded_test_top1"] == a["retrained_test_top1"] for a in again)
            worst = max(abs(a["recorded_test_top1"] - a["retrained_test_top1"]) for a in again)
            md += ["", f"{len(again)} of these runs were trained again for their checkpoints (`--retrain`, on "
                   f"{', '.join(sorted({a['machine'] for a in again}))}): {same} reproduce the recorded test top-1 "
                   f"exactly, the largest difference is {worst:.2f} pp. Retrained minus recorded test top-1 per "
                   "method (each seed): " + "; ".join(
                       f"{m} " + ", ".join(f"{a['retrained_test_top1'] - a['recorded_test_top1']:+.2f}"
                                           for a in again if a["method"] == m)
                       for m in dict.fromkeys(a["method"] for a in again)) + "."]
        md.append("")
    return "\n".join(md).rstrip() + "\n"


__all__ = ["NAME", "PARTS", "Options", "chosen_runs", "fashion_part", "object_masks", "photos_part", "report",
           "retrain_missing", "run", "write_report"]

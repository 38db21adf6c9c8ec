"""Table 4 re-run: inference latency of EfficientNet-B0–B3 (B4–B7 with `--full`) and ResNet-50/101/152 on this CPU.

The paper measures on "a single core of Intel Xeon CPU E5-2690" with batch 1, the average of 20 runs: ResNet-152
0.554 s against EfficientNet-B1 0.098 s, 5.7x faster at about the same top-1 (and GPipe 19.0 s against B7 3.1 s,
6.1x).  Here every model runs at its own resolution on {1 thread, all threads} x {batch 1, batch 32} x {torch eager,
the fastest fp32 engine of `effnet.runtime` installed here}: after warm-up, 20 timed runs of one forward pass, kept
with their mean, standard deviation and range.

A measurement belongs to the CPU it ran on: every record keeps the CPU's model and ISA (AMX and AVX512-BF16 told
apart), and a rerun on another CPU (or with other settings) starts a new table rather than mixing the two; the
earlier records stay in results.json under "earlier".  results.json is written after each model, so an interrupted
run continues where it stopped; report.md and the plots are generated from results.json alone.

The second part (`effnet.experiments.costs`) asks which cost — MACs, params or activations — predicts time.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from effnet.experiments import costs
from effnet.experiments.runner import ExperimentError, machine

NAME = "latency"
MODELS = ("efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "resnet50", "resnet101",
          "resnet152")
FULL_MODELS = ("efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7")
QUICK_MODELS, QUICK_RESOLUTION = ("efficientnet_b0", "resnet50"), 64
BATCHES, QUICK_BATCHES = (1, 32), (1, 2)
WARMUP, RUNS = 3, 20
QUICK_WARMUP, QUICK_RUNS = 1, 3
EAGER = "torch-eager"
ENGINES = (("onnxruntime", "onnxruntime-fp32"), ("openvino", "openvino-fp32"))
"""The fast fp32 engine: the first installed.  ONNX Runtime's fp32 kernels are the fastest fp32 path `effnet bench`
has measured for B0 on the CPUs it ran on (about 1.8x torch.compile on an AVX-512 EPYC); OpenVINO pinned to f32 is
the fallback."""
PAPER = {"cpu": "Intel Xeon CPU E5-2690", "setting": "1 core, batch 1, mean of 20 runs",
         "efficientnet_b1": 0.098, "resnet152": 0.554, "speedup": 5.7,
         "gpipe": 19.0, "efficientnet_b7": 3.1, "gpipe_speedup": 6.1}
"""Tan & Le (2019), Table 4, seconds."""


@dataclass(frozen=True)
class Options:
    out: Path
    source: Path = Path("docs/experiments/compound-vs-single")
    quick: bool = False
    full: bool = False


def models(options: Options) -> tuple[str, ...]:
    return QUICK_MODELS if options.quick else MODELS + (FULL_MODELS if options.full else ())


def thread_counts() -> tuple[int, ...]:
    """1 thread and all of this machine's cores (one entry when they are the same)."""
    return tuple(sorted({1, os.cpu_count() or 1}))


def fast_engine() -> str | None:
    """The name of the fast fp32 engine installed here (see ENGINES), None when there is none."""
    from effnet.runtime import available_backends

    found = available_backends()
    return next((name for backend, name in ENGINES if backend in found), None)


def sitting(info: dict[str, Any]) -> dict[str, Any]:
    """What makes two measurements comparable: the CPU model, its ISA features and the cores."""
    return {"cpu": info["cpu"], "isa": list(info["isa"]), "cores": info["cores"]}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else []


def _stats(times: list[float]) -> dict[str, Any]:
    return {"mean_s": statistics.fmean(times), "std_s": statistics.stdev(times) if len(times) > 1 else 0.0,
            "min_s": min(times), "max_s": max(times), "times_s": [round(t, 6) for t in times]}


def _timed(fn: Callable[[], object], warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


# -- results.json ----------------------------------------------------------------------------------------------------

def read_results(out: Path) -> dict[str, Any]:
    path = out / "results.json"
    if not path.is_file():
        return {}
    try:
        results = json.loads(path.read_text())
        if results.get("experiment") != NAME or not isinstance(results.get("records"), list):
            raise ValueError("no latency records")
    except (ValueError, AttributeError) as exc:
        raise ExperimentError(f"{path}: not a results file of `effnet experiments {NAME}` ({exc}); move it away or "
                              "choose another --out") from None
    return results


def _fresh(options: Options, info: dict[str, Any], earlier: list[dict[str, Any]]) -> dict[str, Any]:
    return {"experiment": NAME, "quick": options.quick, "sitting": sitting(info), "machine": info, "models": {},
            "records": [], "training": [], "passes": [], "earlier": earlier}


def start(options: Options, info: dict[str, Any], log: Callable[[str], None] = print) -> dict[str, Any]:
    """results.json's content to continue, or a new table when it was measured on another CPU or with other
    settings (the old one kept under "earlier")."""
    results = read_results(options.out)
    if not results:
        return _fresh(options, info, [])
    now, then = sitting(info), results.get("sitting")
    if then == now and results.get("quick") == options.quick:
        return results
    was = f"{then['cpu']} ({', '.join(then['isa'])}), {then['cores']} cores" if then else "an unknown CPU"
    why = f"was measured on {was}" if then != now else \
        f"was measured {'with' if results.get('quick') else 'without'} --quick"
    log(f"latency: {options.out / 'results.json'} {why}; this run starts a new table (the earlier one is kept "
        "under \"earlier\")")
    earlier = results.pop("earlier", [])
    return _fresh(options, info, [*earlier, {k: results.get(k) for k in ("sitting", "quick", "machine", "models",
                                                                         "records", "training", "passes")}])


def write(options: Options, results: dict[str, Any]) -> None:
    options.out.mkdir(parents=True, exist_ok=True)
    path = options.out / "results.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    tmp.replace(path)


def _done(results: dict[str, Any], model: str) -> set[tuple[int, int, str]]:
    return {(r["threads"], r["batch"], r["engine"]) for r in results["records"] if r["model"] == model}


# -- measuring ---------------------------------------------------------------------------------------------------

def _describe(results: dict[str, Any], name: str, spec, group: str, family: str) -> None:
    from effnet.profile import profile

    if name not in results["models"]:
        p = profile(spec)
        results["models"][name] = {"group": group, "family": family, "resolution": p.resolution, "params": p.params,
                                   "macs": p.macs, "activations": p.activations}
        if group != costs.GROUPS[0]:
            results["models"][name]["spec"] = spec.to_dict()


def _record(results, name, spec, threads, batch, engine, times) -> dict[str, Any]:
    record = {"model": name, "engine": engine, "threads": threads, "batch": batch, "resolution": spec.resolution,
              **_stats(times), "sitting": results["sitting"], "load_average": _load(), "measured": _now()}
    results["records"].append(record)
    return record


def measure_model(results: dict[str, Any], name: str, spec, wanted: list[tuple[int, int, str]], *, warmup: int,
                  runs: int, log: Callable[[str], None] = print) -> None:
    """Time every (threads, batch, engine) of `wanted` not yet in `results` for the model of `spec`."""
    import torch

    from effnet.network import ConvNet

    todo = [w for w in wanted if w not in _done(results, name)]
    if not todo:
        return
    torch.manual_seed(0)
    model = ConvNet(spec).eval()
    inputs = {b: torch.randn(b, spec.in_channels, spec.resolution, spec.resolution) for b in {w[1] for w in todo}}
    previous = torch.get_num_threads()
    try:
        for threads, batch, engine in todo:
            if engine != EAGER:
                continue
            torch.set_num_threads(threads)
            with torch.inference_mode():
                times = _timed(partial(model, inputs[batch]), warmup, runs)
            _log(log, _record(results, name, spec, threads, batch, engine, times))
    finally:
        torch.set_num_threads(previous)
    engines = sorted({w[2] for w in todo} - {EAGER})
    for engine in engines:
        _measure_engine(results, name, spec, model, engine, [w for w in todo if w[2] == engine], inputs,
                        warmup=warmup, runs=runs, log=log)


def _measure_engine(results, name, spec, model, engine, todo, inputs, *, warmup, runs, log) -> None:
    from effnet.runtime import export_onnx, load_runtime

    backend = next(b for b, n in ENGINES if n == engine)
    with tempfile.TemporaryDirectory(prefix="effnet-latency-") as tmp:
        path = export_onnx(model, Path(tmp) / f"{name}.onnx")
        for threads in sorted({w[0] for w in todo}):
            runtime = load_runtime(path, backend, "fp32", threads=threads)
            for _, batch, _ in (w for w in todo if w[0] == threads):
                times = _timed(partial(runtime.run, inputs[batch].numpy()), warmup, runs)
                _log(log, _record(results, name, spec, threads, batch, engine, times))


def _log(log: Callable[[str], None], r: dict[str, Any]) -> None:
    log(f"latency: {r['model']} ({r['resolution']} px) {r['engine']}, {r['threads']} thread(s), batch {r['batch']}: "
        f"{fmt_ms(r['mean_s'])} ± {fmt_ms(r['std_s'])} ms ({fmt_ms(r['min_s'])}-{fmt_ms(r['max_s'])})")


def _spec(name: str, options: Options):
    from effnet.registry import get_spec
    from effnet.spec import with_options

    spec = get_spec(name)
    return with_options(spec, resolution=QUICK_RESOLUTION) if options.quick else spec


def _family(name: str) -> str:
    return "ResNet" if name.startswith("resnet") else "EfficientNet"


def latency_part(options: Options, results: dict[str, Any], log: Callable[[str], None] = print) -> None:
    engines = [EAGER, *([e] if (e := fast_engine()) else [])]
    batches = QUICK_BATCHES if options.quick else BATCHES
    warmup, runs = (QUICK_WARMUP, QUICK_RUNS) if options.quick else (WARMUP, RUNS)
    wanted = [(t, b, e) for e in engines for t in thread_counts() for b in batches]
    for name in models(options):
        spec = _spec(name, options)
        _describe(results, name, spec, costs.GROUPS[0], _family(name))
        measure_model(results, name, spec, wanted, warmup=warmup, runs=runs, log=log)
        write(options, results)


def costs_part(options: Options, results: dict[str, Any], log: Callable[[str], None] = print) -> None:
    """Inference latency (batch 1, one thread, eager) and training time of every latency model and every distinct
    compound-vs-single model, in this sitting."""
    from effnet.spec import NetSpec

    warmup, runs = (QUICK_WARMUP, QUICK_RUNS) if options.quick else (WARMUP, RUNS)
    steps = costs.QUICK_TRAIN_STEPS if options.quick else costs.TRAIN_STEPS
    chosen = [(name, _spec(name, options), costs.GROUPS[0], _family(name)) for name in models(options)]
    source = costs.source_models(options.source, options.quick)
    if not source:
        log(f"latency: {options.source / 'results.json'} not found: the costs part has the ImageNet-size models "
            "only (run `effnet experiments compound-vs-single` for the others)")
    chosen += [(name, NetSpec.from_dict(spec), costs.GROUPS[1], "compound-vs-single") for name, spec in source]
    trained = {t["model"] for t in results["training"]}
    for name, spec, group, family in chosen:
        _describe(results, name, spec, group, family)
        measure_model(results, name, spec, [(1, 1, EAGER)], warmup=warmup, runs=runs, log=log)
        if name not in trained:
            batch = costs.QUICK_TRAIN_BATCH if options.quick else costs.TRAIN_BATCH[group]
            times = costs.train_step_times(spec, batch=batch, steps=steps)
            mean = statistics.fmean(times)
            results["training"].append({"model": name, "threads": 1, "batch": batch, "steps": steps,
                                        "warmup": costs.TRAIN_WARMUP, **_stats(times),
                                        "images_per_s": batch / mean, "seconds_per_image": mean / batch,
                                        "sitting": results["sitting"], "load_average": _load(),
                                        "measured": _now()})
            log(f"latency: {name} training, batch {batch}, 1 thread: {batch / mean:.2f} images/s")
        write(options, results)


def run(options: Options, parts: tuple[str, ...] = ("latency", "costs"), *, command: str, report_only: bool = False,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure what `parts` need and is not in `out/results.json` yet, then write report.md and the plots."""
    if report_only:
        results = read_results(options.out)
        if not results:
            raise ExperimentError(f"{options.out / 'results.json'}: not found; run `effnet experiments {NAME}` first "
                                  "(without --report-only)")
    else:
        info = machine()
        results = start(options, info, log)
        results["machine"] = info
        before = len(results["records"]) + len(results["training"])
        results["passes"].append({"command": command, "started": _now(), "load_average_start": _load()})
        write(options, results)
        if "latency" in parts:
            latency_part(options, results, log)
        if "costs" in parts:
            costs_part(options, results, log)
        results["passes"][-1].update(finished=_now(), load_average_end=_load(),
                                     measured=len(results["records"]) + len(results["training"]) - before)
        write(options, results)
    write_report(options.out, results)
    return results


# -- report ----------------------------------------------------------------------------------------------------------

def fmt_ms(seconds: float) -> str:
    """Milliseconds with three or more significant digits."""
    ms = 1e3 * seconds
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}" if ms >= 1 else f"{ms:.3f}"


def cell(record: dict[str, Any] | None) -> str:
    if record is None:
        return "-"
    return (f"{fmt_ms(record['mean_s'])} ± {fmt_ms(record['std_s'])} ({fmt_ms(record['min_s'])}–"
            f"{fmt_ms(record['max_s'])})")


def _find(results: dict[str, Any], model: str, engine: str, threads: int, batch: int) -> dict[str, Any] | None:
    return next((r for r in results["records"] if (r["model"], r["engine"], r["threads"], r["batch"]) ==
                 (model, engine, threads, batch)), None)


def table_models(results: dict[str, Any]) -> list[str]:
    order = {m: i for i, m in enumerate(MODELS + FULL_MODELS)}
    return sorted((n for n, m in results["models"].items() if m["group"] == costs.GROUPS[0]),
                  key=lambda n: order.get(n, len(order)))


def _paper_lines(results: dict[str, Any], engines: list[str]) -> list[str]:
    from effnet.experiments.tables import markdown_table

    md = ["## Table 4: EfficientNet-B1 against ResNet-152", ""]
    pair = [{e: _find(results, m, e, 1, 1) for e in engines} for m in ("resnet152", "efficientnet_b1")]
    if not any(pair[0].values()) or not any(pair[1].values()):
        md += ["Not measured here: needs efficientnet_b1 and resnet152 at their own resolutions (run without "
               "--quick). The paper's ResNet-152 / B1 ratio is "
               f"{PAPER['resnet152']} s / {PAPER['efficientnet_b1']} s = {PAPER['speedup']}x.", ""]
    else:
        rows = [("ResNet-152 (s)", PAPER["resnet152"], *(_s(pair[0][e]) for e in engines)),
                ("EfficientNet-B1 (s)", PAPER["efficientnet_b1"], *(_s(pair[1][e]) for e in engines)),
                ("ResNet-152 / B1", f"{PAPER['speedup']}x", *(_ratio(pair[0][e], pair[1][e]) for e in engines))]
        md += [markdown_table(["1 thread, batch 1, mean", f"paper ({PAPER['cpu']}, {PAPER['setting']})",
                               *(f"{e}, here" for e in engines)], rows), ""]
    md += [f"The paper's second pair, GPipe {PAPER['gpipe']} s against B7 {PAPER['efficientnet_b7']} s "
           f"({PAPER['gpipe_speedup']}x), is not measurable here: GPipe's 557M-parameter AmoebaNet is not in "
           "effnet" + (" (B7's own latency is in the tables below)." if "efficientnet_b7" in results["models"]
                       else "; B7 is measured with --full."), ""]
    return md


def _s(r: dict[str, Any] | None) -> str:
    return "-" if r is None else f"{r['mean_s']:.4f}"


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    return "-" if a is None or b is None else f"{a['mean_s'] / b['mean_s']:.2f}x"


def report(results: dict[str, Any], figures: dict[str, str | None] | None = None) -> str:
    from effnet.experiments.tables import markdown_table

    figures = figures or {}
    info, quick = results.get("machine", {}), results.get("quick")
    isa = info.get("isa", [])
    matrix = "AMX" if "amx_bf16" in isa else "no AMX"
    md = [f"# Latency (Table 4) and which cost predicts time{' (quick: a smoke test, not a result)' if quick else ''}",
          "", f"Generated from `results.json` by `effnet experiments {NAME}`; do not edit by hand.", "",
          f"- CPU: {info.get('cpu', '?')} ({', '.join(isa) or 'no AVX2'}; {matrix}), {info.get('cores', '?')} cores, "
          f"torch {info.get('torch', '?')}"]
    for p in results.get("passes", []):
        new = p.get("measured")
        md.append(f"- `{p['command']}`: {p['started']} to {p.get('finished', '(interrupted)')}"
                  f"{'' if new is None else f', {new} new record(s)'}; load average (1, 5, 15 min) "
                  f"{_load_text(p.get('load_average_start'))} at the start, {_load_text(p.get('load_average_end'))} "
                  "at the end")
    md += _load_warning(results)
    warmup, runs = (QUICK_WARMUP, QUICK_RUNS) if quick else (WARMUP, RUNS)
    md += [f"- Method: each model at its own resolution{f' (all at {QUICK_RESOLUTION} px)' if quick else ''}, "
           "random weights and inputs (they cost the same as trained ones); after "
           f"{warmup} warm-up run(s), {runs} timed runs of one forward pass of the whole batch. torch-eager: the "
           "model in eval mode under `torch.inference_mode`, NCHW fp32."
           + "".join(f" {e}: the model exported to ONNX, run in fp32 with as many intra-op threads." for e in
                     dict.fromkeys(r["engine"] for r in results["records"]) if e != EAGER), ""]
    engines = list(dict.fromkeys(r["engine"] for r in results["records"] if r["model"] in table_models(results)))
    md += _paper_lines(results, engines)
    names = table_models(results)
    threads = sorted({r["threads"] for r in results["records"]})
    batches = sorted({r["batch"] for r in results["records"] if r["model"] in names})
    for engine in engines:
        md += [f"## {engine}", "",
               markdown_table(["model", "res", "params (M)", "GMACs", "activations (M)",
                               *(f"{t} thread{'s' if t > 1 else ''}, batch {b} (ms)" for t in threads
                                 for b in batches)],
                              [(n, m["resolution"], f"{m['params'] / 1e6:.2f}", f"{m['macs'] / 1e9:.3f}",
                                f"{m['activations'] / 1e6:.2f}",
                                *(cell(_find(results, n, engine, t, b)) for t in threads for b in batches))
                               for n in names for m in [results["models"][n]]]), "",
               "Milliseconds per forward pass of the whole batch: mean ± standard deviation (min–max) over the "
               "timed runs.", ""]
    if figures.get("latency"):
        md += [f"![latency vs MACs]({figures['latency']})", ""]
    md += costs.section(results, figures.get("costs"))
    md += ["## Discussion", ""]
    discussion = results.get("discussion")
    md += [line for paragraph in discussion for line in (paragraph, "")] if discussion else [
        "> **Discussion: not written yet.** It is written from the numbers of a full run on a quiet machine: add it "
        "to results.json as `\"discussion\"` (a list of paragraphs) and rerun with `--report-only`."]
    if results.get("earlier"):
        md += ["", f"results.json also keeps {len(results['earlier'])} earlier table(s) measured on another CPU or "
               "with other settings (under \"earlier\"); they are not shown."]
    return "\n".join(md).rstrip() + "\n"


QUIET_LOAD = 0.5
"""A 1-minute load average above this when a pass starts means other work shared the CPU."""


def _load_warning(results: dict[str, Any]) -> list[str]:
    starts = [p["load_average_start"][0] for p in results.get("passes", [])
              if p.get("load_average_start") and p.get("measured") != 0]
    if not starts or max(starts) <= QUIET_LOAD:
        return []
    return [f"- **Loaded machine:** the 1-minute load average was {max(starts):.2f} when a pass started "
            f"({results.get('machine', {}).get('cores', '?')} cores): other work shared the CPU, so these times are "
            "not those of a quiet machine."]


def _load_text(load: list[float] | None) -> str:
    return "-" if not load else ", ".join(f"{v:.2f}" for v in load)


def plot_latency(results: dict[str, Any], path: Path) -> Path | None:
    """Batch-1 latency against MACs, log-log, one panel per thread count, one marker per family, one colour per
    engine."""
    names = table_models(results)
    shown = [r for r in results["records"] if r["model"] in names and r["batch"] == 1]
    if not shown:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    threads = sorted({r["threads"] for r in shown})
    engines = list(dict.fromkeys(r["engine"] for r in shown))
    markers = {"EfficientNet": "o", "ResNet": "s"}
    fig, axes = plt.subplots(1, len(threads), figsize=(6.5 * len(threads), 4.8), squeeze=False)
    for ax, t in zip(axes[0], threads):
        for i, engine in enumerate(engines):
            for family, marker in markers.items():
                rs = [r for r in shown if r["threads"] == t and r["engine"] == engine
                      and results["models"][r["model"]]["family"] == family]
                if rs:
                    ax.scatter([results["models"][r["model"]]["macs"] for r in rs], [1e3 * r["mean_s"] for r in rs],
                               color=f"C{i}", marker=marker, label=f"{family}, {engine}")
                    for r in rs:
                        ax.annotate(r["model"].replace("efficientnet_", ""), (results["models"][r["model"]]["macs"],
                                    1e3 * r["mean_s"]), textcoords="offset points", xytext=(4, 3), fontsize=7)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("MACs per image")
        ax.set_ylabel("latency, batch 1 (ms)")
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{t} thread{'s' if t > 1 else ''}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(f"Inference latency against MACs on {results.get('machine', {}).get('cpu', 'this CPU')}",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(out: Path, results: dict[str, Any]) -> str:
    latency = plot_latency(results, out / "latency_vs_macs.png")
    cost = costs.plot(results, out / "costs.png")
    markdown = report(results, {"latency": latency.name if latency else None, "costs": cost.name if cost else None})
    (out / "report.md").write_text(markdown)
    return markdown


def summary_lines(results: dict[str, Any]) -> list[str]:
    """A few lines for the terminal: the Table 4 ratio and which cost predicts time best."""
    lines = []
    for engine in dict.fromkeys(r["engine"] for r in results["records"]):
        a, b = _find(results, "resnet152", engine, 1, 1), _find(results, "efficientnet_b1", engine, 1, 1)
        if a and b:
            lines.append(f"{engine}: ResNet-152 / B1 = {_ratio(a, b)} at batch 1 on 1 thread (paper: "
                         f"{PAPER['speedup']}x)")
    return lines + costs.best_sentences(costs.correlations(results))


__all__ = ["BATCHES", "FULL_MODELS", "MODELS", "NAME", "Options", "PAPER", "cell", "fast_engine", "fmt_ms",
           "measure_model", "read_results", "report", "run", "start", "summary_lines", "thread_counts",
           "write_report"]

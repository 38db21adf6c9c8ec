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
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from effnet.experiments import costs, fused
from effnet.experiments.latency_report import (
    EAGER,
    FULL_MODELS,
    MODELS,
    NAME,
    PAPER,
    QUICK_RESOLUTION,
    QUICK_RUNS,
    QUICK_WARMUP,
    RUNS,
    WARMUP,
    cell,
    fmt_ms,
    report,
    summary_lines,
    write_report,
)
from effnet.experiments.records import load_average, machine, now
from effnet.experiments.runner import ExperimentError

QUICK_MODELS = ("efficientnet_b0", "resnet50")
BATCHES, QUICK_BATCHES = (1, 32), (1, 2)
ENGINES = (("onnxruntime", "onnxruntime-fp32"), ("openvino", "openvino-fp32"))
"""The fast fp32 engine: the first installed.  ONNX Runtime's fp32 kernels are the fastest fp32 path `effnet bench`
has measured for B0 on the CPUs it ran on (about 1.8x torch.compile on an AVX-512 EPYC); OpenVINO pinned to f32 is
the fallback."""


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


def _stats(times: list[float]) -> dict[str, Any]:
    return {"mean_s": statistics.fmean(times), "std_s": statistics.stdev(times) if len(times) > 1 else 0.0,
            "min_s": min(times), "max_s": max(times), "times_s": [round(t, 6) for t in times]}


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
              **_stats(times), "sitting": results["sitting"], "load_average": load_average(),
              "measured": now(seconds=True)}
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
                times = costs.timed(partial(model, inputs[batch]), warmup, runs)
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
                times = costs.timed(partial(runtime.run, inputs[batch].numpy()), warmup, runs)
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
                                        "sitting": results["sitting"], "load_average": load_average(),
                                        "measured": now(seconds=True)})
            log(f"latency: {name} training, batch {batch}, 1 thread: {batch / mean:.2f} images/s")
        write(options, results)


def run(options: Options, parts: tuple[str, ...] = ("latency", "costs", "fused"), *, command: str,
        report_only: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure what `parts` need and is not in `out/results.json` yet, then write report.md and the plots."""
    if report_only:
        results = read_results(options.out)
        if not results:
            raise ExperimentError(f"{options.out / 'results.json'}: not found; run `effnet experiments {NAME}` first "
                                  "(without --report-only)")
    else:
        info = machine()
        table4 = [p for p in parts if p != "fused"]
        if table4:
            kept = read_results(options.out).get("fused")  # its own sitting: kept when Table 4 starts anew
            results = start(options, info, log)
            if kept:
                results["fused"] = kept
            results["machine"] = info
            before = len(results["records"]) + len(results["training"])
            results["passes"].append({"command": command, "started": now(seconds=True),
                                      "load_average_start": load_average()})
            write(options, results)
            if "latency" in parts:
                latency_part(options, results, log)
            if "costs" in parts:
                costs_part(options, results, log)
            results["passes"][-1].update(finished=now(seconds=True), load_average_end=load_average(),
                                         measured=len(results["records"]) + len(results["training"]) - before)
            write(options, results)
        else:
            results = read_results(options.out) or _fresh(options, info, [])
        if "fused" in parts:
            fused.measure(results, info, quick=options.quick, command=command, write=partial(write, options, results),
                          log=log)
    write_report(options.out, results)
    return results


__all__ = ["BATCHES", "EAGER", "FULL_MODELS", "MODELS", "NAME", "Options", "PAPER", "QUICK_BATCHES", "QUICK_MODELS",
           "QUICK_RESOLUTION", "QUICK_RUNS", "QUICK_WARMUP", "RUNS", "WARMUP", "cell", "fast_engine", "fmt_ms",
           "measure_model", "read_results", "report", "run", "start", "summary_lines", "thread_counts",
           "write_report"]

"""Table 4's report: report.md and the plots of `effnet experiments latency`, generated from results.json alone,
and the terminal summary; with the facts both the measurement (`effnet.experiments.latency`) and the report state:
the models of the table, the paper's numbers and how many runs are timed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from effnet.experiments import costs, fused, tables

NAME = "latency"
MODELS = ("efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "resnet50", "resnet101",
          "resnet152")
FULL_MODELS = ("efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7")
QUICK_RESOLUTION = 64
WARMUP, RUNS = 3, 20
QUICK_WARMUP, QUICK_RUNS = 1, 3
EAGER = "torch-eager"
PAPER = {"cpu": "Intel Xeon CPU E5-2690", "setting": "1 core, batch 1, mean of 20 runs",
         "efficientnet_b1": 0.098, "resnet152": 0.554, "speedup": 5.7,
         "gpipe": 19.0, "efficientnet_b7": 3.1, "gpipe_speedup": 6.1}
"""Tan & Le (2019), Table 4, seconds."""


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
    md += tables.discussion(results, "a full run on a quiet machine")
    md += ["", *fused.section_lines(results)] if results.get("fused") else []
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




__all__ = ["EAGER", "FULL_MODELS", "MODELS", "NAME", "PAPER", "QUICK_RESOLUTION", "QUICK_RUNS", "QUICK_WARMUP", "RUNS",
           "WARMUP", "cell", "fmt_ms", "plot_latency", "report", "summary_lines", "table_models", "write_report"]

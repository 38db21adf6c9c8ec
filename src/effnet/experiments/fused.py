"""EfficientNetV2's Table 3 on this CPU: Fused-MBConv in B4's first 0, 3, 5 or 7 stages, and V2-S against B4/B5.

The V2 paper (Tan & Le 2021, Table 3) replaces MBConv by Fused-MBConv in B4's early stages and reports that fusing
stages 1-3 trains faster on TPU and V100 (362 against 262 images/s/core on TPU) for a few more parameters, while
fusing everything is slower and worse.  Here the same four B4 variants (`effnet.scaling.fuse_stages`), V2-S, B4 and
B5 are measured on this CPU in one sitting: params, MACs and activations (`effnet.profile`, at each model's own
resolution), batch-1 inference latency on one thread in torch eager and ONNX Runtime (fp32) at that resolution, and
training images/s on one thread at batch 8 and half each model's training resolution (so that the whole table fits
in tens of minutes on one core) with effnet's CPU training kernels (training path "auto", the default of `effnet
train`) and with ATen's kernels only (training path "aten", `effnet train --no-own-kernels`).

Measurements are interleaved: every round times every model on every measure once (a few runs each), in an order
that rotates from round to round, so that a change of load hits all models alike; ratios to B4 are taken within a
round and summarised over rounds.  Every record keeps the load average; results.json is written after each round,
and a rerun continues with the rounds still missing.
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from effnet.cpu import cpu_flag_list
from effnet.experiments.records import load_average, now

BASE, QUICK_BASE = "efficientnet_b4", "efficientnet_b0"
FUSED = (0, 3, 5, 7)
"""How many of the base's first stages are fused: none, 1-3, 1-5, 1-7 (Table 3's rows)."""
QUICK_FUSED = (0, 3)
KERNEL3 = 3
"""Also measured: stages 1-3 fused with 3x3 kernels (stage 3's 5x5 made 3x3).  Its counts (19.9M params, 7.34
GMACs) are Table 3's stages 1-3 row (20.0M, 7.5B) where those with the kernels kept (20.9M, 9.65 GMACs) are not,
while the kept kernels match its 1-5 and 1-7 rows; the paper does not say which it used."""
PEERS, QUICK_PEERS = ("efficientnetv2_s", "efficientnet_b5"), ("efficientnetv2_b0",)
"""Compared with the base on the same measures (V2-S against B4 and B5)."""
ROUNDS, QUICK_ROUNDS = 26, 2
INFER_RUNS, TRAIN_STEPS = 3, 1
"""Timed forward passes and training steps of each model per round, after one untimed one before the first."""
TRAIN_BATCH, QUICK_TRAIN_BATCH = 8, 2
TRAIN_FRACTION = 0.5
"""Training runs at this fraction of each model's training resolution, rounded to a multiple of 8."""
QUICK_RESOLUTION = 32
EAGER, ORT, TRAIN_OWN, TRAIN_ATEN = "torch-eager", "onnxruntime-fp32", "train-effnet", "train-aten"
MEASURES = (EAGER, ORT, TRAIN_OWN, TRAIN_ATEN)
PATHS = {TRAIN_OWN: "auto", TRAIN_ATEN: "aten"}
PAPER = {0: (19.3, 4.5, 82.8, 262, 155), 3: (20.0, 7.5, 83.1, 362, 216), 5: (43.4, 21.3, 83.1, 327, 223),
         7: (132.0, 34.4, 81.7, 254, 206)}
"""Tan & Le (2021), Table 3, B4 with Fused-MBConv in stages 1 to k: params (M), FLOPs (billions of multiply-adds),
ImageNet top-1 (%), training images/s per TPUv3 core, training images/s on a V100."""


@dataclass(frozen=True)
class Model:
    name: str
    spec: Any  # NetSpec at the inference resolution
    train_resolution: int
    fused: int | None  # stages of the base fused, None for a peer
    kernel: int | None = None  # the fused stages' kernel when it was changed


def models(quick: bool) -> list[Model]:
    """The base with 0..7 fused stages, then the peers (V2-S, B5), each at its own resolution (all at 32 px with
    --quick)."""
    from effnet.families.efficientnet_v2 import VARIANTS_V2, train_resolution
    from effnet.registry import get_spec
    from effnet.scaling import fuse_stages
    from effnet.spec import with_options

    def train_res(name: str, spec) -> int:
        if quick:
            return QUICK_RESOLUTION
        full = train_resolution(name) if name in VARIANTS_V2 else spec.resolution
        return max(8, int(full * TRAIN_FRACTION / 8 + 0.5) * 8)

    def at(spec):
        return with_options(spec, resolution=QUICK_RESOLUTION) if quick else spec

    base = get_spec(QUICK_BASE if quick else BASE)
    out = [Model(s.name, at(s), train_res(base.name, base), k)
           for k in (QUICK_FUSED if quick else FUSED) for s in [fuse_stages(base, k)]]
    out += [Model(n, at(s), train_res(n, s), None) for n in (QUICK_PEERS if quick else PEERS)
            for s in [get_spec(n)]]
    if not quick:
        fused = fuse_stages(base, KERNEL3)
        spec = replace(fused, name=f"{fused.name}_k3", stages=tuple(
            replace(st, kernel=3) if i < KERNEL3 else st for i, st in enumerate(fused.stages)))
        out.append(Model(spec.name, spec, train_res(base.name, base), KERNEL3, 3))
    return out


class _Timed:
    """One model's four measures, built once and kept for every round."""

    def __init__(self, m: Model, batch: int, workdir: Path, engine: bool) -> None:
        import torch

        from effnet.network import ConvNet
        from effnet.optimize import fuse_bn_silu_for_training
        from effnet.spec import with_options

        torch.manual_seed(0)
        self.eager = ConvNet(m.spec).eval()
        self.x = torch.randn(1, m.spec.in_channels, m.spec.resolution, m.spec.resolution)
        self.runtime = None
        if engine:
            from effnet.runtime import export_onnx, load_runtime

            path = export_onnx(self.eager, workdir / f"{m.name}.onnx")
            self.runtime = load_runtime(path, "onnxruntime", "fp32", threads=1)
            self.x_np = self.x.numpy()
        train_spec = with_options(m.spec, resolution=m.train_resolution)
        self.train = ConvNet(train_spec)  # the settings of `effnet train`: fused BN+SiLU, channels_last
        fuse_bn_silu_for_training(self.train)
        self.train.train().to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(self.train.parameters(), lr=1e-3, momentum=0.9)
        self.images = torch.randn(batch, m.spec.in_channels, m.train_resolution, m.train_resolution).contiguous(
            memory_format=torch.channels_last)
        self.labels = torch.randint(0, max(1, m.spec.num_classes), (batch,))

    def call(self, measure: str) -> Callable[[], object]:
        import torch
        import torch.nn.functional as F

        from effnet.layers import set_training_path

        if measure == EAGER:
            def infer():
                with torch.inference_mode():
                    return self.eager(self.x)
            return infer
        if measure == ORT:
            return lambda: self.runtime.run(self.x_np)
        set_training_path(self.train, PATHS[measure])

        def step():
            F.cross_entropy(self.train(self.images), self.labels).backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return step


def _sitting(info: dict[str, Any]) -> dict[str, Any]:
    return {"cpu": info["cpu"], "isa": list(info["isa"]), "cores": info["cores"]}


def _fresh(info: dict[str, Any], quick: bool) -> dict[str, Any]:
    return {"sitting": _sitting(info), "quick": quick,
            "machine": {**info, "flags": cpu_flag_list()},
            "settings": {"rounds": QUICK_ROUNDS if quick else ROUNDS, "infer_runs": INFER_RUNS,
                         "train_steps": TRAIN_STEPS, "train_batch": QUICK_TRAIN_BATCH if quick else TRAIN_BATCH,
                         "train_fraction": None if quick else TRAIN_FRACTION, "threads": 1},
            "models": {}, "records": [], "passes": []}


def start(results: dict[str, Any], info: dict[str, Any], quick: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """results["fused"] to continue (with more rounds when ROUNDS grew), or a new one when it was measured on another
    CPU or with other settings (the old one kept under results["fused"]["earlier"])."""
    old, fresh = results.get("fused"), _fresh(info, quick)
    if old and old.get("sitting") == _sitting(info) and old.get("quick") == quick and \
            _but_rounds(old.get("settings", {})) == _but_rounds(fresh["settings"]):
        old["settings"]["rounds"] = max(old["settings"]["rounds"], fresh["settings"]["rounds"])  # more rounds: added
        return old
    if old:
        log("latency: the fused section of results.json was measured on another CPU or with other settings; this run "
            "starts a new one (the earlier one is kept under \"earlier\")")
        fresh["earlier"] = [*old.pop("earlier", []), old]
    results["fused"] = fresh
    return fresh


def _but_rounds(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k != "rounds"}


def _describe(section: dict[str, Any], m: Model) -> None:
    from effnet.profile import count_macs, profile

    if m.name not in section["models"]:
        p = profile(m.spec)
        section["models"][m.name] = {"fused": m.fused, "fused_kernel": m.kernel, "resolution": p.resolution,
                                     "params": p.params, "macs": p.macs, "activations": p.activations,
                                     "train_resolution": m.train_resolution,
                                     "train_macs": count_macs(m.spec, m.train_resolution),
                                     "spec": m.spec.to_dict()}


def measure(results: dict[str, Any], info: dict[str, Any], *, quick: bool, command: str,
            write: Callable[[], None], log: Callable[[str], None] = print) -> int:
    """Time every model on every measure, round by round, until the section has all its rounds; returns the
    records added."""
    from effnet.experiments import costs
    from effnet.runtime import available_backends

    section = start(results, info, quick, log)
    chosen = models(quick)
    for m in chosen:
        _describe(section, m)
    rounds = section["settings"]["rounds"]
    done = {r["round"] for r in section["records"]}
    todo = [r for r in range(rounds) if r not in done]
    section["passes"].append({"command": command, "started": now(seconds=True), "load_average_start": load_average()})
    write()
    if not todo:
        section["passes"][-1].update(finished=now(seconds=True), load_average_end=load_average(), measured=0)
        write()
        return 0
    engine = "onnxruntime" in available_backends()
    if not engine:
        log("latency: ONNX Runtime is not installed; the fused section measures torch eager and training only "
            "(pip install 'effnet[export]')")
    measures = [m for m in MEASURES if engine or m != ORT]
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    added = 0
    try:
        with tempfile.TemporaryDirectory(prefix="effnet-fused-") as tmp:
            built = {m.name: _Timed(m, section["settings"]["train_batch"], Path(tmp), engine) for m in chosen}
            for m in chosen:  # one untimed run of everything before the first round
                for what in measures:
                    built[m.name].call(what)()
            for r in todo:
                shift = r % len(chosen)
                for m in chosen[shift:] + chosen[:shift]:
                    for what in measures:
                        train = what in PATHS
                        n = TRAIN_STEPS if train else INFER_RUNS
                        times = costs.timed(built[m.name].call(what), 0, n)
                        section["records"].append({"model": m.name, "measure": what, "round": r,
                                                   "times_s": [round(t, 6) for t in times],
                                                   "mean_s": statistics.fmean(times), "load_average": load_average(),
                                                   "measured": now(seconds=True)})
                        added += 1
                log(f"latency: fused round {r + 1} of {rounds} done (load average {load_average()})")
                write()
    finally:
        torch.set_num_threads(previous)
    section["passes"][-1].update(finished=now(seconds=True), load_average_end=load_average(), measured=added)
    write()
    return added


# -- the report section ----------------------------------------------------------------------------------------

def _by_round(section: dict[str, Any], model: str, measure: str) -> dict[int, float]:
    """Per round, the time of one forward pass or one training step, in seconds."""
    return {r["round"]: r["mean_s"] for r in section["records"] if r["model"] == model and r["measure"] == measure}


def speed(section: dict[str, Any], model: str, measure: str) -> float | None:
    """The median over rounds of one measure: ms per inference, or images/s in training."""
    t = list(_by_round(section, model, measure).values())
    if not t:
        return None
    mid = statistics.median(t)
    return section["settings"]["train_batch"] / mid if measure in PATHS else 1e3 * mid


def ratios(section: dict[str, Any], model: str, base: str, measure: str) -> list[float]:
    """Per round, how many times faster `model` is than `base` (>1: faster): inference latency of base / model,
    training images/s of model / base."""
    a, b = _by_round(section, model, measure), _by_round(section, base, measure)
    return [b[r] / a[r] for r in sorted(a) if r in b]


def _ratio_text(rs: list[float]) -> str:
    if not rs:
        return "-"
    return f"{statistics.median(rs):.2f}x" + (f" ({min(rs):.2f}–{max(rs):.2f})" if len(rs) > 1 else "")


def verdict(rs: list[float]) -> str:
    """"faster" when every round has the model faster, "slower" when every round has it slower, else "no clear
    difference" (the rounds disagree)."""
    if not rs:
        return "not measured"
    return "faster" if min(rs) > 1 else "slower" if max(rs) < 1 else "no clear difference"


def _counted(rs: list[float]) -> str:
    return f"{verdict(rs)}: faster in {sum(r > 1 for r in rs)} of {len(rs)} rounds" if rs else verdict(rs)


def _base(section: dict[str, Any]) -> str | None:
    return next((n for n, m in section["models"].items() if m["fused"] == 0), None)


def _label(m: dict[str, Any]) -> str:
    kernel = m.get("fused_kernel")
    return _stages(m["fused"]) + (f" ({kernel}x{kernel} kernels)" if kernel else "")


def _stages(k: int | None) -> str:
    return "-" if k is None else "none" if k == 0 else f"1–{k}"


def section_lines(results: dict[str, Any]) -> list[str]:
    from effnet.experiments.tables import markdown_table

    section = results.get("fused")
    if not section:
        return []
    base = _base(section)
    info, s = section["machine"], section["settings"]
    md = ["## EfficientNetV2's Table 3 on this CPU: Fused-MBConv in B4's early stages, and V2-S against B4 and B5"
          + (" (quick: a smoke test, not a result)" if section.get("quick") else ""), "",
          f"- CPU: {info.get('cpu', '?')}, {info.get('cores', '?')} cores, torch {info.get('torch', '?')}; flags "
          f"(lscpu): {' '.join(info.get('flags', [])) or '?'}"]
    for p in section["passes"]:
        md.append(f"- `{p['command']}`: {p['started']} to {p.get('finished', '(interrupted)')}, "
                  f"{p.get('measured', 0)} new record(s); load average (1, 5, 15 min) "
                  f"{', '.join(f'{v:.2f}' for v in p.get('load_average_start', [])) or '-'} at the start, "
                  f"{', '.join(f'{v:.2f}' for v in p.get('load_average_end', [])) or '-'} at the end")
    loads = [r["load_average"][0] for r in section["records"] if r.get("load_average")]
    if loads and max(loads) > 0.5:
        md.append(f"- **Loaded machine:** the 1-minute load average was {min(loads):.2f} to {max(loads):.2f} while "
                  f"these were measured on {info.get('cores', '?')} cores: other work shared the CPU, so the times "
                  "are not those of a quiet machine; the ratios, measured round by round in the same conditions, "
                  "are what to read.")
    md += [f"- Method: Fused-MBConv replaces MBConv in the first k stages (`effnet.scaling.fuse_stages`: kernel, "
           "stride, channels, repeats and expand ratio kept, squeeze-excitation dropped as in V2's fused stages). "
           "Params, MACs and activations at each model's own resolution. Inference: batch 1, one thread, at that "
           "resolution, torch eager (eval, `inference_mode`, NCHW fp32) and ONNX Runtime fp32 on one intra-op "
           "thread. Training: one thread, batch "
           f"{s['train_batch']}, " + (f"at {s['train_fraction']:g} of each model's training resolution (rounded "
                                      "to a multiple of 8)" if s.get("train_fraction") else "at the quick size")
           + ", SGD with momentum, `effnet train`'s settings (channels_last, fused BN+SiLU), with effnet's CPU "
           "training kernels (training path \"auto\", the default) and with ATen's only (\"aten\"). "
           f"{s['rounds']} interleaved rounds (the order rotating), each timing {s['infer_runs']} forward pass(es) "
           f"and {s['train_steps']} training step(s) per model and measure after one untimed one; a cell is the "
           "median over rounds, a ratio the median (min–max) of the per-round ratios.", ""]
    names = list(section["models"])
    if base:
        rows = []
        for n in names:
            m = section["models"][n]
            if m["fused"] is None:
                continue
            paper = None if section.get("quick") else PAPER.get(m["fused"])  # the paper's rows are B4's
            rows.append((_label(m), *(paper[:3] if paper else ("-",) * 3),
                         f"{m['params'] / 1e6:.1f}", f"{m['macs'] / 1e9:.2f}", f"{m['activations'] / 1e6:.1f}",
                         *((paper[3], paper[4], f"{paper[4] / PAPER[0][4]:.2f}x") if paper else ("-",) * 3)))
        md += ["### The four variants: the paper's figures and the counts here", "",
               markdown_table(["fused stages", "paper: params (M)", "paper: GMACs (its \"FLOPs\")", "paper: top-1 (%)",
                               "params (M)", "GMACs", "activations (M)", "paper: TPU images/s/core",
                               "paper: V100 images/s", "paper: V100 / none"], rows), "",
               "The paper's columns are Table 3's as published (its FLOPs are multiply-adds); params, MACs and "
               "activations are counted here by `effnet.profile` at B4's 380 px.", ""]
    md += ["### Measured on this CPU", "",
           markdown_table(["model", "fused stages", "res", "params (M)", "GMACs", "activations (M)",
                           "eager, batch 1 (ms)", "ONNX Runtime, batch 1 (ms)", "train res",
                           "train, effnet kernels (images/s)", "train, ATen (images/s)"],
                          [(n, _label(m), m["resolution"], f"{m['params'] / 1e6:.1f}",
                            f"{m['macs'] / 1e9:.2f}", f"{m['activations'] / 1e6:.1f}",
                            *(_num(speed(section, n, w)) for w in (EAGER, ORT)), m["train_resolution"],
                            *(_num(speed(section, n, w)) for w in (TRAIN_OWN, TRAIN_ATEN)))
                           for n in names for m in [section["models"][n]]]), ""]
    if base:
        md += [f"### Speed relative to {base} (>1: faster; median and range over rounds)", "",
               markdown_table(["model", "eager inference", "ONNX Runtime inference", "training, effnet kernels",
                               "training, ATen", "paper: V100 training"],
                              [(n, *(_ratio_text(ratios(section, n, base, w)) for w in MEASURES),
                                f"{PAPER[k][4] / PAPER[0][4]:.2f}x" if (k := section["models"][n]["fused"]) in PAPER
                                and not section.get("quick") else "-")
                               for n in names if n != base]), "",
               "Inference ratios are the base's latency over the model's; training ratios the model's images/s over "
               "the base's, each model at its own training resolution.", ""]
        md += [*answer_lines(section), ""]
    paragraphs = section.get("discussion")
    md += ["### What this says", "", *(line for p in paragraphs for line in (p, ""))] if paragraphs else \
        ["> **Not discussed yet.** The paragraphs are written from the numbers: add them to results.json as "
         "`\"fused\": {\"discussion\": [...]}` and rerun with `--report-only`.", ""]
    return md


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def answer_lines(section: dict[str, Any]) -> list[str]:
    """The plain answer, from the numbers: does fusing the early stages make training faster here, with effnet's
    kernels and with ATen's, and how do the other variants and V2-S fare."""
    base = _base(section)
    if base is None:
        return []
    lines = ["### The answer, from these numbers", ""]
    for n, m in section["models"].items():
        if n == base:
            continue
        what = (f"Fused-MBConv in stages {_label(m)}" if m["fused"] is not None else n)
        own, aten = ratios(section, n, base, TRAIN_OWN), ratios(section, n, base, TRAIN_ATEN)
        eager, ort = ratios(section, n, base, EAGER), ratios(section, n, base, ORT)
        lines.append(f"- {what} against {base}: training images/s {_ratio_text(own)} with effnet's kernels "
                     f"({_counted(own)}) and {_ratio_text(aten)} with ATen's ({_counted(aten)}); batch-1 inference "
                     f"{_ratio_text(eager)} in eager ({_counted(eager)}) and {_ratio_text(ort)} in ONNX Runtime "
                     f"({_counted(ort)}).")
    return lines


__all__ = ["BASE", "EAGER", "FUSED", "MEASURES", "ORT", "PAPER", "PEERS", "TRAIN_ATEN", "TRAIN_OWN", "Model",
           "answer_lines", "measure", "models", "ratios", "section_lines", "speed", "start", "verdict"]

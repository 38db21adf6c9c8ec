"""Speed, memory and accuracy-change benchmarks for docs/RESULTS.md ("Speed and memory"), one command:

    .venv/bin/python benchmarks/run.py            # or: make bench   (15-20 min on 2 shared cores)
    .venv/bin/python benchmarks/run.py --quick    # a few-minute smoke run at 64 px (writes results/quick/)

Sections (each prints a table and writes JSON under benchmarks/results/):
  infer     EfficientNet-B0 at 224, batch 1 and 32: effnet's paths vs every peer installed (effnet.bench.PEERS)
  accuracy  pretrained Lite0: top-1 agreement of every lossy path with eager fp32 on real photos
  accuracy_fmnist  the Fashion-MNIST fine-tuned Lite0: test top-1 under every path, change vs eager fp32
  train     B0 at 224 batch 16, and B0 at 32 px batch 128: effnet vs timm (fp32, and bf16 at the same settings)
  train_speed  the experiments' models and B0: effnet train's step vs the step with ATen's convolutions only and timm
            (`benchmarks/train_loop.py`: `effnet train` on Fashion-MNIST as a fraction of its bare step)

Every speed is a ratio against peers timed in the same run, interleaved (see effnet.bench): the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# On a shared machine OpenMP's default active waiting makes torch's 2 threads wait a scheduler tick at every
# parallel-region barrier whenever another process holds a core: B0 bs1 ran at ~2 img/s instead of ~10 here.
# Passive waiting must be chosen before torch loads libgomp.  ONNX Runtime and OpenVINO use their own pools.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the op-class profile (section ops) stays quiet on CPU-only machines

import torch  # noqa: E402

from effnet.allocator import keep_freed_memory  # noqa: E402
from effnet.bench import PEERS, TRAIN_PEERS, run_bench  # noqa: E402
from effnet.cli.bench import format_report  # noqa: E402
from effnet.errors import EffnetError  # noqa: E402
from effnet.report import format_table, markdown_table  # noqa: E402

RESULTS = Path(__file__).parent / "results"
QUICK_RESULTS = RESULTS / "quick"  # --quick writes here, so a smoke run never replaces the recorded results
# channels_last alone and compile-bf16 are left out of the full run to keep it near 15 minutes (each compile costs
# a minute or two per batch size on this machine); `effnet bench --paths ...` runs them.
INFER_PATHS = ("eager", "folded", "compile", "bf16", "openvino-bf16", "openvino-int8", "onnxruntime-int8")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


_out = RESULTS


def _save(name: str, data: dict, text: str) -> None:
    _out.mkdir(parents=True, exist_ok=True)
    (_out / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    (_out / f"{name}.txt").write_text(text + "\n")
    print(text + "\n", flush=True)


def infer(quick: bool) -> None:
    from effnet.data.calibration import calibration_images

    res = 64 if quick else None
    calibration = calibration_images("efficientnet_b0", 64, res)
    report = run_bench("efficientnet_b0", batches=(1, 32) if not quick else (1, 4), mode="infer", paths=INFER_PATHS,
                       peers=PEERS, resolution=res,  # every peer; one not installed is skipped with a note
                       repeats=2 if quick else 4, calibration=calibration, log=log)
    _save("infer_b0", report.to_dict(), format_report(report))


def accuracy(quick: bool) -> None:
    """Lite0 with its bundled ImageNet weights; evaluation photos are disjoint from the calibration photos."""
    import effnet
    from effnet.agreement import measure_agreement
    from effnet.data.calibration import calibration_images, photo_batch
    from effnet.optimize import to_bf16
    from effnet.runtime import load_runtime

    name = "efficientnet_lite0"
    model = effnet.create_model(name, pretrained=True).eval()
    images = photo_batch(name, "evaluation", views_per_photo=2 if quick else 10)
    calibration = calibration_images(name, 16 if quick else 64)
    log(f"accuracy: {len(images)} evaluation views, {len(calibration)} calibration views")
    paths = {
        "bf16 (torch eager)": to_bf16(model),
        "openvino-bf16": load_runtime(model, "openvino", "bf16"),
        "openvino-int8": load_runtime(model, "openvino", "int8", calibration=calibration),
        "onnxruntime-int8": load_runtime(model, "onnxruntime", "int8", calibration=calibration),
        "onnxruntime fp32": load_runtime(model, "onnxruntime", "fp32"),
        "openvino fp32": load_runtime(model, "openvino", "fp32"),
    }
    rows = measure_agreement(model, paths, images)
    table = format_table(
        ["path", "views", "top-1 agree %", "fp32 top-1 in top-5 %", "max |logit err|", "|d top-1| <= pp",
         "confident views", "agree % (confident)"],
        [(a.path, a.images, 100 * a.top1_agreement, 100 * a.top5_contains_fp32_top1, a.max_abs_logit_error,
          a.bound_top1_change_pp, a.confident_images, 100 * a.confident_top1_agreement) for a in rows],
        title=f"{name} (pretrained): lossy paths vs eager fp32 on {len(images)} views of real photos "
              "(scikit-image/scikit-learn; calibration on other photos)")
    _save("accuracy_lite0", {"model": name, "views": len(images), "results": [a.__dict__ for a in rows]}, table)


FMNIST_RUN = Path(os.environ.get("EFFNET_FMNIST_RUN", "runs/fmnist_lite0_pretrained_64"))
FMNIST_PATHS = (("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"),
                ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"))


def accuracy_fmnist(quick: bool) -> None:
    """The Fashion-MNIST fine-tuned Lite0 (docs/RESULTS.md "Training") on the 10 000 test images under every path:
    real labels, so the top-1 change is measured directly.  int8 calibrates on 64 train-split images."""
    from effnet.train import evaluate_checkpoint

    if not FMNIST_RUN.is_dir():
        log(f"accuracy_fmnist: skipped, no run folder {FMNIST_RUN}; run first (about 12 min on 2 cores): effnet train "
            "fashion-mnist --model efficientnet_lite0 --pretrained --resolution 64 --batch-size 64 --epochs 1 "
            f"--augment none --crop-scale 0.5 1 --backbone-lr-scale 0.1 --out {FMNIST_RUN} (or set EFFNET_FMNIST_RUN)")
        return
    rows, results = [], []
    for backend, precision in FMNIST_PATHS:
        log(f"accuracy_fmnist: {backend} {precision}")
        r = evaluate_checkpoint(str(FMNIST_RUN), "fashion-mnist", split="test", subset=500 if quick else None,
                                workers=1, runtime=backend, precision=precision)
        results.append({"runtime": backend, "precision": precision, "images": r["raw"].images,
                        "raw_top1": r["raw"].top1, "ema_top1": r["ema"].top1 if r["ema"] else None})
    base = results[0]
    for res in results:
        res["raw_delta_pp"] = res["raw_top1"] - base["raw_top1"]
        res["ema_delta_pp"] = None if res["ema_top1"] is None else res["ema_top1"] - base["ema_top1"]
        rows.append((f"{res['runtime']} {res['precision']}", res["images"], res["raw_top1"], res["raw_delta_pp"],
                     res["ema_top1"], res["ema_delta_pp"]))
    table = format_table(["path", "test images", "top-1 %", "change pp", "EMA top-1 %", "EMA change pp"], rows,
                         title=f"{FMNIST_RUN.name}: Fashion-MNIST test top-1 under each inference path "
                               "(change vs eager torch fp32)")
    _save("accuracy_fmnist", {"model": FMNIST_RUN.name, "kind": "labelled", "results": results}, table)


OTHER_OPS = "other (SE, SiLU, pool, adds, ...)"
OPS_HEADERS = ["op class", "torch fp32 ms", "onnxruntime fp32 ms", "torch/ort", "torch GMAC/s", "ort GMAC/s",
               "openvino bf16 ms", "openvino bf16 GMAC/s"]
OPS_KEYS = ["op", "torch_ms", "ort_ms", "ratio", "torch_gmacs", "ort_gmacs", "ov_bf16_ms", "ov_bf16_gmacs"]


def _conv_kind(weight_shape) -> str:
    """Op class of a convolution from its weight shape (out, in per group, kh, kw)."""
    if len(weight_shape) != 4:
        return OTHER_OPS
    if weight_shape[2] == 1:
        return "pointwise 1x1 conv"
    return "depthwise conv" if weight_shape[1] == 1 else "full conv (stem)"


def _conv_macs(model, x: torch.Tensor) -> tuple[dict[str, float], float]:
    """MACs per batch of each convolution class (the SE blocks' 1x1 products run as matrix products: 'other'),
    and the bytes per image every convolution must read (its input) and write (its output) in fp32."""
    macs: dict[str, float] = {}
    elements = [0]

    def count(module, inputs, output):
        kind = _conv_kind(module.weight.shape)
        macs[kind] = macs.get(kind, 0.0) + output.numel() * module.weight[0].numel()
        elements[0] += inputs[0].numel() + output.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        model(x)
    for hook in hooks:
        hook.remove()
    return macs, 4.0 * elements[0] / x.shape[0]


def _memory_bandwidth() -> float:
    """Bytes/s of a 256 MB copy (read + write) on torch's threads, median of 8: the DRAM roofline's slope."""
    src = torch.randn(64 * 1024 * 1024)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(8):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return 2 * 4 * src.numel() / sorted(times)[len(times) // 2]


def _torch_op_times(model, x: torch.Tensor, iters: int) -> dict[str, float]:
    """ms per batch by op class, from the profiler's self-CPU times."""
    from torch.profiler import profile

    with torch.inference_mode():
        model(x)
        with profile(record_shapes=True) as prof:
            for _ in range(iters):
                model(x)
    times: dict[str, float] = {}
    for event in prof.events():
        if not event.name.startswith("aten::") or event.self_cpu_time_total <= 0:
            continue
        kind = _conv_kind(event.input_shapes[1]) if event.name == "aten::mkldnn_convolution" else OTHER_OPS
        times[kind] = times.get(kind, 0.0) + event.self_cpu_time_total / 1000 / iters
    return times


def _ort_op_times(events: list[dict], runs: int) -> dict[str, float]:
    """ms per batch by op class from an ONNX Runtime profile (Conv, FusedConv and NchwcConv nodes by weight shape)."""
    times: dict[str, float] = {}
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        args = event.get("args", {})
        kind = OTHER_OPS
        if "Conv" in args.get("op_name", ""):
            shapes = [next(iter(d.values())) for d in args.get("input_type_shape", [])]
            kind = _conv_kind(shapes[1]) if len(shapes) > 1 else OTHER_OPS
        times[kind] = times.get(kind, 0.0) + event["dur"] / 1000 / runs
    return times


def _openvino_op_times(model, x: torch.Tensor, iters: int) -> dict[str, float]:
    """ms per batch by op class of OpenVINO bf16 (AMX), from its per-node performance counters."""
    import openvino

    from effnet.runtime import _to_openvino

    ov_model = _to_openvino(model, x.shape[-1])
    ov_model.reshape({ov_model.inputs[0]: openvino.PartialShape(list(x.shape))})
    compiled = openvino.Core().compile_model(ov_model, "CPU", {
        "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": torch.get_num_threads(),
        "INFERENCE_PRECISION_HINT": "bf16", "PERF_COUNT": True})
    request = compiled.create_infer_request()
    request.infer(x.numpy())
    times: dict[str, float] = {}
    for _ in range(iters):
        request.infer(x.numpy())
        for node in request.get_profiling_info():
            if node.node_type == "GroupConvolution":
                kind = "depthwise conv"
            elif node.node_type == "Convolution":
                kind = "pointwise 1x1 conv" if "1x1" in node.exec_type else "full conv (stem)"
            else:
                kind = OTHER_OPS
            times[kind] = times.get(kind, 0.0) + node.real_time.total_seconds() * 1000 / iters
    return times


def ops(quick: bool) -> None:
    """Where the fp32 time goes: torch's best eager path (folded, channels_last) against ONNX Runtime, by op
    class, at B0 224 batch 32 (quick: 64 px batch 4)."""
    import tempfile

    import onnxruntime

    import effnet
    from effnet.optimize import optimize_for_inference
    from effnet.runtime import export_onnx

    res, batch, iters = (64, 4, 2) if quick else (224, 32, 3)
    model = effnet.create_model("efficientnet_b0").eval()
    x = torch.randn(batch, 3, res, res)
    fast = optimize_for_inference(model)
    macs, bytes_per_image = _conv_macs(fast, x)
    torch_times = _torch_op_times(fast, x, iters)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "b0.onnx", resolution=res)
        options = onnxruntime.SessionOptions()
        options.enable_profiling, options.profile_file_prefix = True, str(Path(tmp) / "ort")
        options.intra_op_num_threads = torch.get_num_threads()
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x.numpy()}
        for _ in range(iters + 1):  # the first run is the warm-up: dropped below
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    run_events = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    first_end = run_events[0]["ts"] + run_events[0]["dur"]
    ort_times = _ort_op_times([e for e in events if e.get("ts", 0) > first_end], iters)
    ort_total = sum(e["dur"] for e in run_events[1:]) / 1000 / iters
    with torch.inference_mode():
        start = time.perf_counter()
        for _ in range(iters):
            fast(x)
        torch_total = (time.perf_counter() - start) * 1000 / iters
    ov_times = _openvino_op_times(model, x, iters)
    kinds = sorted(set(torch_times) | set(ort_times), key=lambda k: -torch_times.get(k, 0.0))
    rows = []
    for kind in kinds:
        t, o, m, v = torch_times.get(kind), ort_times.get(kind), macs.get(kind), ov_times.get(kind)
        rows.append((kind, t, o, None if not (t and o) else t / o, None if not (m and t) else m / t / 1e6,
                     None if not (m and o) else m / o / 1e6, v, None if not (m and v) else m / v / 1e6))
    rows.append(("whole forward", torch_total, ort_total, torch_total / ort_total, None, None,
                 sum(ov_times.values()), None))
    bandwidth = _memory_bandwidth()
    roofline = bandwidth / bytes_per_image  # images/s if every conv streams its input and output through DRAM once
    roof = {"bytes_per_image": bytes_per_image, "bandwidth_gb_s": bandwidth / 1e9, "roofline_images_per_s": roofline,
            "torch_images_per_s": 1000 * batch / torch_total, "ort_images_per_s": 1000 * batch / ort_total}
    table = format_table(OPS_HEADERS, rows, title=f"efficientnet_b0 at {res}px batch {batch}: torch fp32 (BN folded, "
                         "channels_last, oneDNN) vs ONNX Runtime fp32 and OpenVINO bf16, time per batch by op class "
                         "(profilers; whole forward: wall time for torch, session time for ONNX Runtime)")
    table += "\n" + _roofline_note(roof)
    _save("ops_b0", {"model": "efficientnet_b0", "kind": "ops", "resolution": res, "batch": batch, **roof,
                     "rows": [dict(zip(OPS_KEYS, r)) for r in rows]}, table)


def _roofline_note(roof: dict) -> str:
    limit = roof["roofline_images_per_s"]
    torch_ips, ort_ips = roof["torch_images_per_s"], roof["ort_images_per_s"]
    return (f"memory roofline: the convolutions read and write {roof['bytes_per_image'] / 1e6:.1f} MB per image in "
            f"fp32; a 256 MB copy ran at {roof['bandwidth_gb_s']:.1f} GB/s, so a layer-by-layer fp32 forward whose "
            f"activations stream through DRAM cannot exceed {limit:.0f} img/s.  Measured: torch {torch_ips:.0f} img/s "
            f"({100 * torch_ips / limit:.0f} %), ONNX Runtime {ort_ips:.0f} img/s ({100 * ort_ips / limit:.0f} %).")


def train(quick: bool) -> None:
    settings = [("train_b0_224_bs16", None, 16), ("train_b0_32_bs128", 32, 128)]
    if quick:
        settings = [("train_b0_64_bs4", 64, 4)]
    for tag, res, batch in settings:
        report = run_bench("efficientnet_b0", batches=(batch,), mode="train",
                           paths=("eager", "channels_last", "channels_last-fused", "channels_last-checkpoint", "bf16",
                                  "bf16-checkpoint"),
                           peers=("timm", "timm-channels_last", "timm-bf16"), resolution=res,
                           repeats=2 if quick else 4, warmup=1, isolate_memory=True, log=log)
        _save(tag, report.to_dict(), format_report(report))


def speed_models(quick: bool, folder: Path) -> list[tuple[str, str, int | None, int]]:
    """(tag, model or spec file, resolution, batch) for the training-speed section: the experiments' baseline and
    its 8x-MACs depth, width, resolution and compound models (compound-vs-single's candidates, their specs written
    to `folder`), then B0."""
    from effnet.experiments import design
    from effnet.spec import save_spec

    base = design.baseline()
    specs = [("baseline", base)]
    if not quick:
        for method in (*design.SINGLE_DIMENSIONS, design.PAPER_COMPOUND):
            spec = design.candidate(base, method, 8.0).spec
            if spec is None:  # no model of this method lands within 5% of 8x the MACs
                log(f"train_speed: {method.name} cannot reach 8x the baseline's MACs; left out")
                continue
            specs.append((f"{method.name.split()[0]}_x8", spec))
    models = []
    for tag, spec in specs:
        path = folder / f"{spec.name}.json"
        save_spec(spec, path)
        models.append((tag, str(path), spec.resolution, 32 if quick else 128))
    return models + ([("b0_64_bs4", "efficientnet_b0", 64, 4)] if quick else
                     [("b0_32_bs128", "efficientnet_b0", 32, 128), ("b0_224_bs16", "efficientnet_b0", None, 16)])


def train_speed(quick: bool) -> None:
    """docs/RESULTS.md "Training speed": effnet train's step (`default`, and `default-compile` on one thread for the
    baseline and B0 at 32 px) against the same step with ATen's convolutions only (`effnet-aten`, the step before
    effnet's own kernels) and timm channels_last, on 1 and 2 threads.  The whole `effnet train` loop against its
    bare step is `benchmarks/train_loop.py`."""
    import tempfile

    before = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="effnet-speed-") as folder:
        try:
            _train_speed_runs(quick, speed_models(quick, Path(folder)))
        finally:
            torch.set_num_threads(before)


def _train_speed_runs(quick: bool, models: list[tuple[str, str, int | None, int]]) -> None:
    for threads in (1,) if quick else (1, 2):
        torch.set_num_threads(threads)
        for tag, model, res, batch in models:
            # compiling a deep model takes many minutes on 2 shared cores: the compiled step is measured on the
            # baseline and B0 at 32 px (a smoke run: the baseline only)
            compiles = threads == 1 and tag in (("baseline",) if quick else ("baseline", "b0_32_bs128"))
            paths = ("default", "default-compile") if compiles else ("default",)
            peers = ("effnet-aten",) + (("timm-channels_last",) if model == "efficientnet_b0" else ())
            report = run_bench(model, batches=(batch,), mode="train", paths=paths, peers=peers, resolution=res,
                               repeats=2 if quick else 3, warmup=2, log=log)
            _save(f"train_speed_{tag}_{threads}t", report.to_dict(), format_report(report))


SECTIONS = {"infer": infer, "accuracy": accuracy, "accuracy_fmnist": accuracy_fmnist, "ops": ops, "train": train,
            "train_speed": train_speed}


def markdown(folder: Path = RESULTS) -> str:
    """The saved results in `folder` as the markdown tables of docs/RESULTS.md."""
    out = []
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        if "results" in data and "machine" in data:
            peers = [p for p in dict.fromkeys(PEERS + TRAIN_PEERS) if any(r["name"] == p for r in data["results"])]
            headers = ["batch", "path", "img/s (min-max)", "ms/batch", "peak MB"]
            headers += ["peak tensor MB", "saved act. MB"] if data["mode"] == "train" else []
            headers += ["GMAC/s", "% fp32 peak"] + [f"x {p}" for p in peers]
            rows = []
            for r in data["results"]:
                row = [r["batch"], r["name"] + (f" ({r['note']})" if r["note"] else ""),
                       f"{r['images_per_s']:.3g} ({r['images_per_s_min']:.3g}-{r['images_per_s_max']:.3g})",
                       r["latency_ms"], r["peak_mem_mb"]]
                row += [r.get("peak_tensor_mb"), r["saved_activations_mb"]] if data["mode"] == "train" else []
                row += [r["gmacs_per_s"], 100 * r["ceiling_fraction"]]
                row += [None if p == r["name"] else r["ratios"].get(p) for p in peers]
                rows.append(row)
            m = data["machine"]
            out.append(f"**{path.stem}** ({data['model']} {data['mode']} at {data['resolution']}px, "
                       f"{data['repeats']} rounds; load average {m['load_average'][0]:.1f} on {m['cpus']} CPUs; "
                       f"fp32 ceiling {m['fp32_gmacs_ceiling']:.0f} GMAC/s, {m['isa']})\n\n"
                       + markdown_table(headers, rows))
        elif data.get("kind") == "ops":
            rows = [[r.get(k) for k in OPS_KEYS] for r in data["rows"]]
            out.append(f"**{path.stem}** ({data['model']} at {data['resolution']}px, batch {data['batch']}; "
                       "time per batch by op class)\n\n" + markdown_table(OPS_HEADERS, rows) + "\n\n"
                       + _roofline_note(data))
        elif "ratio_training" in data:  # benchmarks/train_loop.py
            out.append(f"**{path.stem}** (`benchmarks/train_loop.py`: `effnet train` on Fashion-MNIST, {data['steps']} "
                       f"steps of {data['batch']}, {data['threads']} thread, data path {data['data_path']}; "
                       f"{data['date']}, load average {data['load_avg_before'][0]:.1f})\n\n" + markdown_table(
                           ["what", "img/s", "fraction of the bare step"],
                           [["bare step on random tensors", data["bare_img_s"], 1.0],
                            ["effnet train, training epochs", data["train_img_s"], data["ratio_training"]],
                            ["effnet train, whole run with validation", data["run_img_s_with_validation"],
                             data["ratio_with_validation"]]]))
        elif data.get("kind") == "same_results":
            rows = [[metric, f"{m['recorded']['mean']:.2f} ± {m['recorded']['half_width']:.2f}",
                     f"{m['new']['mean']:.2f} ± {m['new']['half_width']:.2f}",
                     f"{m['paired_difference']['mean']:+.2f} ± {m['paired_difference']['half_width']:.2f}",
                     "yes" if m["within_noise"] else "**no**"] for metric, m in data["metrics"].items()]
            out.append(f"**{path.stem}** (the experiments' baseline, one epoch, seeds {data['seeds']}: recorded runs "
                       f"vs the default path now; `{data['command']}`)\n\n" + markdown_table(
                           ["metric", "recorded %", "now %", "paired difference pp", "within the noise"], rows))
        elif data.get("kind") == "train_process":  # benchmarks/train_process.py
            rows = [[m["tag"], name, arm["ms"], arm["faults"], arm["sys_ms"]]
                    for m in data["models"] for name, arm in m["arms"].items()]
            ratios = [[m["tag"], what, f"{r['median']:.2f}", f"{r['min']:.2f}-{r['max']:.2f}"]
                      for m in data["models"] for what, r in m["ratios"].items() if r]
            env = "".join(f"{k}={v} " for k, v in data.get("environment", {}).items())
            out.append(f"**{path.stem}** (`{env}{data['command']}`; {data['date']}, {data['cpu']}, {data['threads']} "
                       f"thread(s), {data['rounds']} rounds, load average {data['load_average_before'][0]:.1f})\n\n"
                       + markdown_table(["model", "arm", "ms/step", "page faults/step", "kernel ms/step"], rows)
                       + "\n\n" + markdown_table(["model", "ratio (× faster)", "median", "range"], ratios))
        elif data.get("kind") == "labelled":
            rows = [[f"{r['runtime']} {r['precision']}", r["images"], r["raw_top1"], r["raw_delta_pp"],
                     r["ema_top1"], r["ema_delta_pp"]] for r in data["results"]]
            out.append(f"**{path.stem}** ({data['model']}, Fashion-MNIST test set)\n\n" + markdown_table(
                ["path", "test images", "top-1 %", "change pp", "EMA top-1 %", "EMA change pp"], rows))
        else:
            rows = [[a["path"], a["images"], 100 * a["top1_agreement"], 100 * a["top5_contains_fp32_top1"],
                     a["max_abs_logit_error"], a["confident_images"], 100 * a["confident_top1_agreement"]]
                    for a in data["results"]]
            out.append(f"**{path.stem}** ({data['model']}, pretrained; {data['views']} views)\n\n" + markdown_table(
                ["path", "views", "top-1 agreement %", "fp32 top-1 in top-5 %", "max abs logit error",
                 "confident views", "agreement % (confident)"], rows))
    return "\n\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 2 rounds: a smoke run")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"sections, comma-separated ({','.join(SECTIONS)})")
    parser.add_argument("--markdown", action="store_true", help="print the saved results as markdown and stop")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default benchmarks/results, or benchmarks/results/quick with --quick); "
                             "a run on another kind of machine goes in a folder of its own")
    args = parser.parse_args()
    global _out
    _out = args.out or (QUICK_RESULTS if args.quick else RESULTS)
    if args.markdown:
        print(markdown(_out))
        return 0
    unknown = [name for name in args.only.split(",") if name not in SECTIONS]
    if unknown:
        parser.error(f"--only: unknown section(s) {', '.join(unknown)}; expected {', '.join(SECTIONS)}")
    try:
        keep_freed_memory()  # as every effnet command runs (effnet.allocator); the reports name the allocator
    except EffnetError as exc:
        parser.error(str(exc))
    start = time.time()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY')}, load average {os.getloadavg()[0]:.1f}; started {started}\n")
    for section in args.only.split(","):
        log(f"section {section}")
        SECTIONS[section](args.quick)
    log(f"done in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

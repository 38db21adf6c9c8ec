"""`effnet bench MODEL`: effnet's inference or training paths against timm, torchvision, ONNX Runtime and
OpenVINO (and, asked for by name, ExecuTorch, LiteRT, OpenVINO THROUGHPUT and ONNX Runtime int8), measured side by
side in one run (see `effnet.bench`); `--layers`: one forward pass layer by layer on the
roofline of this machine's measured ceiling (`effnet.bench.layers`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import asdict

from effnet.bench import (
    DEFAULT_PEERS,
    INFER_PATHS,
    LAYER_PATHS,
    LOSSY,
    PEERS,
    TRAIN_PATHS,
    TRAIN_PEERS,
    BenchError,
    LayerReport,
    Machine,
    Report,
    layer_report,
    machine,
    machine_ceiling,
    run_bench,
)
from effnet.cli._args import int_list, non_negative_int, pixels, positive_int
from effnet.report import format_table


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="images/s, latency, memory and ratios vs timm/torchvision/ORT/OpenVINO",
        epilog="On a shared machine run with OMP_WAIT_POLICY=PASSIVE in the environment: with OpenMP's default "
               "active waiting torch's threads lose a scheduler tick at every barrier when a core is taken.")
    p.add_argument("model", help="registered name or spec .json")
    p.add_argument("--batch-size", dest="batch", default=None,
                   help="comma-separated batch sizes (default 1,32; with --layers one, default 1)")
    p.add_argument("--batch", dest="batch", default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # older spelling
    p.add_argument("--mode", choices=("infer", "train"), default="infer",
                   help="infer (default): forward passes; train: forward, backward and optimizer steps")
    p.add_argument("--vs", default=None,
                   help=f"peers, comma-separated: infer {','.join(PEERS)} (default {','.join(DEFAULT_PEERS)}; "
                        "executorch: XNNPACK, litert: LiteRT on XNNPACK, openvino-throughput: THROUGHPUT hint with "
                        "several requests in flight, ort-int8: ONNX Runtime static int8 U8S8 on real photos, a lossy "
                        "peer (the recipe of the onnxruntime-int8 path); pip install 'effnet[peers]'); "
                        f"train {','.join(TRAIN_PEERS)} (default timm); 'none' for none")
    p.add_argument("--paths", default=None,
                   help=f"effnet paths: infer {','.join(INFER_PATHS)} (default eager,folded,compile); "
                        f"train {','.join(TRAIN_PATHS)} (default eager,bf16,checkpoint)")
    p.add_argument("--resolution", type=pixels, default=None, help="input size (default: the model's)")
    p.add_argument("--repeats", type=positive_int, default=5, help="interleaved rounds (default 5)")
    p.add_argument("--iters", type=positive_int, default=None, help="calls per round (default: about 0.5 s per round)")
    p.add_argument("--warmup", type=non_negative_int, default=2, help="untimed calls per candidate first (default 2)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="threads of torch and every engine (default: torch's)")
    p.add_argument("--isolate-memory", action="store_true",
                   help="train mode: measure each candidate's peak memory in a fresh process (slower, truer)")
    p.add_argument("--layers", action="store_true",
                   help="instead: one forward pass of one path (default eager) at the first batch size, a row per "
                        "layer: MACs, bytes, time and the roofline of this machine's measured ceiling")
    p.add_argument("--refresh-ceiling", action="store_true",
                   help="measure this machine's GEMM and bandwidth ceiling again instead of using the cached one")
    p.add_argument("--no-auto", action="store_true",
                   help="infer mode: skip the last lines, which engine `engine=\"auto\"` picks at each batch size")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=run)


def _list(text: str | None, allowed: tuple[str, ...], what: str) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",")]
    if items == ["none"]:
        return []
    bad = [t or "''" for t in items if t not in allowed]
    if bad:
        alone = f" (give {what} none on its own, or the peers without it)" if "none" in items else ""
        raise BenchError(f"{what} got {', '.join(bad)}, expected any of {', '.join(allowed)}{alone}")
    twice = sorted({t for t in items if items.count(t) > 1})
    if twice:
        raise BenchError(f"{what} names {', '.join(twice)} twice; name each once")
    return items


def _batches(text: str) -> list[int]:
    try:
        values = int_list(text, "batch sizes")
    except argparse.ArgumentTypeError:
        values = []
    if not values or min(values) < 1:
        raise BenchError(f"--batch-size: got {text!r}, expected positive integers separated by commas, e.g. 1,32")
    return values


def run(args: argparse.Namespace) -> int:
    import torch

    if args.threads:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        if args.threads > cores:  # timings would measure the oversubscription, not the model
            warnings.warn(f"--threads {args.threads} is more than the {cores} cores this process may use; the "
                          "threads share them and the timings show it", stacklevel=1)
        torch.set_num_threads(args.threads)
    if args.layers:
        return _run_layers(args)
    train = args.mode == "train"
    for flag, given, mode in (("--isolate-memory", args.isolate_memory, "train"), ("--no-auto", args.no_auto, "infer")):
        if given and args.mode != mode:
            raise BenchError(f"{flag} applies only to --mode {mode}, not {args.mode}; drop it or change the mode")
    peers = _list(args.vs, TRAIN_PEERS if train else PEERS, "--vs")
    if peers is None:
        peers = ["timm"] if train else list(DEFAULT_PEERS)
    paths = _list(args.paths, TRAIN_PATHS if train else INFER_PATHS, "--paths")
    calibration = None
    if any(p.endswith("int8") for p in (paths or []) + peers):
        from effnet.data.calibration import calibration_images

        calibration = calibration_images(args.model, 64, args.resolution)
    log = _progress(args)
    batches = _batches(args.batch or "1,32")
    if args.refresh_ceiling:
        machine_ceiling(refresh=True, log=log)  # run_bench reads the cache this refreshes
    report = run_bench(args.model, batches=batches, mode=args.mode, paths=paths, peers=peers,
                       resolution=args.resolution, repeats=args.repeats, iters=args.iters or 0, warmup=args.warmup,
                       calibration=calibration, isolate_memory=args.isolate_memory, log=log)
    choices = [] if train or args.no_auto else _auto_choices(args.model, batches, report.resolution, log)
    if args.format == "json":
        print(json.dumps({**report.to_dict(), "auto": [asdict(c) for c in choices]}, indent=2))
    else:
        print("\n".join([format_report(report)] + [f"engine=auto: {c.describe()}" for c in choices]))
    return 1 if report.failed else 0  # a candidate failed (its row says why); bad input is exit 2


def _auto_choices(model_name: str, batches: list[int], resolution: int, log) -> list:
    """What `load_runtime(..., engine="auto")` picks for this model (fp32) at each batch: its own timing of the
    installed engines, the same call `--runtime auto` makes in predict and eval."""
    from effnet import create_model
    from effnet.runtime import RuntimeUnavailable, load_runtime

    model = create_model(model_name).eval()
    choices = []
    for batch in batches:
        log(f"engine=auto at batch {batch} ...")
        try:
            choices.append(load_runtime(model, engine="auto", batch=batch, resolution=resolution).choice)
        except RuntimeUnavailable as exc:
            log(f"engine=auto at batch {batch}: {exc}")
    return choices


def _progress(args: argparse.Namespace) -> Callable[[str], None]:
    """Where progress lines go: stderr, unless --quiet."""
    return (lambda s: None) if args.quiet else (lambda s: print(f"[bench] {s}", file=sys.stderr, flush=True))


def _run_layers(args: argparse.Namespace) -> int:
    from effnet.registry import get_spec

    ignored = [flag for flag, given in (("--mode train", args.mode != "infer"), ("--vs", args.vs is not None),
                                        ("--isolate-memory", args.isolate_memory), ("--iters", args.iters),
                                        ("--no-auto", args.no_auto)) if given]
    if ignored:
        raise BenchError(f"bench: --layers times effnet's own forward pass, {args.repeats} rounds of one call; drop "
                         f"{', '.join(ignored[:-1]) + ' and ' + ignored[-1] if len(ignored) > 1 else ignored[0]}")
    paths = _list(args.paths, LAYER_PATHS, "--paths (with --layers)") or ["eager"]
    if len(paths) != 1:
        raise BenchError(f"bench: --layers times one path, got --paths {args.paths!r}; choose one of "
                         f"{', '.join(LAYER_PATHS)}")
    batches = _batches(args.batch or "1")
    if len(batches) != 1:
        raise BenchError(f"bench: --layers times one batch size, got --batch-size {args.batch}; give one, e.g. "
                         f"--batch-size {batches[0]}")
    batch = batches[0]
    spec = get_spec(args.model)
    log = _progress(args)
    mach = machine(ceiling=machine_ceiling(refresh=args.refresh_ceiling, log=log))
    report = layer_report(spec, batch=batch, resolution=args.resolution, path=paths[0], ceiling=mach.ceiling,
                          repeats=args.repeats, warmup=args.warmup)
    if args.format == "json":
        print(json.dumps({**report.to_dict(), "machine": asdict(mach)}, indent=2))
    else:
        print(format_layers(report, mach))
    return 0


def format_layers(report: LayerReport, mach: Machine) -> str:
    """The per-layer roofline table, a summary by kind of layer, and the conditions it was measured in."""
    c = report.ceiling
    headers = ["layer", "kind", "output", "MMACs", "MB", "MAC/B", "ms", "GMAC/s", "GB/s", "roof GMAC/s", "% roof",
               "bound"]
    rows = [[r.name + (f" x{r.calls}" if r.kind == "other" else ""), r.kind,
             "x".join(map(str, r.output_shape)) if r.output_shape else None, r.macs / 1e6, r.bytes / 1e6,
             r.intensity, r.time_ms, r.gmacs_per_s, r.gb_per_s, r.limit_gmacs,
             None if r.fraction is None else 100 * r.fraction, r.bound] for r in report.rows]
    title = (f"{report.model} {report.path} forward at {report.resolution}px, batch {report.batch}: a row per "
             f"compute layer, then the other operators folded by name; each operator timed around its own call, "
             f"median of {report.repeats} passes")
    formats = {"MMACs": ".3f", "MB": ".3f", "MAC/B": ".2f", "ms": ".3f", "GMAC/s": ".2f", "GB/s": ".2f",
               "roof GMAC/s": ".1f", "% roof": ".1f"}
    kinds = [[kind, int(s["layers"]), s["time_ms"], 100 * s["time_share"], s["macs"] / 1e6, s["gmacs_per_s"]]
             for kind, s in report.shares().items()]
    diff = report.macs / report.model_macs - 1 if report.model_macs else 0.0
    lines = [
        format_table(headers, rows, title=title, formats=formats), "",
        format_table(["kind", "layers", "ms", "% time", "MMACs", "GMAC/s"], kinds, title="time by kind of layer",
                     formats={"ms": ".3f", "% time": ".1f", "MMACs": ".1f", "GMAC/s": ".2f"}), "",
        f"MACs: the rows add up to {report.macs / 1e6:.2f} M; effnet.profile.count_macs gives "
        f"{report.model_macs / 1e6:.2f} M for batch {report.batch} ({diff:+.2%})",
        f"time: the timed operators add up to {report.ops_ms:.2f} ms; a plain forward pass takes "
        f"{report.forward_ms:.2f} ms (median of {report.repeats})"
        + ("" if report.call_floor_us is None else
           f"; timing one call adds about {report.call_floor_us:.1f} us (the median call of a view, which does no "
           "work)"),
        "bytes: each operator's inputs (activations, weights, bias) and outputs at its dtype; MAC/B = MACs per byte; "
        "roof = min(GEMM ceiling, MAC/B x bandwidth); % roof of rows without MACs = GB/s over the bandwidth; over "
        "100 %: the bytes came from cache, not memory",
        f"machine: {mach.cpu_model}, {mach.isa} (bf16 on {mach.bf16}, int8 on {mach.int8}), {report.threads} threads; "
        f"load average {mach.load_average[0]:.1f} at start; OMP_WAIT_POLICY={mach.omp_wait_policy or 'unset'}; "
        f"allocator: {mach.allocator}",
        f"ceiling: {c.describe()}; fp32 ridge point {c.fp32_gmacs / c.bandwidth_gbs:.1f} MAC/B",
    ]
    return "\n".join(lines)


def format_report(report: Report) -> str:
    m = report.machine
    peers = sorted({r.name for r in report.results if r.peer}, key=lambda n: list(PEERS + TRAIN_PEERS).index(n))
    headers = ["batch", "path", "img/s", "min-max", "ms/batch", "peak MB"]
    headers += ["tensor MB", "act MB"] if report.mode == "train" else []
    headers += ["GMAC/s", "% fp32 peak"] + [f"x {p}" for p in peers] + ["note"]
    rows = []
    for r in report.results:
        row = [r.batch, r.name + (" *" if r.name in LOSSY else ""), r.images_per_s,
               f"{r.images_per_s_min:.3g}-{r.images_per_s_max:.3g}", r.latency_ms, r.peak_mem_mb]
        row += [r.peak_tensor_mb, r.saved_activations_mb] if report.mode == "train" else []
        row += [r.gmacs_per_s, 100 * r.ceiling_fraction] + [r.ratios.get(p) for p in peers] + [r.note]
        rows.append(row)
    for f in report.failed:
        where = f"at {f.stage}" + ("" if f.batch is None else f", batch {f.batch}")
        rows.append([f.batch, f.name + (" *" if f.name in LOSSY else "")] + [None] * (len(headers) - 3)
                    + [f"failed {where}: {f.reason}"])
    title = (f"{report.model} {report.mode} at {report.resolution}px, {report.macs_per_image / 1e9:.3f} GMACs per "
             f"image{' (x3 for a training step)' if report.mode == 'train' else ''}; {report.repeats} interleaved "
             f"rounds, medians; ratios = median of per-round paired ratios")
    lines = [format_table(headers, rows, title=title),
             f"machine: {m.cpus} CPUs, {m.isa}; fp32 ceiling {m.fp32_gmacs_ceiling:.0f} GMAC/s ({m.note}); "
             f"load average {m.load_average[0]:.1f} at start (shared machine: compare ratios, not absolutes); "
             f"OMP_WAIT_POLICY={m.omp_wait_policy or 'unset'}; allocator: {m.allocator} (every path alike)",
             "* lossy path: its accuracy change is measured by `benchmarks/run.py` (top-1 agreement on real photos)"]
    if report.memory_isolated:
        lines.append("peak MB and tensor MB: one training step in a fresh process per candidate")
    lines += [f"skipped {s}" for s in report.skipped]
    return "\n".join(lines)


__all__ = ["register"]

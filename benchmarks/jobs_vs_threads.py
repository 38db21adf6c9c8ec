"""How to spend the cores on training runs: one run with several torch threads, or one single-thread run per core
side by side (`effnet experiments ... --jobs N --threads 1`, `effnet search ... --jobs N --threads 1`):

    .venv/bin/python benchmarks/jobs_vs_threads.py                          # the baseline and depth x8, 2 cores
    .venv/bin/python benchmarks/jobs_vs_threads.py --models baseline --cores 2 --rounds 3

Per round, three layouts of effnet train's step (`train_process.py`'s `default` arm: its own process, effnet
train's allocator setting), each timed for at least --seconds after 3 warm-up steps: `1x1` one process on one
thread, `Nx1` N such processes started together (the training images/s of all of them summed), `1xN` one process
on N threads.  Throughput ratios against `1x1` are paired by round (median and range).  The layouts' order rotates
every round.  Writes benchmarks/results/jobs_vs_threads.json and .txt (--out for another folder).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from train_process import RESULTS, Progress, run_arm, save  # noqa: E402  (OMP_WAIT_POLICY=PASSIVE set there)

from effnet.report import format_table  # noqa: E402


def layouts(cores: int) -> dict[str, tuple[int, int]]:
    """name -> (processes, threads each)."""
    return {"1x1": (1, 1), f"{cores}x1": (cores, 1), f"1x{cores}": (1, cores)}


def images_per_s(model: str, res: int | None, batch: int, processes: int, threads: int, seconds: float) -> dict:
    """The summed training images/s of `processes` runs of the step started together, `threads` threads each."""
    with ThreadPoolExecutor(processes) as pool:
        outs = list(pool.map(lambda _: run_arm(model, res, batch, "default", True, threads, seconds),
                             range(processes)))
    bad = [o["error"] for o in outs if "ms" not in o]
    if bad:
        return {"error": bad[0]}
    return {"images_per_s": sum(batch / (o["ms"] / 1e3) for o in outs), "ms": [o["ms"] for o in outs]}


def measure(tag: str, model: str, res: int | None, batch: int, rounds: int, cores: int, seconds: float,
            progress: Progress) -> dict:
    names = list(layouts(cores))
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            out = images_per_s(model, res, batch, *layouts(cores)[name], seconds)
            runs[name].append(out)
            print(f"  {progress.step()} {tag} round {r + 1} {name}: "
                  + (f"{out['images_per_s']:.0f} images/s" if "images_per_s" in out else out["error"]), flush=True)

    def paired(name: str) -> dict | None:
        ratios = [y["images_per_s"] / x["images_per_s"] for x, y in zip(runs["1x1"], runs[name])
                  if "images_per_s" in x and "images_per_s" in y]
        return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)} if ratios else None

    return {"tag": tag, "model": Path(model).stem, "resolution": res, "batch": batch,
            "layouts": {name: {"processes": p, "threads": t, "rounds": runs[name],
                               "images_per_s": statistics.median(o["images_per_s"] for o in runs[name]
                                                                 if "images_per_s" in o)
                               if any("images_per_s" in o for o in runs[name]) else None}
                        for name, (p, t) in layouts(cores).items()},
            "vs 1x1": {name: paired(name) for name in names[1:]}}


def table(data: dict) -> str:
    rows = [[m["tag"], name, f"{lay['processes']} x {lay['threads']}", lay["images_per_s"],
             "1" if name == "1x1" else (f"{m['vs 1x1'][name]['median']:.2f} ({m['vs 1x1'][name]['min']:.2f}-"
                                        f"{m['vs 1x1'][name]['max']:.2f})" if m["vs 1x1"][name] else "-")]
            for m in data["models"] for name, lay in m["layouts"].items()]
    head = (f"{data['command']}; {data['date']}; {data['cpu']}; {data['rounds']} rounds; "
            f"OMP_WAIT_POLICY={data.get('omp_wait_policy')}; load average {data['load_average_before'][0]:.1f} "
            f"before, {data['load_average_after'][0]:.1f} after" + (f"; {data['source']}" if data.get("source") else "")
            + "\n")
    return head + format_table(["model", "layout", "processes x threads", "images/s (summed)",
                                "x 1x1 (paired, range)"], rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="baseline,depth_x8",
                        help="tags of benchmarks/run.py's train_speed models, comma-separated")
    parser.add_argument("--cores", type=int, default=2, help="processes of the side-by-side layout, threads of "
                                                             "the one-process layout (default 2)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0, help="time each process's steps for at least this long")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.rounds < 1 or args.cores < 2 or args.seconds <= 0:
        parser.error(f"--rounds must be >= 1, --cores >= 2 and --seconds > 0; got {args.rounds}, {args.cores}, "
                     f"{args.seconds}")
    from run import speed_models  # the train_speed section's models

    from effnet.cpu import cpu_model

    with tempfile.TemporaryDirectory(prefix="effnet-jobs-") as folder:
        models = {tag: rest for tag, *rest in speed_models(False, Path(folder))}
        wanted = args.models.split(",")
        unknown = [t for t in wanted if t not in models]
        if unknown:
            parser.error(f"--models: unknown {', '.join(unknown)}; expected some of {', '.join(models)}")
        data = {"kind": "jobs_vs_threads", "command": "benchmarks/jobs_vs_threads.py " + " ".join(sys.argv[1:]),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_model(),
                "cores": args.cores, "rounds": args.rounds, "load_average_before": list(os.getloadavg()),
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                "models": []}
        progress = Progress(args.rounds * len(layouts(args.cores)) * len(wanted))
        for tag in wanted:
            print(f"{tag}:", flush=True)
            data["models"].append(measure(tag, *models[tag], args.rounds, args.cores, args.seconds, progress))
    data["load_average_after"] = list(os.getloadavg())
    save(args.out, "jobs_vs_threads", data, table(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

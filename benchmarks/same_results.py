"""Does effnet train's default path on a CPU (effnet's depthwise and 1x1 convolution paths) train to the same
accuracy as the path before it?  Retrains the experiments' baseline with the exact settings of the one-epoch runs
recorded in docs/experiments/compound-vs-single/results.json and compares, paired by seed:

    .venv/bin/python benchmarks/same_results.py                 # 3 seeds, one after the other (~10 min on 2 cores)
    .venv/bin/python benchmarks/same_results.py --seeds 5 --runs-dir runs/same   # resumable folder for the runs

Writes benchmarks/results/same_results.{json,txt}.  The new runs differ from the recorded ones only in float32
rounding (the weight gradients are summed in another order), which changes every later step a little: what must
hold is that the differences are within the seed-to-seed noise, not that they are zero.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from effnet.experiments.records import machine
from effnet.experiments.runner import run_of_record, train_run
from effnet.report import format_table
from effnet.stats import interval, paired_difference

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT / "docs" / "experiments" / "compound-vs-single" / "results.json"
RESULTS = Path(__file__).parent / "results"


def baseline_records(seeds: int) -> list[dict]:
    data = json.loads(RECORDED.read_text())
    base = data["baseline"] if isinstance(data.get("baseline"), str) else data["runs"][0]["model"]
    rows = [r for r in data["runs"] if r["model"] == base and r["training"]["steps"] == 430]
    rows = sorted({r["seed"]: r for r in rows}.values(), key=lambda r: r["seed"])
    if len(rows) < seeds:
        raise SystemExit(f"--seeds: got {seeds}, but {RECORDED.name} records {len(rows)} baseline seeds")
    return rows[:seeds]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds to retrain (default 3)")
    parser.add_argument("--runs-dir", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1, as recorded)")
    args = parser.parse_args()
    if args.seeds < 2:
        parser.error(f"--seeds: got {args.seeds}, expected 2 or more (a paired interval needs two)")
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="effnet-same-"))
    recorded = baseline_records(args.seeds)
    new = {}
    start = time.time()
    for i, record in enumerate(recorded):
        print(f"[{time.strftime('%H:%M:%S')}] seed {record['seed']} ({i + 1}/{len(recorded)})", flush=True)
        new[record["seed"]] = train_run(run_of_record(record), runs_dir, threads=args.threads, device="cpu")
    rows, summary = [], {}
    for metric in ("val_top1", "test_top1"):
        before = {r["seed"]: r[metric] for r in recorded}
        after = {s: r[metric] for s, r in new.items()}
        diff = paired_difference(after, before)
        noise = interval(list(before.values()))
        within = diff.low <= 0 <= diff.high
        summary[metric] = {"recorded": noise.to_dict(), "new": interval(list(after.values())).to_dict(),
                           "paired_difference": diff.to_dict(), "within_noise": within,
                           "per_seed": {str(s): [before[s], after[s]] for s in sorted(before)}}
        rows.append((metric, noise.text(2), interval(list(after.values())).text(2),
                     f"{diff.mean:+.2f} ({diff.low:+.2f} to {diff.high:+.2f})", "yes" if within else "NO"))
    speed = {r["seed"]: (r["images_per_s"], new[r["seed"]]["images_per_s"]) for r in recorded}
    text = format_table(["metric", "recorded (mean ± 95%)", "default path now", "paired difference", "within noise"],
                        rows, title=f"the experiments' baseline, one epoch, {len(recorded)} seeds: recorded runs vs "
                                    "effnet train's default path now (paired by seed)")
    text += "\n" + "; ".join(f"seed {s}: {a:.0f} -> {b:.0f} img/s (recorded on another machine)"
                             for s, (a, b) in sorted(speed.items()))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "same_results.json").write_text(json.dumps(
        {"kind": "same_results", "seeds": sorted(new), "metrics": summary, "machine": machine(),
         "load_average": os.getloadavg()[0], "wall_s": round(time.time() - start), "command":
         f"benchmarks/same_results.py --seeds {args.seeds} --threads {args.threads}",  # the runs' folder is the
         "date": time.strftime("%Y-%m-%d")}, indent=2) + "\n")  # machine's own, not part of the command
    (RESULTS / "same_results.txt").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

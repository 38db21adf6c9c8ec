"""The training step in processes of its own: effnet train's step now against the step before effnet's own
kernels, each in the allocator state its process really has:

    .venv/bin/python benchmarks/train_process.py                     # every model of the train_speed section
    .venv/bin/python benchmarks/train_process.py --models baseline,b0_224_bs16 --rounds 3

Why separate processes: `effnet train` sets a process-wide allocator policy (`effnet.allocator`: glibc's malloc
keeps freed memory instead of faulting it in again every step), which `benchmarks/run.py`'s in-process rounds
cannot give one path and deny another.  Each arm here is one process: build the model, 3 warm-up steps, then steps
for at least --seconds; its median step time.  The arms alternate, their order rotating every round, and the
ratios are paired by round (median and range over the rounds).

Each arm also reports its page faults and kernel (system) time per step (median of steps; the kernel time is the
mean over its steps) and the process's peak resident memory.

Arms: `before` (the step with ATen's convolutions only, glibc's default allocator: what `effnet train` ran before
effnet's own kernels), `default-glibc` (effnet train's step, default allocator), `default` (effnet train's step
with its allocator setting, as `effnet train` runs it); for B0 also `timm-channels_last` with the default
allocator and with the same setting (`timm-keep`).
Writes benchmarks/results/train_process.json and .txt (--out for another folder).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/run.py

import torch  # noqa: E402

from effnet.allocator import ENV as KEEP_ENV  # noqa: E402
from effnet.allocator import keep_freed_memory  # noqa: E402
from effnet.report import format_duration, format_table  # noqa: E402

RESULTS = Path(__file__).parent / "results"
# what limits the kernels' ISA (an AVX2 stand-in on an AVX-512 CPU): recorded with the results when set
ISA_ENV = ("EFFNET_MARCH", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")
EFFNET_ARMS = {"before": ("effnet-aten", False), "default-glibc": ("default", False), "default": ("default", True)}
PEER_ARMS = {"timm-channels_last": ("timm-channels_last", False), "timm-keep": ("timm-channels_last", True)}


def child(args: argparse.Namespace) -> int:
    """One arm: time the step and print one JSON line."""
    problem = keep_freed_memory()  # the arm's policy comes in its environment: KEEP_ENV is 1 or 0
    if problem and os.environ.get(KEEP_ENV) == "1":
        print(json.dumps({"error": f"allocator setting not applied: {problem}"}))
        return 0
    torch.set_num_threads(args.threads)
    from effnet.bench.candidates import train_candidate
    from effnet.spec import load_spec

    model = args.model
    spec = load_spec(model) if model.endswith(".json") else None
    candidate = train_candidate(spec.name if spec else model, args.path, spec)
    res = args.res or (spec.resolution if spec else 224)
    x = torch.randn(args.batch, spec.in_channels if spec else 3, res, res)
    for _ in range(3):
        candidate.step(x)
    times, faults, sys_s = [], [], []
    start = time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < args.seconds:
        before = resource.getrusage(resource.RUSAGE_SELF)
        t = time.perf_counter()
        candidate.step(x)
        times.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_SELF)
        faults.append(after.ru_minflt - before.ru_minflt)
        sys_s.append(after.ru_stime - before.ru_stime)
    print(json.dumps({"ms": 1e3 * statistics.median(times), "steps": len(times),
                      "faults": statistics.median(faults), "sys_ms": 1e3 * statistics.mean(sys_s),
                      "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    return 0


def run_arm(model: str, res: int | None, batch: int, path: str, keep: bool, threads: int, seconds: float) -> dict:
    env = dict(os.environ)
    env[KEEP_ENV] = "1" if keep else "0"
    command = [sys.executable, __file__, "--child", "--model", model, "--batch", str(batch), "--path", path,
               "--threads", str(threads), "--seconds", str(seconds)] + (["--res", str(res)] if res else [])
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    except subprocess.TimeoutExpired:
        return {"error": "no result within 30 minutes"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]}
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": f"unreadable result line: {lines[-1][:200]}"}


def arms_of(model: str) -> dict[str, tuple[str, bool]]:
    """The arms measured for `model`: name -> (bench path, keeps freed memory)."""
    return dict(EFFNET_ARMS, **(PEER_ARMS if model == "efficientnet_b0" else {}))


class Progress:
    """Arms done out of the total, and the time left at the pace so far."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.start = total, 0, time.monotonic()

    def step(self) -> str:
        self.done += 1
        left = (time.monotonic() - self.start) / self.done * (self.total - self.done)
        return f"[{self.done}/{self.total}, ETA {format_duration(left)}]"


def measure(tag: str, model: str, res: int | None, batch: int, rounds: int, threads: int, seconds: float,
            progress: Progress) -> dict:
    arms = arms_of(model)
    names = list(arms)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            path, keep = arms[name]
            out = run_arm(model, res, batch, path, keep, threads, seconds)
            runs[name].append(out)
            print(f"  {progress.step()} {tag} round {r + 1} {name}: "
                  + (f"{out['ms']:.1f} ms/step, {out['faults']:.0f} page faults" if "ms" in out else out["error"]),
                  flush=True)

    def paired(a: str, b: str) -> dict | None:
        """How many times faster arm b's step is than arm a's, paired by round."""
        ratios = [x["ms"] / y["ms"] for x, y in zip(runs[a], runs[b]) if "ms" in x and "ms" in y]
        return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)} if ratios else None

    arms_out = {}
    for name in names:
        ok = [o for o in runs[name] if "ms" in o]
        arms_out[name] = {"path": arms[name][0], "keeps_freed_memory": arms[name][1], "rounds": runs[name],
                          "ms": statistics.median(o["ms"] for o in ok) if ok else None,
                          "faults": statistics.median(o["faults"] for o in ok) if ok else None,
                          "sys_ms": statistics.median(o["sys_ms"] for o in ok) if ok else None,
                          "max_rss_mb": statistics.median(o["max_rss_mb"] for o in ok)
                          if ok and all("max_rss_mb" in o for o in ok) else None}
    ratios = {"default vs before": paired("before", "default"),
              "default-glibc vs before": paired("before", "default-glibc"),
              "allocator setting (default vs default-glibc)": paired("default-glibc", "default")}
    if model == "efficientnet_b0":
        ratios["default vs timm-channels_last"] = paired("timm-channels_last", "default")
        ratios["default vs timm-keep"] = paired("timm-keep", "default")
    return {"tag": tag, "model": Path(model).stem, "resolution": res, "batch": batch, "arms": arms_out,
            "ratios": ratios}


def table(data: dict) -> str:
    rows = []
    for m in data["models"]:
        for name, arm in m["arms"].items():
            rows.append([m["tag"], name, arm["ms"], arm["faults"], arm["sys_ms"], arm.get("max_rss_mb")])
    ratio_rows = [[m["tag"], what, r["median"], f"{r['min']:.2f}-{r['max']:.2f}"]
                  for m in data["models"] for what, r in m["ratios"].items() if r]
    env = " ".join(f"{k}={v}" for k, v in data.get("environment", {}).items())
    head = (f"{data['command']}; {data['date']}; {data['cpu']}; {data['threads']} thread(s); {data['rounds']} rounds; "
            f"load average {data['load_average_before'][0]:.1f} before" + (f"; {env}" if env else "") + "\n")
    return (head + format_table(["model", "arm", "ms/step", "page faults/step", "kernel ms/step", "peak RSS MB"],
                                rows)
            + "\n\n" + format_table(["model", "ratio (x faster)", "median", "range"], ratio_rows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="tags of the train_speed section's models, comma-separated "
                                                       "(default: all)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=6.0, help="time each arm's steps for at least this long")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--res", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=128, help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    if args.rounds < 1 or args.threads < 1 or args.seconds <= 0:
        parser.error(f"--rounds and --threads must be >= 1 and --seconds > 0; got {args.rounds}, {args.threads}, "
                     f"{args.seconds}")
    sys.path.insert(0, str(Path(__file__).parent))
    from run import speed_models  # the train_speed section's models

    from effnet.cpu import cpu_model

    with tempfile.TemporaryDirectory(prefix="effnet-process-") as folder:
        models = speed_models(False, Path(folder))
        tags = [tag for tag, *_ in models]
        wanted = args.models.split(",") if args.models else tags
        unknown = [t for t in wanted if t not in tags]
        if unknown:
            parser.error(f"--models: unknown {', '.join(unknown)}; expected some of {', '.join(tags)}")
        data = {"kind": "train_process", "command": "benchmarks/train_process.py " + " ".join(sys.argv[1:]),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_model(),
                "capability": torch.backends.cpu.get_cpu_capability(), "threads": args.threads,
                "rounds": args.rounds, "load_average_before": list(os.getloadavg()),
                "environment": {k: os.environ[k] for k in ISA_ENV if k in os.environ}, "models": []}
        chosen = [m for m in models if m[0] in wanted]
        progress = Progress(args.rounds * sum(len(arms_of(model)) for _, model, _, _ in chosen))
        for tag, model, res, batch in chosen:
            print(f"{tag}:", flush=True)
            data["models"].append(measure(tag, model, res, batch, args.rounds, args.threads, args.seconds, progress))
    data["load_average_after"] = list(os.getloadavg())
    save(args.out, "train_process", data, table(data))
    return 0


def save(out: Path, name: str, data: dict, text: str) -> None:
    """`name`.json (the data) and `name`.txt (the table) under `out`, and the table on stdout."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=1) + "\n")
    (out / f"{name}.txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    sys.exit(main())

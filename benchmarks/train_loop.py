"""`effnet train`'s images/s against the bare training step's, on the experiments' baseline (18 px, batch 128,
Fashion-MNIST, one thread, the experiments' recipe):

    .venv/bin/python benchmarks/train_loop.py                      # the full 430-step run (about 2 minutes)
    .venv/bin/python benchmarks/train_loop.py --steps 100 --per-sample-data

The bare step is forward, loss, backward and the optimizer's step of the same model on one random batch held in
memory (no data, no EMA, no validation, no logging); it is timed in windows before and after the run, and the
run's images/s is divided by their median.  Two ratios: the training epochs alone (metrics.jsonl's img_per_s) and
the whole run, validation included (`TrainResult.images_per_s`).  Prints the CPU, its ISA and the load average,
and writes the numbers as JSON (--json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see benchmarks/run.py

import torch  # noqa: E402
from torch import nn  # noqa: E402

from effnet.allocator import keep_freed_memory  # noqa: E402
from effnet.cpu import cpu_flags, cpu_model  # noqa: E402
from effnet.errors import EffnetError  # noqa: E402
from effnet.experiments.design import RECIPE  # noqa: E402
from effnet.registry import get_spec  # noqa: E402
from effnet.train import TrainConfig, train  # noqa: E402
from effnet.train.model import build_model  # noqa: E402
from effnet.train.optim import make_optimizer, param_groups  # noqa: E402
from effnet.train.plan import make_plan, open_data  # noqa: E402

BASELINE = str(Path(__file__).resolve().parents[1] / "src" / "effnet" / "experiments" / "baseline.json")


def cpu() -> dict:
    flags = cpu_flags()
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    return {"machine": platform.machine(), "capability": torch.backends.cpu.get_cpu_capability(),
            "model": cpu_model(), "isa": isa}


def bare_windows(config: TrainConfig, windows: int, steps: int) -> list[float]:
    """images/s of the bare step, one number per window of `steps` steps."""
    spec = get_spec(config.model)
    train_src, val_src, test_src = open_data(config)
    plan = make_plan(config, spec, train_src, val_src, 1, test_src)
    model = build_model(config, plan, spec, None, torch.device("cpu"))
    model.train()
    opt = make_optimizer(config.optimizer, param_groups(model, config.weight_decay), lr=plan.base_lr,
                         decay=config.rmsprop_decay, momentum=config.momentum, eps=config.eps)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    x = torch.randn(config.batch_size, 3, plan.resolution, plan.resolution)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, plan.num_classes, (config.batch_size,))

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        criterion(model(x), y).backward()
        opt.step()

    for _ in range(3):
        step()
    rates = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(config.batch_size * steps / (time.perf_counter() - start))
    return rates


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=RECIPE["steps"], help="training steps (default: the recipe's 430)")
    ap.add_argument("--per-sample-data", action="store_true", help="force the per-sample data path")
    ap.add_argument("--compile", action="store_true", help="compile the training step")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    try:
        keep_freed_memory()  # effnet train's allocator setting, for the bare step too (train() sets it for the run)
    except EffnetError as exc:
        ap.error(str(exc))
    settings = {**RECIPE, "steps": args.steps}
    extra = {"batched_data": False} if args.per_sample_data else {}
    if args.compile:
        extra["compile"] = True
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(model=BASELINE, data="fashion-mnist", out_dir=out, threads=1, workers=0,
                             progress=False, test=False, **settings, **extra)
        load_before = os.getloadavg()
        before = bare_windows(config, windows=3, steps=20)
        start = time.perf_counter()
        result = train(config)
        run_s = time.perf_counter() - start
        after = bare_windows(config, windows=3, steps=20)
        load_after = os.getloadavg()
    bare = statistics.median(before + after)
    epochs = [h["img_per_s"] for h in result.history]
    training = sum(h["epoch_s"] * h["img_per_s"] for h in result.history) / sum(h["epoch_s"] for h in result.history)
    numbers = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu(), "threads": 1,
        "load_avg_before": [round(v, 2) for v in load_before], "load_avg_after": [round(v, 2) for v in load_after],
        "torch": torch.__version__, "steps": result.steps, "batch": config.batch_size,
        "data_path": "per-sample" if args.per_sample_data else "auto", "compile_s": getattr(result, "compile_s", None),
        "bare_img_s_windows": [round(r, 1) for r in before + after], "bare_img_s": round(bare, 1),
        "train_img_s_epochs": [round(r, 1) for r in epochs], "train_img_s": round(training, 1),
        "run_img_s_with_validation": round(result.images_per_s, 1), "run_s": round(run_s, 1),
        "ratio_training": round(training / bare, 3), "ratio_with_validation": round(result.images_per_s / bare, 3),
    }
    print(json.dumps(numbers, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(numbers, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

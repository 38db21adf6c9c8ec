"""Helpers for the training tests: a tiny image folder and a tiny spec, so a run takes seconds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import tiny_spec

REPO = Path(__file__).resolve().parents[1]


def make_folder(root: Path, classes: int = 3, per_class: int = 16, val_per_class: int = 4, size: int = 36) -> Path:
    """train/ and val/ with `classes` colour-coded classes of noisy images (learnable in a few steps)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("val", val_per_class)):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
                img[..., c % 3] += 150
                Image.fromarray(img).save(d / f"{i:03d}.png")
    return root


def write_spec(path: Path, **overrides) -> str:
    spec = tiny_spec(**overrides)
    path.write_text(spec.to_json())
    return str(path)


def base_config(data: Path, spec_path: str, out: Path | None, **overrides) -> dict:
    cfg = dict(model=spec_path, data=str(data), out_dir=str(out) if out else None, resolution=32, batch_size=8,
               workers=0, threads=1, progress=False, augment="autoaugment", log_every=1, warmup_epochs=0.5)
    cfg.update(overrides)
    return cfg


RUNNER = r"""
import json, sys, time
from effnet.train import TrainConfig, train
from effnet.train import loop
cfg = json.loads(sys.argv[1])
delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
if delay:
    original = loop.Trainer._step
    def slow(self, *a):
        time.sleep(delay)
        return original(self, *a)
    loop.Trainer._step = slow
if "crop_scale" in cfg:
    cfg["crop_scale"] = tuple(cfg["crop_scale"])
r = train(TrainConfig(**cfg))
print("RESULT", json.dumps({"top1": r.top1, "steps": r.steps}))
"""


def runner_cmd(cfg: dict, delay: float = 0.0) -> list[str]:
    return [sys.executable, "-c", RUNNER, json.dumps(cfg), str(delay)]


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(REPO / "src") + os.pathsep + str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e["OMP_NUM_THREADS"] = "1"
    return e


def run(cfg: dict, delay: float = 0.0, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(runner_cmd(cfg, delay), env=env(), capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


def fashion_mnist_or_skip(split: str = "test"):
    """Fashion-MNIST's `split` as a source, or the calling test skipped where dataset-fashion-mnist is missing."""
    import pytest

    from effnet.data import DataError, FashionMNISTSource

    try:
        return FashionMNISTSource(split)
    except DataError:
        pytest.skip("dataset-fashion-mnist is not installed")


def kill_9_after_checkpoint(cfg: dict, out: Path, at_least: int, delay: float = 0.05, timeout: float = 180) -> int:
    """Start a run of `cfg` (each step slowed by `delay` s), kill -9 it once its folder `out` holds a step checkpoint
    of step `at_least` or later, and return the newest checkpoint's step."""
    import signal
    import time

    from effnet.train import checkpoint as ckpt

    proc = subprocess.Popen(runner_cmd(cfg, delay=delay), env=env(), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    while time.time() < deadline:
        steps = ckpt.step_checkpoints(out)
        if steps and steps[-1][0] >= at_least:
            break
        assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
        time.sleep(0.002)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    return ckpt.step_checkpoints(out)[-1][0]

"""benchmarks/train_process.py end to end on the experiments' baseline: one round, each arm its own process."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator setting is glibc's")
def test_one_round_on_the_baseline_writes_paired_ratios(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_process.py"), "--models", "baseline",
                           "--rounds", "1", "--seconds", "0.5", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    data = json.loads((tmp_path / "train_process.json").read_text())
    (model,) = data["models"]
    arms = model["arms"]
    assert set(arms) == {"before", "default-glibc", "default"}
    assert all(arm["ms"] > 0 for arm in arms.values())
    # effnet train's allocator setting: the timed steps reuse the warm-up's memory instead of faulting it in
    assert arms["default"]["faults"] <= 0.1 * max(arms["before"]["faults"], 100)
    ratio = model["ratios"]["default vs before"]
    assert ratio["median"] == pytest.approx(arms["before"]["ms"] / arms["default"]["ms"])
    assert (tmp_path / "train_process.txt").read_text().startswith("benchmarks/train_process.py --models baseline")


@pytest.mark.slow
def test_an_unknown_model_exits_2_naming_the_flag(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_process.py"), "--models", "nope",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "--models: unknown nope" in done.stderr

"""`torchrun --nproc_per_node=2` on CPU (gloo) follows the same loss curve as one process with the same global
batch: the distributed sampler gives each step the same images, augmentation is seeded per sample, and DDP
averages gradients.  What differs is BatchNorm, which normalises each process's half-batch on its own — hence a
tolerance rather than equality."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import _train_util as U


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "steps.jsonl").read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun not installed")
def test_two_process_torchrun_matches_one_process_loss_curve(tmp_path):
    data = U.make_folder(tmp_path / "data", classes=3, per_class=32, val_per_class=2)
    spec = U.write_spec(tmp_path / "tiny.json", num_classes=3, dropout=0.0, drop_path_rate=0.0)
    common = dict(batch_size=32, steps=9, ema_decay=0.0, seed=3, lr=0.02, warmup_epochs=0.0)
    one = U.run(U.base_config(data, spec, tmp_path / "one", **common))
    assert one.returncode == 0, one.stderr[-3000:]

    script = tmp_path / "runner.py"
    script.write_text(U.RUNNER)
    cfg = U.base_config(data, spec, tmp_path / "two", **common)
    torchrun = str(Path(sys.executable).parent / "torchrun")
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", str(script), json.dumps(cfg)],
                         env=U.env(), capture_output=True, text=True, timeout=300, cwd=U.REPO)
    assert two.returncode == 0, two.stderr[-3000:]

    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(a) == len(b) == 9
    assert a[0] == pytest.approx(b[0], rel=0.05)  # same images, same initial weights
    assert b == pytest.approx(a, rel=0.1, abs=0.05)
    # only rank 0 wrote: one metrics line per epoch, one steps line per step
    assert len((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()) == 3  # 96 images / 32: 3 epochs
    print("1 process:", [round(x, 4) for x in a], "\n2 processes:", [round(x, 4) for x in b])

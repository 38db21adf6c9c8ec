"""`effnet experiments progressive`: the two arms differ only in progressive learning, the report pairs them by
seed (test top-1 and wall time), and the quick run goes end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from effnet.experiments import progressive as P
from effnet.experiments import suite

REPO = Path(__file__).resolve().parents[1]


def test_the_arms_differ_only_in_progressive_learning():
    runs, meta = P.plan(Path("unused"), quick=False, seeds=3, log=lambda m: None)
    assert [(r.seed, r.label_dict()["arm"]) for r in runs] == [(s, a) for s in range(3) for a in P.ARMS]
    fixed, prog = dict(runs[0].train), dict(runs[1].train)
    assert {k: v for k, v in prog.items() if k != "progressive"} == fixed
    assert prog["progressive"] == 4 and fixed["resolution"] == 28 and fixed["steps"] == 430
    assert [(s["first_step"], s["size"], s["dropout"]) for s in meta["stages"]] == [
        (0, 12, 0.1), (107, 17, 0.166667), (215, 23, 0.233333), (322, 28, 0.3)]
    assert suite.module("progressive") is P


def _row(arm: str, seed: int, top1: float, wall: float) -> dict:
    return {"arm": arm, "seed": seed, "test_top1": top1, "val_top1": top1 + 0.5, "train_acc_end": 80.0,
            "wall_s": wall}


def test_the_report_pairs_the_arms_by_seed():
    rows = [_row("fixed", s, 85.0 + s, 600.0 + 60 * s) for s in range(3)]
    rows += [_row("progressive", s, 85.5 + s + 0.1 * s, 300.0 + 60 * s) for s in range(3)]
    _, meta = P.plan(Path("unused"), quick=False, seeds=3, log=lambda m: None)
    md, table = P.report({"runs": rows, **meta})
    assert "| progressive | 12 → 17 → 23 → 28 | 0.1 → 0.17 → 0.23 → 0.3 |" in md
    # paired: +0.5, +0.6, +0.7 pp; the seeds' own spread (1 pp apart) does not enter the interval
    assert "progressive training is better than fixed-size training by 0.60 pp" in md
    assert "progressive / fixed = 0.54 on average (per seed: 0.50, 0.55, 0.58)" in md  # 300/600, 360/660, 420/720
    assert "paired difference -5.0 min per run" in md
    assert "12 → 17 → 23 → 28" in table


@pytest.mark.slow
def test_quick_runs_both_arms_end_to_end(tmp_path):
    out = tmp_path / "progressive"
    done = subprocess.run([sys.executable, "-m", "effnet", "experiments", "progressive", "--quick", "--out", str(out),
                           "--runs", str(tmp_path / "runs"), "--threads", "1"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=1800, env=dict(os.environ, PYTHONPATH=str(REPO / "src")))
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    rows = {r["arm"]: r for r in results["runs"]}
    assert set(rows) == set(P.ARMS) and all(r["wall_s"] > 0 and r["resolution"] == 28 for r in rows.values())
    prog = json.loads((tmp_path / "runs" / rows["progressive"]["key"] / "run.json").read_text())
    assert [s["size"] for s in prog["progressive"]] == [12, 17, 23, 28]
    assert "progressive" not in json.loads((tmp_path / "runs" / rows["fixed"]["key"] / "run.json").read_text())
    report = (out / "report.md").read_text()
    assert report.startswith("# progressive (quick)") and "Wall time: progressive / fixed" in report

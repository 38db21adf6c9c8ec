"""What a finished run leaves behind and where an experiment finds it: the record of one run (`record.json` in its
run folder; `RECORD_FIELDS`) with the facts its folder records, the machine it ran on, and the records an
experiment may reuse instead of training again (the shared studies, and the results.json files of the
experiments)."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from effnet.cpu import cpu_flags, cpu_model
from effnet.files import atomic_write_text
from effnet.spec import NetSpec

RECORD = "record.json"
RESULTS = "results.json"
RECORD_FIELDS = (
    "key", "model", "seed", "data", "train", "spec", "macs", "params", "resolution", "blocks", "training",
    "val_top1", "val_images", "val_split", "selected_step", "selected_weights", "test_top1", "test_top5",
    "test_images", "test_split", "final_val_top1", "train_loss", "train_acc", "train_acc_end", "wall_s",
    "images_per_s", "history", "machine", "device", "finished",
)
"""What a run's record holds (results.json rows add the experiment's labels: method, budget, setting...); records
made before "device" was kept ran on the CPU."""


def end_of_training_accuracy(folder: Path, last_fraction: float = 0.1) -> float | None:
    """Training accuracy (percent, dropout and drop-path on) over the last 10% of the steps, from steps.jsonl:
    how well the model fits its training data when the budget ends (low means under-trained, not over-fitted)."""
    path = folder / "steps.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        return None
    last = max(r["step"] for r in rows)
    tail = [r["acc"] for r in rows if r["step"] > (1 - last_fraction) * last] or [rows[-1]["acc"]]
    return round(sum(tail) / len(tail), 3)


def completed_record(folder: Path, record: dict[str, Any]) -> dict[str, Any]:
    """A record written before a field existed gets it from the run folder (written back, once)."""
    if "train_acc_end" not in record and (folder / "steps.jsonl").is_file():
        record["train_acc_end"] = end_of_training_accuracy(folder)
        atomic_write_text(json.dumps(record, indent=2) + "\n", folder / RECORD)
    return record


def run_facts(folder: Path) -> dict[str, Any]:
    """The facts of a finished run that its folder records (config.json and test.json)."""
    config = json.loads((folder / "config.json").read_text())
    test = json.loads((folder / "test.json").read_text()) if (folder / "test.json").is_file() else {}
    from effnet.train import TrainConfig
    from effnet.train.plan import open_data

    settings = {k: (tuple(v) if k == "crop_scale" else v) for k, v in config.items()}
    if isinstance(settings["model"], dict):
        settings["model"] = NetSpec.from_dict(settings["model"])
    c = TrainConfig(**settings)
    train_src, val_src, test_src = open_data(c)
    resolution = c.resolution
    if resolution is None:
        from effnet.registry import get_spec

        resolution = get_spec(c.model).resolution
    return {"resolution": resolution, "batch_size": c.batch_size, "val_images": len(val_src),
            "val_split": val_src.name, "test_split": test.get("split", test_src.name if test_src else None),
            "num_classes": len(train_src.classes), "in_channels": 3}


def with_classes(spec: NetSpec, plan: dict[str, Any], settings: dict[str, Any]) -> NetSpec:
    from dataclasses import replace

    return replace(spec, num_classes=plan["num_classes"], resolution=plan["resolution"])


def measured_spec_dict(spec: NetSpec, plan: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    return with_classes(spec, plan, settings).to_dict()


def train_wall(folder: Path, this_process_s: float) -> float:
    """Training seconds over every process that worked on the run (the epochs' own times, so a resumed run
    counts the time before its interruption too), or this process's time if the log is missing."""
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return this_process_s
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    total = sum(float(r.get("epoch_s", 0.0)) for r in rows)
    return total or this_process_s


def machine() -> dict[str, Any]:
    """The CPU this ran on (model name and the ISA features that change speed), cores and threads."""
    import torch

    flags = cpu_flags()
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8") if f in flags]
    return {"cpu": cpu_model(), "isa": isa, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__}


def now(seconds: bool = False) -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC" if seconds else "%Y-%m-%d %H:%M UTC")


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded (empty where the OS has none)."""
    return [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else []


def known_records(storage: str | None, out: Path | None) -> dict[str, dict[str, Any]]:
    """Records of runs finished before, by key, that a plan may reuse instead of training them again (the same
    key is the same spec, training settings, data and seed): every finished run of every study in `storage`
    (also the studies of an earlier plan of this experiment), and every run in the results.json of `out` and of
    the experiments next to it.  A results.json row wins over a study's copy (it keeps the validation history)."""
    return {**study_records(storage), **recorded_rows(out)}


def study_records(storage: str | None) -> dict[str, dict[str, Any]]:
    records: dict[str, dict[str, Any]] = {}
    if storage and (("://" in storage) or Path(storage).is_file()):
        from optuna.trial import TrialState

        from effnet.search.study import make_storage

        store = make_storage(storage)
        for summary in store.get_all_studies():
            for t in store.get_all_trials(summary._study_id, deepcopy=False, states=(TrialState.COMPLETE,)):
                record = t.user_attrs.get("record")
                if isinstance(record, dict) and "key" in record:
                    records[record["key"]] = record
    return records


def recorded_rows(out: Path | None) -> dict[str, dict[str, Any]]:
    """The runs recorded in the results.json of `out` and of the experiments next to it, by key."""
    records: dict[str, dict[str, Any]] = {}
    if out is not None:
        for path in sorted(out.parent.glob(f"*/{RESULTS}")):
            try:
                rows = json.loads(path.read_text()).get("runs", [])
            except (OSError, ValueError, AttributeError):
                continue  # an unreadable neighbour is not this experiment's problem
            for row in rows:
                if isinstance(row, dict) and "key" in row:
                    records[row["key"]] = {k: v for k, v in row.items() if k in RECORD_FIELDS}
    return records


__all__ = ["RECORD", "RECORD_FIELDS", "RESULTS", "completed_record", "end_of_training_accuracy", "known_records",
           "machine", "measured_spec_dict", "now", "recorded_rows", "run_facts", "study_records", "train_wall",
           "with_classes"]

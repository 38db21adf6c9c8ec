"""What a run writes besides its checkpoints, all from the main process: the run record (run.json, kept current),
recipe.txt and config.json, the metrics.jsonl / steps.jsonl logs, TensorBoard events, the progress bar and the
log lines.  A resumed run truncates the logs (and purges the events) after the step it continues from."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

from effnet.files import atomic_write_text
from effnet.train import checkpoint as ckpt
from effnet.train import run_folder as folder
from effnet.train.config import RESUME_KEYS, ConfigError, Plan, TrainConfig, recipe_lines


def summary_writer():
    """TensorBoard's `SummaryWriter`, or a ConfigError naming the extra to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("tensorboard: the tensorboard package is not installed; install the extra: "
                          "pip install 'effnet[tensorboard]'") from None
    return SummaryWriter


class RunLog:
    """The run folder's logs and record for one run (`run_dir` None: nothing is written, lines are still printed
    when `config.progress`); only the `main` process writes or prints."""

    def __init__(self, config: TrainConfig, run_dir: Path | None, main: bool) -> None:
        self.c, self.run_dir, self.main = config, run_dir, main
        self.events = None
        self.record: dict[str, Any] | None = None  # the run record (run.json), kept current

    @property
    def writes(self) -> bool:
        return self.main and self.run_dir is not None

    def start(self, plan: Plan, spec_name: str, step: int) -> None:
        """At the start of training (or of a resumed part of it): the folder, recipe.txt, config.json, the logs cut
        back to `step`, the record and TensorBoard's writer."""
        if self.writes:
            d = self.run_dir
            d.mkdir(parents=True, exist_ok=True)
            ckpt.remove_stale_temporaries(ckpt.checkpoint_dir(d))
            lines = recipe_lines(self.c, plan, spec_name)
            (d / "recipe.txt").write_text("".join(f"{k:20s} {v}\n" for k, v in lines))
            (d / "config.json").write_text(json.dumps(self.c.to_dict(), indent=2) + "\n")
            for name in ("metrics.jsonl", "steps.jsonl"):  # lines after the resumed step, and a torn last line
                folder.repair_jsonl(d / name, step)
            previous = folder.read_record(d) if step else None
            self.record = folder.new_record(model=spec_name, data=self.c.data,
                                            settings=folder.settings_of(self.c.to_dict(), RESUME_KEYS),
                                            seed=self.c.seed, total_steps=plan.total_steps, previous=previous)
            self.record["steps_done"] = step
            if self.c.progressive is not None:  # the stage plan (effnet.train.progressive), as the loop follows it
                self.record["progressive"] = [stage.to_dict() for stage in plan.stages]
            folder.write_record(d, self.record)

    def open_events(self, step: int) -> None:
        """TensorBoard's writer into the run folder (`tensorboard=True`); events after `step` are purged."""
        if self.c.tensorboard and self.writes:
            self.events = summary_writer()(log_dir=str(self.run_dir), purge_step=step + 1)

    def update_record(self, best: float, **fields: Any) -> None:
        if self.record is None:
            return
        self.record.update(best_val_top1=best if math.isfinite(best) else None, updated=folder.now(), **fields)
        folder.write_record(self.run_dir, self.record)

    def end_record(self, state: str, best: float, step: int) -> None:
        """The run's final state; steps done stay the last checkpoint's unless it finished."""
        try:
            self.update_record(best, state=state, **({"steps_done": step} if state == "finished" else {}))
        except OSError:
            pass  # a full disk must not hide the error that ended the run

    def append(self, name: str, row: dict[str, Any]) -> None:
        """One JSON line of metrics.jsonl or steps.jsonl."""
        if self.writes:
            with open(self.run_dir / name, "a") as f:
                f.write(json.dumps(row) + "\n")

    def scalars(self, step: int, values: dict[str, float], flush: bool = False) -> None:
        if self.events is not None:
            for tag, value in values.items():
                self.events.add_scalar(tag, value, step)
            if flush:
                self.events.flush()

    def epoch(self, row: dict[str, Any], raw, ema) -> None:
        """An epoch's end: its row in metrics.jsonl, TensorBoard's scalars and the log line (`raw`, `ema`: the
        validation metrics of the raw and EMA weights)."""
        self.append("metrics.jsonl", row)
        self.scalars(row["step"], {"val/top1": raw.top1, "val/top5": raw.top5, "val/loss": raw.loss,
                                   "epoch/train_loss": row["train_loss"], "epoch/train_acc": row["train_acc"],
                                   **({"ema/top1": ema.top1, "ema/top5": ema.top5, "ema/loss": ema.loss}
                                      if ema is not None else {})}, flush=True)
        skipped = row["skipped_train"]
        self.say(f"epoch {row['epoch']} step {row['step']}: train loss {row['train_loss']:.4f} acc "
                 f"{row['train_acc']:.2f}% | val top-1 {raw.top1:.2f}% top-5 {raw.top5:.2f}%"
                 + (f" | EMA top-1 {ema.top1:.2f}% top-5 {ema.top5:.2f}%" if ema else "")
                 + (f" | skipped {skipped} unreadable" if skipped else ""))

    def test(self, metrics, *, split: str, selected_step: int | None, selected_weights: str, val_top1: float) -> None:
        """The test split's result (test.json) and its log line."""
        if self.writes:
            record = {"top1": metrics.top1, "top5": metrics.top5, "loss": metrics.loss, "images": metrics.images,
                      "split": split, "selected_step": selected_step, "selected_weights": selected_weights,
                      "val_top1": val_top1}
            atomic_write_text(json.dumps(record, indent=2) + "\n", self.run_dir / "test.json")
        self.say(f"test top-1 {metrics.top1:.2f}% top-5 {metrics.top5:.2f}% ({metrics.images} images, "
                 f"{selected_weights} weights of step {selected_step}, chosen on validation)")

    def progress(self, plan: Plan, epoch: int, done: int, total: int):
        """A tqdm bar for one epoch (`progress=True`), or None."""
        if not (self.c.progress and self.main):
            return None
        from tqdm import tqdm

        epochs = math.ceil(plan.total_steps / plan.steps_per_epoch)
        return tqdm(total=total, initial=done, desc=f"epoch {epoch + 1}/{epochs}", unit="step", dynamic_ncols=True,
                    mininterval=1.0, leave=True)

    def say(self, message: str) -> None:
        if self.main and self.c.progress:
            print(message, flush=True)

    def warn(self, message: str) -> None:
        """What a user must see even with progress off (`--no-progress`): a warning, from the main process (the
        command line prints it as one line naming the command that trains: train, search or experiments)."""
        if self.main:
            warnings.warn(message, stacklevel=2)

    def close(self) -> None:
        if self.events is not None:
            self.events.close()
            self.events = None


__all__ = ["RunLog", "summary_writer"]

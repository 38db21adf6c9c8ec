"""`effnet plot RUN_DIR [RUN_DIR ...]`: loss, accuracy and learning-rate curves from metrics.jsonl (one line per
epoch) and steps.jsonl (every `log_every` steps) to one PNG; several runs share the axes for comparison."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from effnet.errors import EffnetError


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines log; a last line cut short (the run was killed while writing it) is left out
    with a warning, any other bad line is an error."""
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.splitlines()
    rows = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                if n == len(lines) and not text.endswith("\n"):
                    warnings.warn(f"{path}:{n}: an unfinished last line (being written, or the run was killed "
                                  "while writing it); left out", stacklevel=2)
                    continue
                raise EffnetError(f"{path}:{n}: not a JSON line ({exc})") from None
    return rows


def plot_runs(run_dirs: list[str | Path], out: str | Path, labels: list[str] | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = []
    for d in run_dirs:
        d = Path(d)
        if not d.is_dir():
            raise EffnetError(f"{d}: {'not a folder' if d.exists() else 'no such folder'}; expected a run folder "
                              "written by `effnet train`")
        epochs, steps = read_jsonl(d / "metrics.jsonl"), read_jsonl(d / "steps.jsonl")
        if not epochs and not steps:
            raise EffnetError(f"{d}: no metrics.jsonl or steps.jsonl; expected a run folder written by `effnet train`")
        runs.append((d, epochs, steps))
    labels = labels or [d.name for d, _, _ in runs]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for (_, epochs, steps), label in zip(runs, labels):
        colour = None
        if steps:
            (line,) = axes[0].plot([s["epoch"] for s in steps], [s["loss"] for s in steps], alpha=0.5,
                                   label=f"{label} train")
            colour = line.get_color()
            axes[1].plot([s["epoch"] for s in steps], [s["acc"] for s in steps], alpha=0.5, color=colour,
                         label=f"{label} train")
            axes[2].plot([s["epoch"] for s in steps], [s["lr"] for s in steps], color=colour, label=label)
        if epochs:
            x = [e["epoch_float"] for e in epochs]
            if not steps and "train_loss" in epochs[0]:  # no step log: the epochs' own training means
                (line,) = axes[0].plot(x, [e["train_loss"] for e in epochs], "^:", label=f"{label} train")
                colour = line.get_color()
                axes[1].plot(x, [e["train_acc"] for e in epochs], "^:", color=colour, label=f"{label} train")
            axes[0].plot(x, [e["val_loss"] for e in epochs], "o-", color=colour, label=f"{label} val")
            axes[1].plot(x, [e["val_top1"] for e in epochs], "o-", color=colour, label=f"{label} val top-1")
            if not steps:
                axes[2].plot(x, [e["lr"] for e in epochs], "o-", color=colour, label=label)
            if "ema_top1" in epochs[0]:
                axes[1].plot(x, [e["ema_top1"] for e in epochs], "s--", color=colour, label=f"{label} EMA top-1")
    for ax, title in zip(axes, ("loss (train: label-smoothed)", "accuracy (%)", "learning rate")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out

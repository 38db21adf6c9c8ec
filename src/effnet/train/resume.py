"""Which state a run continues from (`--resume`): a named checkpoint, or its run folder's newest good step
checkpoint, refused when it was trained with other settings (`config.RESUME_KEYS`) than the ones given now.  The
checkpoint's contents are `effnet.train.checkpoint`'s; which step checkpoint to trust is the run folder's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from effnet.train import checkpoint as ckpt
from effnet.train import run_folder as folder
from effnet.train.config import RESUME_KEYS, ConfigError, TrainConfig


def check_recorded_settings(config: TrainConfig, run_dir: Path | None) -> None:
    """Resuming a run folder: the settings must be those it records (run.json, or an older run's config.json)."""
    if config.resume is not True or run_dir is None:
        return
    recorded = folder.run_settings(run_dir, RESUME_KEYS)
    changes = folder.setting_changes(recorded or {}, folder.settings_of(config.to_dict(), RESUME_KEYS))
    if changes:
        raise ConfigError(f"{run_dir}: cannot resume with different settings ({', '.join(changes)}); "
                          "rerun the original command with --resume, or use another --out")


def find_resume(config: TrainConfig, run_dir: Path | None, *, main: bool) -> dict[str, Any] | None:
    """The state to continue from: a named checkpoint, or the run folder's newest good step checkpoint (damaged
    ones renamed aside by the `main` process); None to start from the beginning (no checkpoint yet)."""
    if not config.resume:
        return None
    now = folder.settings_of(config.to_dict(), RESUME_KEYS)
    if isinstance(config.resume, str):
        state = ckpt.load_checkpoint(config.resume)
    else:
        if run_dir is None:
            raise ConfigError("resume: got True without out_dir; expected the run folder to resume (--out)")
        if main:
            ckpt.remove_stale_temporaries(ckpt.checkpoint_dir(run_dir))
        state = folder.choose_checkpoint(run_dir, RESUME_KEYS, rename=main)
        if state is None:
            return None  # nothing saved yet: start from the beginning
    changes = folder.setting_changes(folder.settings_of(state.get("config", {}), RESUME_KEYS), now)
    if changes:
        raise ConfigError(f"{state['path']}: cannot resume with different settings ({', '.join(changes)}); "
                          "rerun the original command with --resume")
    return state


__all__ = ["check_recorded_settings", "find_resume"]

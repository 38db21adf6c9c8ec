"""Training settings that another setting turns into nothing: one line naming both, whether they came from
`effnet train`'s flags or from a search's budget flags and `--set KEY=VALUE`.

Each command says which settings it was given (`given`), what every setting of the run is (`settings`: the given
ones over the defaults) and how to name a setting the way its user wrote it (`name`: `--lr-base`, or
`--set lr_base=...`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

from effnet.cli._args import flags_apply_only, it_or_them
from effnet.errors import EffnetError

Name = Callable[[str], str]
"""A TrainConfig field as the command line set it: "--eps", "--no-ema-warmup", "--set eps=1e-3"."""

_ONLY_WITH = (  # (fields, the field and value they need, what they are for)
    (("eps", "rmsprop_decay"), ("optimizer", "rmsproptf"), "the optimizer"),
    (("randaugment_n", "randaugment_m", "progressive_randaugment"), ("augment", "randaugment"), "the augmentation"),
)


def check_settings(given: Mapping[str, Any], settings: Mapping[str, Any], name: Name, *,
                   holdout: int | None = None, data_is_a_folder: bool = True) -> None:
    """Raise `EffnetError` for a given setting that the run would ignore because of another one.  `holdout`: the
    training images the run validates on (0: the data's own val/ split, and then no test split is evaluated; None:
    the command does not evaluate a test split at all)."""
    if given.get("lr") is not None and given.get("lr_base") is not None:
        raise EffnetError(f"{name('lr')} sets the peak learning rate, so {name('lr_base')} (per 256 images, scaled by "
                          "the batch) would be ignored; give one")
    for fields, (field, value), what in _ONLY_WITH:
        ignored = [f for f in fields if given.get(f) is not None]
        if ignored and settings[field] != value:
            names = [name(f) for f in ignored]
            raise EffnetError(f"{flags_apply_only(names)} to --{field} {value}, not {settings[field]}; drop "
                              f"{it_or_them(names)} or change {what}")
    if "ema_warmup" in given and settings["ema_decay"] == 0:
        raise EffnetError(f"{name('ema_warmup')} applies only to the EMA weights, which an EMA decay of 0 "
                          f"({name('ema_decay')}) turns off; drop one")
    if given.get("bn_momentum") is not None and settings["freeze_backbone"]:
        raise EffnetError(f"{name('bn_momentum')} sets how BatchNorm's running statistics follow the batches, but "
                          f"{name('freeze_backbone')} keeps every one of them fixed; drop one")
    tuning = [f for f, off in (("freeze_backbone", False), ("backbone_lr_scale", 1.0)) if settings.get(f, off) != off]
    if tuning and not settings.get("pretrained"):  # a random-feature baseline is a real experiment, but say so
        names = [name(f) for f in tuning]
        kept = "kept fixed: only the classifier trains" if settings["freeze_backbone"] else "at a scaled lr"
        warnings.warn(f"{' and '.join(names)} without {name('pretrained')}: the backbone starts from random weights "
                      f"({kept}); add --pretrained [FILE] to fine-tune pretrained weights", stacklevel=2)
    if "strict" in given and not data_is_a_folder:
        raise EffnetError(f"{name('strict')} applies only to an image folder (it stops at an unreadable image); "
                          f"{settings['data']} has no image files; drop it")
    if holdout is None:
        return
    if holdout == 0 and ("test" in given or given.get("test_subset") is not None):
        names = [name(f) for f in ("test", "test_subset") if f in given and given[f] is not None]
        own = "its own val/ split" if data_is_a_folder else "its test split"
        why = (f"with {name('holdout')} 0, {settings['data']} is validated on {own}" if "holdout" in given
               else f"without one, {settings['data']} is validated on {own}")
        raise EffnetError(f"{flags_apply_only(names)} to the test split's evaluation after training, which needs a "
                          f"holdout (--holdout N): {why}, and no test split is evaluated after; drop "
                          f"{it_or_them(names)} or give --holdout N")
    if given.get("test_subset") is not None and settings["test"] is False:
        raise EffnetError(f"{name('test_subset')} applies only to the test split's evaluation, which {name('test')} "
                          "turns off; drop one")


__all__ = ["Name", "check_settings"]

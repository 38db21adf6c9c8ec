"""What a run will do, derived from its config and data before any model is built: the `Plan`."""

from __future__ import annotations

from effnet.data import ImageSource, open_sources
from effnet.data.batches import data_path
from effnet.data.loader import SubsetSource, fixed_subset
from effnet.data.sources import is_fashion_mnist
from effnet.registry import get_config, get_spec
from effnet.spec import NetSpec
from effnet.train.compiled import compile_mode
from effnet.train.config import (
    FASHION_MNIST_HOLDOUT,
    MAX_WARMUP_FRACTION,
    ConfigError,
    Plan,
    TrainConfig,
    check_config,
    check_resolution,
)
from effnet.train.progressive import Stage, default_start_size, stage_plan
from effnet.train.schedule import make_schedule, scaled_lr
from effnet.weights import preprocessing_config


def plan_run(config: TrainConfig) -> tuple[Plan, str]:
    """The effective settings without training (for `--recipe`): reads the data index, builds no model."""
    check_config(config)
    spec = get_spec(config.model)
    train_src, val_src, test_src = open_data(config)
    return make_plan(config, spec, train_src, val_src, world_size=1, test_src=test_src), spec.name


def holdout_size(c: TrainConfig) -> int:
    """Validation images carved from the end of the training set: `c.holdout`, else 5,000 for Fashion-MNIST and
    none for an image folder (which has its own val/)."""
    if c.holdout is not None:
        return c.holdout
    return FASHION_MNIST_HOLDOUT if is_fashion_mnist(c.data) else 0


def open_data(c: TrainConfig) -> tuple[ImageSource, ImageSource, ImageSource | None]:
    """(train, val, test) sources of `c.data`, checked.  With a holdout, val is the last `holdout` training
    images and test the data's own evaluation split; without, val is that split and test is None.  Train and val
    are cut to their fixed random subsets if asked, and test too where `c.test_subset` asks (a smoke test)."""
    sources = open_sources(c.data)
    train, val, test = sources.train, sources.val, None
    n = holdout_size(c)
    if n:
        if n >= len(train):
            raise ConfigError(f"holdout: got {n}, expected fewer than the {len(train)} training images of {c.data}")
        keep = len(train) - n
        train, val, test = (SubsetSource(train, list(range(keep)), f"{train.name} [:{keep}]"),
                            SubsetSource(train, list(range(keep, len(train))), f"{train.name} [{keep}:]"), val)
    elif c.test_subset is not None:
        raise ConfigError(f"test_subset: got {c.test_subset}, expected it only with a holdout (--holdout N): "
                          f"{c.data} is validated on its own val/ split, so no test split is evaluated")
    for field, source, what in (("train_subset", train, "training"), ("val_subset", val, "validation"),
                                ("test_subset", test, "test")):
        size = getattr(c, field)
        if source is not None and size is not None and size > len(source):
            raise ConfigError(f"{field}: got {size}, expected at most the {len(source)} {what} images of {c.data}")
    if test is not None:
        test = fixed_subset(test, c.test_subset, c.seed)
    return fixed_subset(train, c.train_subset, c.seed), fixed_subset(val, c.val_subset, c.seed), test


def make_plan(c: TrainConfig, spec: NetSpec, train_src: ImageSource, val_src: ImageSource, world_size: int,
              test_src: ImageSource | None = None) -> Plan:
    """Steps per epoch, total steps, lr, warm-up, dropout… for this config, data and number of processes."""
    resolution = check_resolution(c.resolution if c.resolution is not None else spec.resolution)
    if c.batch_size % world_size:
        raise ConfigError(f"batch_size: got {c.batch_size}, expected a multiple of the {world_size} processes")
    per_rank = c.batch_size // world_size
    steps_per_epoch = (len(train_src) // world_size) // per_rank
    if steps_per_epoch < 1:
        raise ConfigError(f"batch_size: got {c.batch_size}, expected at most the {len(train_src)} training images")
    total = c.steps if c.steps is not None else max(1, int(round(c.epochs * steps_per_epoch)))
    base_lr = c.lr if c.lr is not None else scaled_lr(c.lr_base, c.batch_size)
    sched = make_schedule(base_lr=base_lr, steps_per_epoch=steps_per_epoch, warmup_epochs=c.warmup_epochs,
                          decay_epochs=c.decay_epochs, decay_rate=c.decay_rate)
    warmup = min(sched.warmup_steps, int(MAX_WARMUP_FRACTION * total))
    model_cfg = get_config(spec, resolution)
    if isinstance(c.pretrained, str):  # a weights file records the normalisation its weights were trained with
        model_cfg = preprocessing_config(c.pretrained, model_cfg) or model_cfg
    crop = c.eval_crop_fraction or (1.0 if is_fashion_mnist(c.data) else model_cfg.crop_fraction)
    dropout = c.dropout if c.dropout is not None else spec.dropout
    stages = progressive_stages(c, total, resolution, dropout)
    return Plan(
        num_classes=len(train_src.classes), train_images=len(train_src), val_images=len(val_src),
        test_images=len(test_src) if test_src is not None else 0, holdout=holdout_size(c),
        world_size=world_size, per_rank_batch=per_rank, steps_per_epoch=steps_per_epoch, total_steps=total,
        base_lr=base_lr, warmup_steps=warmup, decay_steps=sched.decay_steps, resolution=resolution,
        dropout=stages[-1].dropout,
        drop_path=c.drop_path if c.drop_path is not None else spec.drop_path_rate,
        bn_momentum=c.bn_momentum if c.bn_momentum is not None else spec.bn_momentum,
        eval_crop_fraction=crop, mean=model_cfg.mean, std=model_cfg.std,
        data_path=data_path(train_src, augment=c.augment, batched=c.batched_data),
        compile=compile_mode(c, total, None), stages=stages,
    )


def progressive_stages(c: TrainConfig, total_steps: int, resolution: int, dropout: float) -> tuple[Stage, ...]:
    """The run's stage plan (`effnet.train.progressive`), its first size checked against the final one."""
    if c.progressive is not None:
        if c.progressive > total_steps:
            raise ConfigError(f"progressive: got {c.progressive} stages, expected at most the run's {total_steps} "
                              "steps (each stage trains at least one step)")
        start = c.progressive_size if c.progressive_size is not None else default_start_size(resolution)
        if start > resolution:
            raise ConfigError(f"progressive_size: got {start} px, expected at most the final size {resolution} px "
                              "(the run's resolution, where it is validated); lower it or raise the resolution")
    return stage_plan(stages=c.progressive, total_steps=total_steps, final_size=resolution, dropout=dropout,
                      randaugment_m=c.randaugment_m, start_size=c.progressive_size,
                      dropout_ends=c.progressive_dropout, randaugment_ends=c.progressive_randaugment,
                      mixup_ends=c.progressive_mixup)

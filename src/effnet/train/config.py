"""`TrainConfig`: every knob of a run, with the paper's recipe (Tan & Le 2019, Sec. 5.2, and the reference code)
as defaults.  `check_config` rejects bad values before any work starts; `recipe_lines` renders the effective
settings (`effnet train --recipe`).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields
from typing import Any

from effnet import allocator
from effnet.data.transforms import AUGMENTATIONS
from effnet.errors import EffnetError
from effnet.spec import NetSpec
from effnet.train.optim import OPTIMIZERS
from effnet.train.progressive import V2_S, Stage, describe_plan

MIN_RESOLUTION, MAX_RESOLUTION = 8, 2048
MAX_WARMUP_FRACTION = 0.1
COMPILE_MIN_STEPS: int | None = None
"""Runs of at least this many steps compile by default (`compile=None`); None: only `--compile` compiles.  A
compile has to repay its time (about 200 s with an empty inductor cache, 24 s with a warm one, on 2 shared cores).
With effnet's CPU kernels for the depthwise convolution's weight gradient and the BN+SiLU backward only, the
compiled step of the experiments' baseline (18 px, batch 128, one thread) saved 42-58 ms a step, which repaid a
cold compile after 4,000 steps, the threshold then.  Since BN+SiLU's forward and the squeeze-excite run as effnet's
kernels too, compiling fuses next to nothing more: 1,224 against 1,211 images/s for the baseline, 640 against 648
for B0 at 32 px (`benchmarks/run.py --only train_speed`, interleaved rounds, docs/RESULTS.md "Training speed"),
a saving that would take some 200,000 steps to repay a cold compile."""

FASHION_MNIST_HOLDOUT = 5_000
"""Fashion-MNIST validates on its last 5,000 training images; its 10,000-image test split is only reported."""


class ConfigError(EffnetError, ValueError):
    """A training setting is out of range; the message names the field (also kept in `field`)."""

    field: str | None = None


@dataclass(frozen=True)
class TrainConfig:
    """One training run.  Budget: `steps` optimizer steps if set, else `epochs` (may be fractional).

    Validation: `holdout` images carved from the end of the training set choose the checkpoint (default 5,000
    for Fashion-MNIST, none for an image folder, which validates on its own val/); with a holdout, the data's own
    evaluation split (Fashion-MNIST's test set, a folder's val/) is evaluated once, after training, on the chosen
    weights, and only reported (`TrainResult.test_top1`).

    Recipe defaults (each a field): RMSProp (TF form) decay 0.9, momentum 0.9, ε 1e-3; lr 0.016 × batch/256;
    5 warm-up epochs (capped at 10% of a shorter budget); ×0.97 every 2.4 epochs; weight decay 1e-5 (not on norms
    and biases); EMA 0.9999 with warm-up; label smoothing 0.1; dropout and drop-path from the model's variant;
    AutoAugment; random-resized crop (area 0.08–1) and flip.
    """

    model: str | NetSpec = "efficientnet_b0"
    data: str = "fashion-mnist"
    out_dir: str | None = None
    resolution: int | None = None
    epochs: float = 350.0
    steps: int | None = None
    batch_size: int = 128
    lr: float | None = None
    lr_base: float = 0.016
    warmup_epochs: float = 5.0
    decay_epochs: float = 2.4
    decay_rate: float = 0.97
    optimizer: str = "rmsproptf"
    rmsprop_decay: float = 0.9
    momentum: float = 0.9
    eps: float = 1e-3
    weight_decay: float = 1e-5
    ema_decay: float = 0.9999
    ema_warmup: bool = True
    label_smoothing: float = 0.1
    dropout: float | None = None
    drop_path: float | None = None
    bn_momentum: float | None = None
    augment: str = "autoaugment"
    randaugment_n: int = 2
    randaugment_m: int = 9
    crop_scale: tuple[float, float] = (0.08, 1.0)
    hflip: bool = True
    progressive: int | None = None  # EfficientNetV2's progressive learning in this many stages (train.progressive)
    progressive_size: int | None = None  # the first stage's image size (None: the final size x 128/300)
    progressive_dropout: tuple[float, float] = V2_S.dropout  # (first stage, last stage), Table 6's V2-S
    progressive_randaugment: tuple[int, int] = V2_S.randaugment
    progressive_mixup: tuple[float, float] = V2_S.mixup  # mixup's Beta(alpha, alpha); 0: no mixup
    eval_crop_fraction: float | None = None
    channels_last: bool = True
    fused_bn_silu: bool = True  # BN+SiLU keeps only BN's input for backward (effnet.optimize.fuse_bn_silu_for_training)
    own_kernels: bool = True  # CPU training: depthwise convs through effnet.ops, 1x1 convs as GEMMs (layers.py)
    compile: bool | None = None  # torch.compile the model; None: where the run is long enough to repay it
    batched_data: bool = True  # in-memory batched augmentation where the data and policy allow (effnet.data.batches)
    pretrained: bool | str = False
    freeze_backbone: bool = False
    backbone_lr_scale: float = 1.0
    seed: int = 0
    workers: int = 2
    checkpoint_every: int | None = None
    keep_last: int = 3
    resume: bool | str = False
    overwrite: bool = False  # remove the files of an earlier run in out_dir first (effnet.train.run_folder)
    strict: bool = False
    train_subset: int | None = None
    val_subset: int | None = None
    test_subset: int | None = None  # test on a fixed random subset of the test split (a smoke test; reported as such)
    holdout: int | None = None  # validation images carved from the end of the training set (None: HOLDOUT_DEFAULT)
    test: bool = True  # with a holdout, evaluate the data's own val/test split once, at the end, on the chosen weights
    diverged_as_result: bool = False  # a diverged run ends with the weights validation chose before it (tested, and
    # returned with TrainResult.diverged) instead of raising TrainingDiverged; it still raises without chosen weights
    log_every: int = 20
    tensorboard: bool = False  # also write TensorBoard event files into out_dir (the `tensorboard` extra)
    progress: bool = True
    device: str = "auto"
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if isinstance(self.model, NetSpec):
            data["model"] = self.model.to_dict()
        data["crop_scale"] = list(self.crop_scale)
        for name in PROGRESSIVE_PAIRS:
            data[name] = list(getattr(self, name))
        return data


# Settings that must match between a checkpoint and the run resuming it (others, e.g. workers, may change).
RESUME_KEYS = ("model", "data", "resolution", "batch_size", "seed", "train_subset", "holdout", "lr", "lr_base",
               "optimizer", "augment", "pretrained", "freeze_backbone", "epochs", "steps", "warmup_epochs",
               "fused_bn_silu", "progressive", "progressive_size", "progressive_dropout", "progressive_randaugment",
               "progressive_mixup")


RANDAUGMENT_MAX_M = 30
"""RandAugment's magnitudes run from 0 to 30 (31 bins, as in its paper and torchvision)."""

PROGRESSIVE_PAIRS = ("progressive_dropout", "progressive_randaugment", "progressive_mixup")
"""The (first stage, last stage) settings of progressive learning."""


SWITCHES = ("ema_warmup", "hflip", "channels_last", "fused_bn_silu", "own_kernels", "batched_data", "freeze_backbone",
            "overwrite", "strict", "test", "tensorboard", "progress")
"""The TrainConfig fields that are true or false (`pretrained` and `resume` may also name a file)."""


def _fail(field: str, value: Any, expected: str) -> None:
    error = ConfigError(f"{field}: got {value!r}, expected {expected}")
    error.field = field
    raise error


def _positive(field: str, value: Any, *, integer: bool = False, zero_ok: bool = False) -> None:
    ok = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    ok = ok and math.isfinite(value) and (value >= 0 if zero_ok else value > 0)
    if not ok:
        _fail(field, value, ("an integer" if integer else "a number") + (" >= 0" if zero_ok else " > 0"))


def _fraction(field: str, value: Any, *, high_open: bool = True) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    ok = ok and (value < 1 if high_open else value <= 1)
    if not ok:
        _fail(field, value, "a number in [0, 1)" if high_open else "a number in [0, 1]")


def check_resolution(value: Any, field: str = "resolution") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_RESOLUTION <= value <= MAX_RESOLUTION:
        _fail(field, value, f"an integer number of pixels in [{MIN_RESOLUTION}, {MAX_RESOLUTION}] (e.g. 64, 224)")
    return value


def check_config(c: TrainConfig) -> None:
    """Every numeric field in range; raised before data or model are touched."""
    if c.resolution is not None:
        check_resolution(c.resolution)
    if c.steps is not None:
        _positive("steps", c.steps, integer=True)
    else:
        _positive("epochs", c.epochs)
    _positive("batch_size", c.batch_size, integer=True)
    if c.lr is not None:
        _positive("lr", c.lr)
    _positive("lr_base", c.lr_base)
    _positive("warmup_epochs", c.warmup_epochs, zero_ok=True)
    _positive("decay_epochs", c.decay_epochs)
    _positive("decay_rate", c.decay_rate)
    if c.decay_rate > 1:  # the learning rate would grow at every decay
        _fail("decay_rate", c.decay_rate, "a number in (0, 1]: the factor applied to the learning rate at each decay")
    if c.optimizer not in OPTIMIZERS:
        _fail("optimizer", c.optimizer, f"one of {OPTIMIZERS}")
    _fraction("rmsprop_decay", c.rmsprop_decay)
    _fraction("momentum", c.momentum)
    _positive("eps", c.eps)
    _positive("weight_decay", c.weight_decay, zero_ok=True)
    _fraction("ema_decay", c.ema_decay)
    _fraction("label_smoothing", c.label_smoothing)
    for name in ("dropout", "drop_path", "bn_momentum"):
        if getattr(c, name) is not None:
            _fraction(name, getattr(c, name))
    if c.augment not in AUGMENTATIONS:
        _fail("augment", c.augment, f"one of {AUGMENTATIONS}")
    _positive("randaugment_n", c.randaugment_n, integer=True, zero_ok=True)
    _positive("randaugment_m", c.randaugment_m, integer=True, zero_ok=True)
    if c.randaugment_m > RANDAUGMENT_MAX_M:
        _fail("randaugment_m", c.randaugment_m, f"an integer in [0, {RANDAUGMENT_MAX_M}] (RandAugment's magnitude "
              "scale)")
    pair = isinstance(c.crop_scale, (tuple, list)) and len(c.crop_scale) == 2
    if not (pair and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in c.crop_scale)
            and 0 < c.crop_scale[0] <= c.crop_scale[1] <= 1):
        _fail("crop_scale", c.crop_scale, "(min, max) area fractions with 0 < min <= max <= 1")
    _check_progressive(c)
    if isinstance(c.seed, bool) or not isinstance(c.seed, numbers.Integral):
        _fail("seed", c.seed, "an integer")
    for name in SWITCHES:
        if not isinstance(getattr(c, name), bool):
            _fail(name, getattr(c, name), "true or false")
    if c.compile is not None and not isinstance(c.compile, bool):
        _fail("compile", c.compile, "true, false or null (compile where the run is long enough to repay it)")
    if c.eval_crop_fraction is not None and not 0 < c.eval_crop_fraction <= 1:
        _fail("eval_crop_fraction", c.eval_crop_fraction, "a fraction in (0, 1]")
    _positive("backbone_lr_scale", c.backbone_lr_scale, zero_ok=True)
    _positive("workers", c.workers, integer=True, zero_ok=True)
    if c.checkpoint_every is not None:
        _positive("checkpoint_every", c.checkpoint_every, integer=True)
    _positive("keep_last", c.keep_last, integer=True)
    for name in ("train_subset", "val_subset", "test_subset"):
        if getattr(c, name) is not None:
            _positive(name, getattr(c, name), integer=True)
    if c.holdout is not None:
        _positive("holdout", c.holdout, integer=True, zero_ok=True)
    _positive("log_every", c.log_every, integer=True)
    if c.threads is not None:
        _positive("threads", c.threads, integer=True)
    if c.device not in ("auto", "cpu") and not c.device.startswith("cuda"):
        _fail("device", c.device, "'auto', 'cpu' or 'cuda[:N]'")
    if c.overwrite and c.resume:
        _fail("overwrite", c.overwrite, "False with resume (continue the run in out_dir, or remove it and start "
              "again, not both)")
    if (c.overwrite or c.tensorboard) and not c.out_dir:
        _fail("overwrite" if c.overwrite else "tensorboard", True, "an out_dir (--out) to write into")
    if c.freeze_backbone and c.backbone_lr_scale != 1.0:
        _fail("backbone_lr_scale", c.backbone_lr_scale, "1.0 with freeze_backbone (a frozen backbone has no lr)")


def _check_progressive(c: TrainConfig) -> None:
    """Progressive learning's settings (the first size against the final one is checked with the plan)."""
    if c.progressive is not None:
        _positive("progressive", c.progressive, integer=True)
        if c.dropout is not None:
            _fail("dropout", c.dropout, "none with progressive, whose stages set the dropout (progressive_dropout: "
                  "the first stage's and the last one's)")
    if c.progressive_size is not None:
        check_resolution(c.progressive_size, "progressive_size")
    for name in PROGRESSIVE_PAIRS:
        pair = getattr(c, name)
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            _fail(name, pair, "(first stage, last stage)")
    for value in c.progressive_dropout:
        _fraction("progressive_dropout", value)
    for value in c.progressive_mixup:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not (ok and 0 <= value <= 1):
            _fail("progressive_mixup", value, "a mixup alpha in [0, 1] (0: no mixup)")
    for value in c.progressive_randaugment:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= RANDAUGMENT_MAX_M:
            _fail("progressive_randaugment", value, f"an integer magnitude in [0, {RANDAUGMENT_MAX_M}]")


@dataclass(frozen=True)
class Plan:
    """Quantities derived from a config and the data: what the run will actually do."""

    num_classes: int
    train_images: int
    val_images: int
    test_images: int  # 0: no separate test split (validation is the data's own val/)
    holdout: int
    world_size: int
    per_rank_batch: int
    steps_per_epoch: int
    total_steps: int
    base_lr: float
    warmup_steps: int
    decay_steps: int
    resolution: int
    dropout: float
    drop_path: float
    bn_momentum: float
    eval_crop_fraction: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    data_path: str = "per-sample"  # or "batched": which path makes the batches (effnet.data.batches)
    compile: bool = False  # whether the training step is compiled (effnet.train.compiled.compile_mode)
    stages: tuple[Stage, ...] = ()  # the stage plan (effnet.train.progressive); one stage without progressive


def _own_kernels_line() -> str:
    """What `own_kernels` means on this machine: effnet's CPU training paths, or why its C kernels are missing."""
    from effnet.layers import cpu_kernels_problem

    line = ("effnet's on CPU: depthwise through effnet's operator (its own weight gradient where faster), 1x1 as "
            "matrix products, BN+SiLU and squeeze-excite by effnet's C kernels")
    problem = cpu_kernels_problem()
    return line if problem is None else f"{line}; the C kernels cannot be built here ({problem}): ATen's in their place"


def recipe_lines(c: TrainConfig, plan: Plan, model_name: str) -> list[tuple[str, str]]:
    """(setting, effective value and where it comes from) for `effnet train --recipe` and the run's log."""
    lr_note = "set" if c.lr is not None else f"{c.lr_base} x {c.batch_size}/256"
    warm = f"{plan.warmup_steps} steps ({c.warmup_epochs:g} epochs"
    warm += f", capped at {MAX_WARMUP_FRACTION:.0%} of the budget)" if plan.warmup_steps < round(
        c.warmup_epochs * plan.steps_per_epoch) else ")"
    if c.optimizer == "rmsproptf":
        opt = f"RMSProp, TF form: decay {c.rmsprop_decay}, momentum {c.momentum}, eps {c.eps} inside the sqrt"
    else:
        opt = f"SGD, Nesterov momentum {c.momentum}"
    pre = c.pretrained if isinstance(c.pretrained, str) else ("bundled" if c.pretrained else "no (from scratch)")
    lines = [
        ("model", f"{model_name}, {plan.num_classes} classes, {plan.resolution} px"),
        ("pretrained", str(pre)),
        ("data", f"{c.data}: {plan.train_images} train / {plan.val_images} val images"
                 + (f" (held out from the end of the training set) / {plan.test_images} test images, evaluated "
                    "once after training on the chosen weights" if plan.holdout else "")),
        ("budget", f"{plan.total_steps} steps = {plan.total_steps / plan.steps_per_epoch:.3g} epochs of "
                   f"{plan.steps_per_epoch} steps"),
        ("batch", f"{c.batch_size} global = {plan.world_size} process(es) x {plan.per_rank_batch}"),
        ("optimizer", opt),
        ("learning rate", f"{plan.base_lr:.6g} ({lr_note})"),
        ("warm-up", f"linear from 0 over {warm}"),
        ("decay", f"x{c.decay_rate} every {c.decay_epochs:g} epochs ({plan.decay_steps} steps), staircase"),
        ("weight decay", f"{c.weight_decay:g} on conv/dense weights; none on norm and bias"),
        ("fine-tuning", ("frozen backbone" if c.freeze_backbone else f"backbone lr x{c.backbone_lr_scale:g}")
         + ("; new classifier zero-initialised" if c.pretrained else "")),
        ("EMA", f"decay {c.ema_decay}" + (", warm-up min(d, (1+n)/(10+n))" if c.ema_warmup else "")
         if c.ema_decay > 0 else "off"),
        ("label smoothing", f"{c.label_smoothing:g}"),
        ("dropout", f"{plan.dropout:g}" + (" (last stage's; see progressive)" if c.progressive is not None
                                            else " (variant)" if c.dropout is None else "")),
        ("BatchNorm momentum", f"{plan.bn_momentum:g}" + (" (model)" if c.bn_momentum is None else "")),
        ("drop-path", f"{plan.drop_path:g}" + (" (variant)" if c.drop_path is None else "")),
        ("augmentation", {"autoaugment": "AutoAugment (ImageNet policy)",
                          "randaugment": f"RandAugment n={c.randaugment_n} m={c.randaugment_m}",
                          "none": "none"}[c.augment]
         + f"; random-resized crop area {c.crop_scale[0]:g}-{c.crop_scale[1]:g}" + ("; h-flip" if c.hflip else "")),
        ("eval preprocessing", f"resize to {plan.resolution}/{plan.eval_crop_fraction:.3f}, centre crop "
                               f"{plan.resolution}, mean {tuple(round(m, 3) for m in plan.mean)}"),
        ("data path", "in-memory, whole batches cropped and flipped as tensors" if plan.data_path == "batched"
         else "per sample" + (" (asked for: --per-sample-data)" if not c.batched_data else "")),
        ("compile", ("torch.compile" if plan.compile else "eager") + ("" if c.compile is not None else
         f" (default: runs of {COMPILE_MIN_STEPS} steps or more compile)" if COMPILE_MIN_STEPS else
         " (default: compiling does not repay its time on CPU; --compile asks for it)")),
        ("memory format", "channels_last" if c.channels_last else "contiguous"),
        ("BN+SiLU", "fused where SiLU follows BN: saves only BN's input for backward (same gradients; no effect "
                    "on ReLU/ReLU6 models such as Lite)" if c.fused_bn_silu else "stock modules"),
        ("convolutions", _own_kernels_line() if c.own_kernels else "stock (ATen/oneDNN)"),
        ("memory allocator", allocator.describe()),
        ("seed", str(c.seed)),
    ]
    if c.progressive is not None:
        at = next(i for i, (k, _) in enumerate(lines) if k == "augmentation") + 1
        lines[at:at] = _progressive_lines(c, plan)
    return lines


def _progressive_lines(c: TrainConfig, plan: Plan) -> list[tuple[str, str]]:
    """The stage plan's lines of the recipe."""
    unused = "" if c.augment == "randaugment" else f"; RandAugment's magnitude unused with --augment {c.augment}"
    head = (f"{c.progressive} stage(s), size and regularisation linear from the first stage to the last "
            f"(EfficientNetV2 progressive learning); validation at {plan.resolution} px{unused}")
    return [("progressive", head)] + [(f"  stage {s.index + 1}", text)
                                      for s, text in zip(plan.stages, describe_plan(plan.stages, plan.total_steps))]


def field_names() -> list[str]:
    return [f.name for f in fields(TrainConfig)]

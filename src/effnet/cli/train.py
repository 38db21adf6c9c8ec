"""`effnet train`, `effnet eval`, `effnet plot`: parse, call `effnet.train`, print."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import fields

from effnet.cli._args import (
    add_data_source,
    check_output_file,
    data_source,
    device,
    flags_apply_only,
    fraction,
    it_or_them,
    non_negative_int,
    pixels,
    positive_int,
    progress_line,
)
from effnet.cli._train_settings import check_settings
from effnet.data import is_fashion_mnist
from effnet.errors import EffnetError
from effnet.report import format_duration, format_table
from effnet.runtime import ENGINES, PRECISIONS
from effnet.runtime.auto import announce_choices
from effnet.train.config import ConfigError, TrainConfig
from effnet.train.plan import holdout_size

_D = {f.name: f.default for f in fields(TrainConfig)}


EVAL_CALIBRATION = 64
"""Train-split images `effnet eval --precision int8` calibrates on by default."""

PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg", ".webp", ".eps", ".ps", ".tif", ".tiff")
"""The figure formats `effnet plot -o` writes (matplotlib picks the format from the suffix)."""


def register(sub: argparse._SubParsersAction) -> None:
    _register_train(sub)
    _register_eval(sub)
    p = sub.add_parser("plot", help="draw loss / accuracy / learning-rate curves of training runs to a PNG")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folder(s) written by `effnet train`")
    p.add_argument("-o", "--output", dest="out", default=None, help="PNG path (default: RUN_DIR/curves.png)")
    p.add_argument("--out", dest="out", default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # older spelling
    p.add_argument("--labels", default=None, help="comma-separated legend labels, one per run")
    p.set_defaults(func=run_plot)
    p = sub.add_parser("runs", help="list run folders: model, data, steps done / total, best val top-1, state")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run folder(s), or folder(s) of run folders (e.g. runs/)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=run_runs)


def _register_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train or fine-tune with the paper's recipe (works under torchrun)",
                       description="Train on an image folder (train/ and val/ sub-folders) or on fashion-mnist. "
                       "Defaults are the paper's recipe; every one can be overridden.")
    add_data_source(p, "'fashion-mnist' or a folder with train/<class>/... and val/<class>/...")
    p.add_argument("--model", default="efficientnet_b0", help="registered name or spec .json (default %(default)s)")
    p.add_argument("--resolution", type=pixels, default=None, help="input size in px (default: the model's)")
    p.add_argument("--out", default=None, help="run folder for checkpoints and metrics (default: runs/<model>)")
    g = p.add_argument_group("budget")
    g.add_argument("--epochs", type=float, default=None, help=f"epochs (default {_D['epochs']:g})")
    g.add_argument("--steps", type=int, default=None, help="optimizer steps instead of epochs")
    g.add_argument("--batch-size", type=positive_int, default=_D["batch_size"],
                   help="global batch (default %(default)s)")
    g.add_argument("--train-subset", type=positive_int, default=None,
                   help="train on a fixed random subset of N images")
    g.add_argument("--val-subset", type=positive_int, default=None,
                   help="validate on a fixed random subset of N images")
    g.add_argument("--test-subset", type=positive_int, default=None,
                   help="test on a fixed random subset of N images of the test split (a smoke test)")
    g.add_argument("--holdout", type=int, default=None,
                   help="validate on the last N training images, and evaluate the data's own val/test split once "
                        "after training on the weights chosen there (default: 5000 for fashion-mnist, 0 for a "
                        "folder, which validates on its val/)")
    g.add_argument("--no-test", action="store_true", help="with a holdout, skip the final test-split evaluation")
    g = p.add_argument_group("recipe (paper defaults)")
    g.add_argument("--lr", type=float, default=None, help="peak learning rate (default: lr-base x batch/256)")
    g.add_argument("--lr-base", type=float, default=None, help=f"lr per 256 images (default {_D['lr_base']:g})")
    g.add_argument("--warmup-epochs", type=float, default=_D["warmup_epochs"], help="(default %(default)s)")
    g.add_argument("--decay-epochs", type=float, default=_D["decay_epochs"], help="(default %(default)s)")
    g.add_argument("--decay-rate", type=float, default=_D["decay_rate"], help="(default %(default)s)")
    g.add_argument("--optimizer", choices=["rmsproptf", "sgd"], default=_D["optimizer"],
                   help="rmsproptf (the paper's RMSProp, TF form; default) or sgd (Nesterov momentum)")
    g.add_argument("--rmsprop-decay", type=float, default=None, help=f"(default {_D['rmsprop_decay']:g})")
    g.add_argument("--momentum", type=float, default=_D["momentum"], help="(default %(default)s)")
    g.add_argument("--eps", type=float, default=None, help=f"RMSProp epsilon (default {_D['eps']:g})")
    g.add_argument("--weight-decay", type=float, default=_D["weight_decay"], help="(default %(default)s)")
    g.add_argument("--ema-decay", type=float, default=_D["ema_decay"], help="0 turns EMA off (default %(default)s)")
    g.add_argument("--no-ema-warmup", action="store_true", help="use the EMA decay from the first step")
    g.add_argument("--label-smoothing", type=float, default=_D["label_smoothing"], help="(default %(default)s)")
    g.add_argument("--dropout", type=float, default=None, help="(default: the variant's)")
    g.add_argument("--drop-path", type=float, default=None, help="stochastic depth rate (default: the variant's)")
    g.add_argument("--bn-momentum", type=float, default=None,
                   help="BatchNorm running-stat momentum, PyTorch convention (default: the model's)")
    g.add_argument("--augment", choices=["autoaugment", "randaugment", "none"], default=_D["augment"],
                   help="training augmentation policy (default %(default)s)")
    g.add_argument("--randaugment-n", type=int, default=None,
                   help=f"RandAugment: operations per image (default {_D['randaugment_n']})")
    g.add_argument("--randaugment-m", type=int, default=None,
                   help=f"RandAugment: magnitude, 0-30 (default {_D['randaugment_m']})")
    g.add_argument("--crop-scale", type=float, nargs=2, default=list(_D["crop_scale"]), metavar=("MIN", "MAX"),
                   help="random-resized-crop area range (default 0.08 1)")
    g.add_argument("--no-flip", action="store_true", help="no random horizontal flip")
    g.add_argument("--eval-crop-fraction", type=float, default=None,
                   help="eval centre-crop fraction (default: the model's; 1.0 for fashion-mnist)")
    g = p.add_argument_group("progressive learning (EfficientNetV2; defaults: the paper's Table 6 for V2-S)")
    g.add_argument("--progressive", type=int, default=None, metavar="M",
                   help="train in M stages, each at a larger image size and a stronger regularisation than the last, "
                        "from the first stage's settings to the last one's (linearly); validation at --resolution")
    g.add_argument("--progressive-size", type=int, default=None, metavar="S0",
                   help="the first stage's image size; the last stage's is --resolution (default: --resolution x "
                        "128/300, rounded, at least 8)")
    g.add_argument("--progressive-dropout", type=float, nargs=2, default=None, metavar=("FIRST", "LAST"),
                   help="classifier dropout of the first and last stage (default {:g} {:g})".format(
                       *_D["progressive_dropout"]))
    g.add_argument("--progressive-randaugment", type=int, nargs=2, default=None, metavar=("FIRST", "LAST"),
                   help="RandAugment magnitude of the first and last stage, with --augment randaugment (default "
                        "{} {})".format(*_D["progressive_randaugment"]))
    g.add_argument("--progressive-mixup", type=float, nargs=2, default=None, metavar=("FIRST", "LAST"),
                   help="mixup alpha of the first and last stage, in [0, 1]; 0: no mixup (default {:g} {:g})".format(
                       *_D["progressive_mixup"]))
    g = p.add_argument_group("fine-tuning")
    g.add_argument("--pretrained", nargs="?", const=True, default=False, metavar="FILE",
                   help="start from the bundled weights of the model (Lite0-2) or from FILE; new classifier")
    g.add_argument("--freeze-backbone", action="store_true", help="train only the classifier")
    g.add_argument("--backbone-lr-scale", type=float, default=1.0, help="backbone lr = lr x this (default 1)")
    g = p.add_argument_group("run")
    g.add_argument("--resume", nargs="?", const=True, default=False, metavar="CKPT",
                   help="continue the run in --out from its newest good checkpoint (or from CKPT)")
    g.add_argument("--overwrite", action="store_true",
                   help="remove the earlier run's files in --out first (only files effnet wrote)")
    g.add_argument("--checkpoint-every", type=int, default=None, help="also checkpoint every N steps")
    g.add_argument("--keep-last", type=int, default=_D["keep_last"], help="periodic checkpoints kept (default 3)")
    g.add_argument("--strict", action="store_true", help="stop at the first unreadable image instead of skipping")
    g.add_argument("--seed", type=int, default=0,
                   help="fixes initial weights, data order, augmentation and dropout (default 0)")
    g.add_argument("--workers", type=non_negative_int, default=_D["workers"], help="data-loading processes (default 2)")
    g.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    g.add_argument("--no-channels-last", action="store_true", help="keep the contiguous (NCHW) memory format")
    g.add_argument("--no-fused-bn-silu", action="store_true",
                   help="stock BN and SiLU modules (default: fused, saving only BN's input for backward)")
    g.add_argument("--no-own-kernels", action="store_true",
                   help="train with ATen's (oneDNN's) convolutions only (default on a CPU: depthwise convolutions "
                        "through effnet's operator, whose weight gradient is many times faster for 5x5 kernels and "
                        "small maps, and 1x1 convolutions as matrix products)")
    compiled = g.add_mutually_exclusive_group()
    compiled.add_argument("--compile", dest="compile", action="store_const", const=True, default=None,
                          help="torch.compile the training step (default: only where the run is long enough to "
                               "repay the compile time; the run log says which, and how long compiling took)")
    compiled.add_argument("--no-compile", dest="compile", action="store_const", const=False,
                          help="train eagerly, however long the run")
    g.add_argument("--per-sample-data", action="store_true",
                   help="augment each image on its own (default: a dataset held in memory, e.g. fashion-mnist, "
                        "is cropped and flipped a whole batch at a time, with the same result)")
    g.add_argument("--device", type=device, default="auto", help="auto, cpu or cuda (default auto)")
    g.add_argument("--log-every", type=int, default=_D["log_every"], help="steps between steps.jsonl lines")
    g.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard event files into --out (pip install 'effnet[tensorboard]')")
    g.add_argument("--no-progress", action="store_true", help="no progress bar or log lines")
    g.add_argument("--recipe", action="store_true", help="print the effective settings and exit")
    p.set_defaults(func=run_train)


def _given(args: argparse.Namespace, name: str):
    """A flag's value, or TrainConfig's default when it was not given (those flags default to None, so that a
    contradiction between two given flags can be told apart from a default)."""
    value = getattr(args, name)
    return _D[name] if value is None else value


def check_flag_conflicts(args: argparse.Namespace) -> None:
    """One line for flags that the run would silently ignore because another flag overrides them."""
    if args.steps is not None and args.epochs is not None:
        raise EffnetError(f"--epochs {args.epochs:g} and --steps {args.steps} both set the training length; give one")
    config = config_from_args(args)
    given = {f: getattr(args, f) for f in _OPTIONAL if getattr(args, f) is not None}
    given.update({f: getattr(config, f) for f, switch in _SWITCHED.items() if getattr(args, switch)})
    check_settings(given, {f.name: getattr(config, f.name) for f in fields(config)}, _flag,
                   holdout=holdout_size(config), data_is_a_folder=not is_fashion_mnist(config.data))
    ends = [_flag(f) for f in _PROGRESSIVE_FLAGS if getattr(args, f) is not None]
    if ends and args.progressive is None:
        raise EffnetError(f"{flags_apply_only(ends)} to progressive learning; add --progressive M or drop "
                          f"{it_or_them(ends)}")
    if args.out and os.path.exists(args.out) and not os.path.isdir(args.out):
        raise EffnetError(f"--out {args.out}: is a file; expected a run folder (a new one, or one effnet train wrote)")
    if args.resume and args.overwrite:
        raise EffnetError("--resume and --overwrite: --resume continues a run, --overwrite removes the one in --out "
                          "and starts again; give one of them")
    if args.resume is True:  # a mistyped --out starts a new run beside the one meant: say so (a restart script
        from effnet.train.run_folder import is_occupied  # passing --resume from its first launch is fine)

        if not is_occupied(config.out_dir):
            what = "holds no run yet" if os.path.isdir(config.out_dir) else "does not exist yet"
            warnings.warn(f"--resume: {config.out_dir} {what}; starting a new run there (check --out if a run was "
                          "meant to continue)", stacklevel=1)
    if args.no_fused_bn_silu:
        from effnet.registry import get_spec

        spec = get_spec(args.model)
        if "silu" not in {spec.stem.activation, spec.head.activation, *(s.activation for s in spec.stages)}:
            raise EffnetError(f"--no-fused-bn-silu applies only to a model with SiLU after BatchNorm; {spec.name} "
                              f"uses {spec.stages[0].activation}, which is never fused; drop it")
    if args.pretrained is True:
        from effnet.registry import get_spec
        from effnet.weights import BUNDLED

        name = get_spec(args.model).name
        if name not in BUNDLED:
            raise EffnetError(f"--pretrained: no bundled weights for {name!r} (bundled: {', '.join(BUNDLED)}); give a "
                              "weights file in effnet's layout with --pretrained FILE (`effnet convert` makes one), "
                              "or --model one of those")


_OPTIONAL = ("lr", "lr_base", "eps", "rmsprop_decay", "randaugment_n", "randaugment_m", "bn_momentum", "test_subset",
             "holdout", "progressive_randaugment")
"""Train's flags that default to None: given when they are not None."""

_PROGRESSIVE_FLAGS = ("progressive_size", "progressive_dropout", "progressive_randaugment", "progressive_mixup")
"""The flags that set progressive learning's ends (None: not given)."""

_SWITCHED = {"ema_warmup": "no_ema_warmup", "test": "no_test", "strict": "strict", "freeze_backbone": "freeze_backbone"}
"""TrainConfig field → the switch that sets it."""


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    model_tag = str(args.model).rsplit("/", 1)[-1].removesuffix(".json")
    return TrainConfig(
        model=args.model, data=data_source(args), out_dir=args.out or f"runs/{model_tag}",
        resolution=args.resolution,
        epochs=_given(args, "epochs"), steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        lr_base=_given(args, "lr_base"),
        warmup_epochs=args.warmup_epochs, decay_epochs=args.decay_epochs, decay_rate=args.decay_rate,
        optimizer=args.optimizer, rmsprop_decay=_given(args, "rmsprop_decay"), momentum=args.momentum,
        eps=_given(args, "eps"),
        weight_decay=args.weight_decay, ema_decay=args.ema_decay, ema_warmup=not args.no_ema_warmup,
        label_smoothing=args.label_smoothing, dropout=args.dropout, drop_path=args.drop_path,
        bn_momentum=args.bn_momentum, augment=args.augment,
        randaugment_n=_given(args, "randaugment_n"), randaugment_m=_given(args, "randaugment_m"),
        crop_scale=tuple(args.crop_scale), progressive=args.progressive, progressive_size=args.progressive_size,
        **{f: tuple(getattr(args, f)) for f in _PROGRESSIVE_FLAGS[1:] if getattr(args, f) is not None},
        hflip=not args.no_flip, eval_crop_fraction=args.eval_crop_fraction, channels_last=not args.no_channels_last,
        fused_bn_silu=not args.no_fused_bn_silu, own_kernels=not args.no_own_kernels,
        compile=args.compile, batched_data=not args.per_sample_data,
        pretrained=args.pretrained, freeze_backbone=args.freeze_backbone, backbone_lr_scale=args.backbone_lr_scale,
        seed=args.seed, workers=args.workers, checkpoint_every=args.checkpoint_every, keep_last=args.keep_last,
        resume=args.resume, overwrite=args.overwrite, strict=args.strict, train_subset=args.train_subset,
        val_subset=args.val_subset, test_subset=args.test_subset,
        holdout=args.holdout, test=not args.no_test, log_every=args.log_every, tensorboard=args.tensorboard,
        progress=not args.no_progress, device=args.device, threads=args.threads,
    )


_FLAG_OF_FIELD = {"out_dir": "--out", "data": "DATA", "hflip": "--no-flip", "ema_warmup": "--no-ema-warmup",
                  "channels_last": "--no-channels-last", "test": "--no-test", "fused_bn_silu": "--no-fused-bn-silu",
                  "own_kernels": "--no-own-kernels",
                  "batched_data": "--per-sample-data"}


def _flag(field: str) -> str:
    return _FLAG_OF_FIELD.get(field, "--" + field.replace("_", "-"))


def _with_flag(exc: ConfigError) -> ConfigError:
    """A setting's error as the flag that set it (`--batch-size: got 0, ...` rather than `batch_size: ...`)."""
    text = str(exc)
    field = exc.field or text.split(": ", 1)[0]
    if field not in {f.name for f in fields(TrainConfig)} or not text.startswith(f"{field}: "):
        return exc
    flag = _flag(field)
    error = ConfigError(f"{flag}: {text[len(field) + 2:]}")
    error.field = field
    return error


def run_train(args: argparse.Namespace) -> int:
    check_flag_conflicts(args)
    try:
        result = _recipe_or_train(args)
    except ConfigError as exc:  # before any work, or once the data is open (a batch larger than the training set)
        raise _with_flag(exc) from None
    if result is None or result.run_dir is None or not _is_main():
        return 0
    ema = f"; EMA top-1 {result.ema_top1:.2f}% top-5 {result.ema_top5:.2f}%" if result.ema_top1 is not None else ""
    print(f"done: {result.steps} steps ({result.epochs:.2f} epochs) in {result.wall_s:.0f}s, "
          f"{result.images_per_s:.0f} img/s"
          + (f" (compiling took {result.compile_s:.0f}s of it)" if result.compile_s is not None else "")
          + f"; val top-1 {result.top1:.2f}% top-5 {result.top5:.2f}%{ema}; run folder {result.run_dir}")
    if result.test_top1 is not None:
        print(f"test: top-1 {result.test_top1:.2f}% top-5 {result.test_top5:.2f}% on {result.test_images} images, "
              f"{result.selected_weights} weights of step {result.selected_step} (chosen on validation; test.json)")
    return 0


def _recipe_or_train(args: argparse.Namespace):
    """The run's result, or None after printing the recipe (--recipe)."""
    from effnet.train import check_config, plan_run, recipe_lines, train

    config = config_from_args(args)
    check_config(config)
    if not args.recipe:
        return train(config)
    plan, name = plan_run(config)
    for key, value in recipe_lines(config, plan, name):
        print(f"{key:20s} {value}")
    return None


def _is_main() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


def _register_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="top-1/top-5 of a training checkpoint's raw and EMA weights")
    p.add_argument("checkpoint", help="a checkpoint .pt, or a run folder (its latest checkpoint)")
    add_data_source(p, "'fashion-mnist' (its test split) or a folder (its val/ sub-folder or itself)")
    p.add_argument("--split", default=None, help="folder sub-directory to evaluate (default val; for fashion-mnist: "
                   "test, the default, or train)")
    p.add_argument("--batch-size", type=positive_int, default=128, help="images per batch (default 128)")
    p.add_argument("--workers", type=non_negative_int, default=2, help="data-loading processes (default 2)")
    p.add_argument("--resolution", type=pixels, default=None, help="override the checkpoint's resolution")
    p.add_argument("--crop-fraction", type=fraction, default=None,
                   help="override the eval centre-crop fraction, in (0, 1]")
    p.add_argument("--subset", type=positive_int, default=None, help="evaluate a fixed random subset of N images")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    p.add_argument("--device", type=device, default="auto",
                   help="auto (default: the GPU if there is one, as train), cpu, cuda or cuda:N")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    g = p.add_argument_group("inference engine (accuracy of the fast and lossy paths)")
    g.add_argument("--runtime", choices=ENGINES, default="torch",
                   help="engine (default %(default)s: eager PyTorch; auto: the fastest one here, timed once, cached)")
    g.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="fp32, bf16 (AMX) or int8 (post-training quantization); default %(default)s")
    g.add_argument("--calibration", type=positive_int, default=None, metavar="N",
                   help=f"int8: calibrate on N train-split images (default {EVAL_CALIBRATION})")
    p.set_defaults(func=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    from effnet.train import evaluate_checkpoint

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    fashion_mnist = is_fashion_mnist(data_source(args))
    if args.strict and fashion_mnist:
        raise EffnetError("--strict applies only to an image folder (it stops at an unreadable image); fashion-mnist "
                          "has no image files; drop it")
    if args.calibration is not None and args.precision != "int8":
        raise EffnetError(f"--calibration {args.calibration}: calibrates int8 quantization, unused by --precision "
                          f"{args.precision}; drop it or add --precision int8")
    split = args.split or ("test" if fashion_mnist else "val")
    if split == "val" and fashion_mnist:  # the library reads it as the test split
        raise EffnetError("--split val: fashion-mnist has no validation split of its own (training holds out the "
                          "last images of its train split); give --split test (the default) or --split train")
    lines: dict[str, Callable[[int, int], None]] = {}  # a line per weights, its clock started by their first call

    def progress(kind: str, done: int, total: int) -> None:
        if kind not in lines:
            lines[kind] = progress_line(f"effnet eval: {kind} weights", "images")
        lines[kind](done, total)

    with announce_choices("effnet eval"):  # what --runtime auto chose, one line on stderr
        r = evaluate_checkpoint(args.checkpoint, data_source(args), split=split, batch_size=args.batch_size,
                                workers=args.workers, resolution=args.resolution, crop_fraction=args.crop_fraction,
                                subset=args.subset, strict=args.strict, device=args.device, runtime=args.runtime,
                                precision=args.precision, calibration=args.calibration or EVAL_CALIBRATION,
                                progress=progress)
    print(f"{r['checkpoint']} (step {r['step']}) on {r['data']} at {r['resolution']} px")
    if (args.runtime, args.precision) != ("torch", "fp32"):
        calibrated = f", calibrated on {r['calibration_images']} train-split images" if args.precision == "int8" else ""
        print(f"runtime: {args.runtime} {args.precision}{calibrated}")
    metrics = [(kind, r[kind]) for kind in ("raw", "ema") if r[kind] is not None]
    print(format_table(["weights", "top-1", "top-5", "loss", "images"],
                       [(kind, m.top1, m.top5, m.loss, m.images) for kind, m in metrics],
                       formats={"top-1": "{:.2f}%", "top-5": "{:.2f}%", "loss": ".4f", "images": "d"}))
    skipped = r["raw"].skipped
    if skipped:
        print(f"effnet eval: warning: skipped {skipped} unreadable image(s)", file=sys.stderr)
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from pathlib import Path

    from effnet.train.plot import plot_runs

    labels = args.labels.split(",") if args.labels is not None else None
    if labels is not None and len(labels) != len(args.run_dirs):
        raise EffnetError(f"--labels: got {len(labels)} label(s) for {len(args.run_dirs)} run folder(s); give one "
                          "per RUN_DIR, separated by commas")
    if labels is not None and not all(label.strip() for label in labels):
        raise EffnetError(f"--labels {args.labels!r}: got an empty label; give a name to each RUN_DIR, separated by "
                          "commas")
    if args.out:  # the default, RUN_DIR/curves.png, is checked with the run folder itself
        check_output_file(args.out, suffixes=PLOT_SUFFIXES)
    out = args.out or str(Path(args.run_dirs[0]) / "curves.png")
    print(plot_runs(args.run_dirs, out, labels))
    return 0


def run_runs(args: argparse.Namespace) -> int:
    import json

    from effnet.train.run_folder import describe, find_runs

    rows = [describe(d) for d in find_runs(args.dirs)]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    headers = ("run", "model", "data", "steps", "best val top-1", "state")
    print(format_table(headers, [
        (r["run"], r["model"], r["data"], f"{r['steps_done'] if r['steps_done'] is not None else '?'} / "
         f"{r['total_steps'] if r['total_steps'] is not None else '?'}",
         r["best_val_top1"], r["state"] + (f" ({r['holder']})" if r["holder"] else "")
         + (f", about {format_duration(r['eta_s'])} left" if r["eta_s"] is not None else "")) for r in rows],
        formats={"best val top-1": "{:.2f}%"}))
    return 0


DEMO_CONFIG = dict(
    model="efficientnet_lite0", data="fashion-mnist", pretrained=True, resolution=32, batch_size=32, epochs=2,
    train_subset=2000, val_subset=1000, backbone_lr_scale=0.1, bn_momentum=0.1, augment="none", crop_scale=(0.5, 1.0),
    workers=1, threads=1, progress=False, out_dir=None,
)


def demo_section() -> None:
    """`make demo`: fine-tune the bundled Lite0 on 2 000 Fashion-MNIST images (32 px, 2 epochs, about a minute
    on 2 cores), validated on 1 000 held-out training images, then report the 10 000 test images once."""
    from effnet.train import TrainConfig, train

    config = TrainConfig(**DEMO_CONFIG)
    cmd = ("effnet train fashion-mnist --model efficientnet_lite0 --pretrained --resolution 32 --batch-size 32 "
           "--epochs 2 --train-subset 2000 --val-subset 1000 --backbone-lr-scale 0.1 --bn-momentum 0.1 --augment none "
           "--crop-scale 0.5 1 --threads 1")
    print("Fine-tuning pretrained EfficientNet-Lite0 (ImageNet weights, fresh 10-class classifier) on a Fashion-MNIST")
    print(f"subset with the paper's recipe (TF RMSProp, warm-up, EMA, label smoothing); same as:\n  {cmd}\n")
    result = train(config)
    print(format_table(["epoch", "train loss", "train acc", "val top-1", "val EMA"],
                       [(h["epoch"], h["train_loss"], h["train_acc"], h["val_top1"], h["ema_top1"])
                        for h in result.history],
                       formats={"train loss": ".4f", "train acc": "{:.2f}%", "val top-1": "{:.2f}%",
                                "val EMA": "{:.2f}%"}))
    print(f"\nValidation (1 000 held-out training images) chose the {result.selected_weights} weights of step "
          f"{result.selected_step}: {result.test_top1:.2f}% top-1 on the 10 000 Fashion-MNIST test images after "
          f"{result.steps} steps on 2 000 training images ({result.images_per_s:.0f} img/s, {result.wall_s:.0f}s).")
    print("Full-data runs (fine-tuned vs from scratch): docs/RESULTS.md, 'Training'.")

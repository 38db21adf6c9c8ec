"""`effnet predict`: top-k ImageNet classes for image files or directories."""

from __future__ import annotations

import argparse
import json
import sys

from effnet.cli._args import positive_int, progress_line
from effnet.cli._load import load_model
from effnet.data.calibration import calibration_images
from effnet.data.photos import PhotosUnavailable, photos
from effnet.errors import EffnetError
from effnet.predict import classify, classify_images, refuse_missing
from effnet.registry import create_model, get_config
from effnet.report import format_table
from effnet.runtime import ENGINES, PRECISIONS, runtime_module
from effnet.runtime.auto import announce_choices

DEFAULT_TOP = 5


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="classify images with a pretrained or converted model")
    p.add_argument("model", help="registered name or spec .json")
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument("--pretrained", action="store_true", help="the bundled ImageNet weights (Lite0-2)")
    weights.add_argument("--weights", metavar="PATH",
                         help="a .safetensors/.pth file in effnet's layout, or a training checkpoint (.pt: its "
                              "chosen weights, preprocessing and class names)")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR", help="image files and/or directories of images")
    p.add_argument("--top", type=positive_int, default=None,
                   help="classes to show per image, at most the model's classes (default 5, or all when fewer)")
    p.add_argument("--strict", action="store_true",
                   help="fail (exit 2) when any input cannot be read as an image, instead of skipping it")
    p.add_argument("--batch-size", type=positive_int, default=16, help="images per forward pass (default 16)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument("--runtime", choices=ENGINES, default="torch",
                   help="inference engine (effnet.runtime; default torch); auto: the fastest one here at "
                        "--batch-size, timed once and cached")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="bf16 (AMX) and int8 (calibrated on real photos) are lossy; see docs/RESULTS.md")
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    refuse_missing(args.images)  # before the model loads
    model, config, labels = load_model(args.model, pretrained=args.pretrained, weights=args.weights)
    classes = model.spec.num_classes
    if args.top is not None and args.top > classes:
        raise EffnetError(f"--top: got {args.top}, expected at most the model's {classes} classes")
    top = args.top or min(DEFAULT_TOP, classes)
    # int8 calibrates on photos preprocessed as the predictions are (a weights file's normalisation included)
    calibration = calibration_images(config) if args.precision == "int8" else None
    auto = {"batch": args.batch_size} if args.runtime == "auto" else {}  # the batch auto times the engines at
    with announce_choices("effnet predict"):
        model = runtime_module(model, args.runtime, args.precision, calibration=calibration,
                               resolution=config.resolution, **auto)
    result = classify(model, config, args.images, labels=labels, top=top, batch_size=args.batch_size,
                      progress=progress_line("effnet predict", "images"))
    if args.strict and result.skipped:
        first = result.skipped[0]
        more = f" (and {len(result.skipped) - 1} more)" if len(result.skipped) > 1 else ""
        raise EffnetError(f"{first.path}: {first.reason}{more}; --strict stops at unreadable inputs (drop it to "
                          "skip them)")
    if args.format == "json":
        print(json.dumps({"model": model.spec.name, "predictions": [p.to_dict() for p in result.predictions],
                          "skipped": [s.to_dict() for s in result.skipped]}, indent=2))
    else:
        rows = [(p.image if rank == 1 else "", rank, f"{100 * g.probability:5.1f}%", g.label)
                for p in result.predictions for rank, g in enumerate(p.top, 1)]
        if rows:
            print(format_table(["image", "rank", "prob", "class"], rows))
    if not result.predictions and len(result.skipped) == 1:
        only = result.skipped[0]
        raise EffnetError(f"{only.path}: {only.reason}; no image to classify")
    for s in result.skipped:
        print(f"effnet predict: skipped {s.path}: {s.reason}", file=sys.stderr)
    if not result.predictions:
        raise EffnetError(f"none of the {len(result.skipped)} input(s) could be read as an image")
    return 0


_DEMO_PHOTOS = {"coffee": "skimage coffee", "chelsea": "skimage chelsea", "astronaut": "skimage astronaut",
                "rocket": "skimage rocket", "sklearn_china": "sklearn china.jpg",
                "sklearn_flower": "sklearn flower.jpg"}


def _demo_photos() -> dict:
    """Six of the real photos shipped with scikit-image and scikit-learn (`effnet.data.photos`; no download)."""
    from PIL import Image

    loaded = dict(photos(_DEMO_PHOTOS))
    return {label: Image.fromarray(loaded[name]) for name, label in _DEMO_PHOTOS.items()}


def demo_section() -> None:
    """`effnet demo`: pretrained EfficientNet-Lite0 (bundled weights) on real photos, top-3 classes each."""
    from effnet.weights import BUNDLED, WeightsError, imagenet_classes

    try:
        images = _demo_photos()
    except PhotosUnavailable as exc:
        print(f"skipped: {exc}")
        return
    try:
        model = create_model("efficientnet_lite0", pretrained=True)
    except WeightsError as exc:
        print(f"skipped: {exc}")
        return
    info = BUNDLED["efficientnet_lite0"]
    config = get_config("efficientnet_lite0")
    print(f"efficientnet_lite0, ImageNet weights from {info.distribution} {info.version} (SHA-256 "
          f"{info.sha256[:12]}... verified); input {config.resolution}px, mean/std {config.mean[0]:.3f}/"
          f"{config.std[0]:.3f} (Inception: (x*255-127)/128)")
    predictions = classify_images(model, config, images, labels=imagenet_classes(), top=3)
    rows = [(p.image, *(f"{g.label} {100 * g.probability:.0f}%" for g in p.top)) for p in predictions]
    print(format_table(["photo", "top-1", "top-2", "top-3"], rows))


__all__ = ["demo_section", "register"]

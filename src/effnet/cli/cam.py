"""`effnet cam`: class activation maps of a model on image files — a figure of each image with its map and top
labels, or the maps' peaks and the labels as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from effnet.cli._args import check_output_file, positive_int, progress_line
from effnet.cli._load import load_model

_FORMATS = ("figure", "json")


DEFAULT_TOP, FIGURE_TOP = 3, 5
"""Labels shown per image by default, and the most a figure's caption has room for under each image."""


def register(sub: argparse._SubParsersAction) -> None:
    from effnet.cam import METHODS

    p = sub.add_parser("cam", help="class activation maps (Grad-CAM, Score-CAM, ...) of a model on images",
                       description="Where a model finds the evidence for a class (Figure 7 of the paper), with the "
                       "model's own preprocessing or the one its weights file records.",
                       epilog="example: effnet cam efficientnet_lite0 --pretrained photo.jpg -o cam.png\n"
                              "         effnet cam b0_w025_s8 --weights runs/x/checkpoints/best.pt shoe.png "
                              "--format json", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="registered name or spec .json")
    weights = p.add_mutually_exclusive_group(required=True)
    weights.add_argument("--pretrained", action="store_true", help="the bundled ImageNet weights (Lite0-2)")
    weights.add_argument("--weights", metavar="FILE",
                         help="a .safetensors/.pth file in effnet's layout, or a training checkpoint (.pt: its "
                              "chosen weights, preprocessing and class names)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--target", metavar="CLASS", default=None,
                   help="class index or name to explain (default: each image's predicted class)")
    p.add_argument("--method", choices=sorted(METHODS), default="gradcam",
                   help="gradcam (default), gradcam++, layercam, or scorecam (gradient-free, one pass per channel)")
    p.add_argument("--layer", metavar="STAGE", default=None,
                   help="stem, stages.I or head (default: head, the last feature map; the deepest stage whose map is "
                        "larger than 1x1 where the input is too small for head's)")
    p.add_argument("--top", type=positive_int, default=None,
                   help=f"labels shown per image (default 3; at most {FIGURE_TOP} in a figure)")
    p.add_argument("-o", "--output", metavar="PNG", default=None, help="the figure (needed unless --format json)")
    p.add_argument("--format", choices=_FORMATS, default="figure",
                   help="figure: write -o PNG; json: print peaks and labels (and write -o if given)")
    p.set_defaults(func=run_cam)


def run_cam(args: argparse.Namespace) -> int:
    from effnet.cam import CamError, Column, compute, denormalise, load_images, preprocess, save_figure, to_image_coords

    if args.format == "figure" and not args.output:
        raise CamError("-o/--output: a figure needs a .png path (or use --format json)")
    if args.output:
        check_output_file(args.output, suffixes=(".png",))
    if args.top is not None and args.top > FIGURE_TOP and args.output:
        raise CamError(f"--top: got {args.top}; a figure has room for {FIGURE_TOP} labels per image (for more, use "
                       "--format json without -o)")
    model, config, labels = load_model(args.model, pretrained=args.pretrained, weights=args.weights)
    if args.top is not None and args.top > model.spec.num_classes:
        raise CamError(f"--top: got {args.top}, expected at most the model's {model.spec.num_classes} classes")
    top = args.top or min(DEFAULT_TOP, model.spec.num_classes)
    images = load_images(args.images)
    inputs = preprocess(images, config)
    target = _parse_target(args.target, labels, model.spec.num_classes)
    passes = progress_line(f"effnet cam: {args.method}", "forward passes")  # Score-CAM's: a pass per 32 masks
    result = compute(model, inputs, target, args.method, layer=args.layer, progress=passes)
    probs = result.logits.softmax(1)
    names = [label_of(i, labels) for i in range(probs.shape[1])]
    records = []
    for k, (path, image, peak) in enumerate(zip(args.images, images, result.peaks())):
        p, ix = probs[k].topk(top)
        records.append({
            "image": str(path), "target": {"index": result.targets[k], "label": names[result.targets[k]]},
            "top": [{"index": int(i), "label": names[int(i)], "probability": round(float(q), 6)}
                    for q, i in zip(p, ix)],
            "peak": {"x": peak[0], "y": peak[1]},
            "peak_fraction": {"x": round((peak[0] + 0.5) / inputs.shape[-1], 4),
                              "y": round((peak[1] + 0.5) / inputs.shape[-2], 4)},
            "peak_in_image": dict(zip(("x", "y"), to_image_coords(peak, image.size, config))),
        })
    if args.output:
        shown = denormalise(inputs, config)
        captions = ["\n".join(f"{t['label']} {100 * t['probability']:.0f}%" for t in r["top"]) for r in records]
        save_figure(args.output, [Column("input", shown),
                                  Column(f"{args.method} on {result.layer}", shown, result.maps, captions)],
                    row_titles=[Path(r["image"]).name for r in records], title=model.spec.name)
    if args.format == "json":
        print(json.dumps({"model": model.spec.name, "method": args.method, "layer": result.layer,
                          "resolution": config.resolution, "figure": args.output, "images": records}, indent=2))
    else:
        print(f"wrote {args.output} ({len(records)} image(s), {args.method} on {result.layer})")
    return 0


def label_of(index: int, labels) -> str:
    return labels[index] if labels is not None and index < len(labels) else f"class {index}"


def _parse_target(text: str | None, labels, num_classes: int) -> int | None:
    from effnet.cam import CamError

    if text is None:
        return None
    try:
        index = int(text)
    except ValueError:
        wanted = text.strip().lower()
        matches = [i for i, label in enumerate(labels or ()) if label.lower() == wanted]
        if not matches:
            raise CamError(f"--target: got {text!r}, expected a class index in [0, {num_classes}) or one of the "
                           "model's class names") from None
        return matches[0]
    if not 0 <= index < num_classes:
        raise CamError(f"--target: got {index}, expected a class index in [0, {num_classes})")
    return index


__all__ = ["register", "run_cam"]

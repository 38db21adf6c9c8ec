"""`effnet convert`: another library's EfficientNet checkpoint → an effnet `.safetensors` file."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from effnet.cli._args import fraction, positive_float
from effnet.registry import get_spec, is_spec_path
from effnet.weights import SOURCES, WeightsError, convert_file


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert", help="convert a timm / torchvision / lukemelas / Keras checkpoint to effnet's .safetensors",
        description="Rename and re-layout a checkpoint into effnet's names, check it against --model strictly, and "
                    "write a .safetensors file that records the padding, BN eps and input normalisation the weights "
                    "need (`effnet predict --weights` uses that normalisation).",
    )
    p.add_argument("src", help="checkpoint: .pth/.pt/.bin/.safetensors state dict, or Keras .weights.h5/.h5")
    p.add_argument("--from", dest="source", required=True, choices=list(SOURCES),
                   help="library that wrote SRC: " + "; ".join(f"{k}: {v.note}" for k, v in SOURCES.items()))
    p.add_argument("--model", required=True, help="effnet model the weights are for (name or spec .json)")
    p.add_argument("-o", "--output", required=True, help="output .safetensors path")
    p.add_argument("--padding", choices=("same", "symmetric"), default=None, help="override the source's padding")
    p.add_argument("--bn-eps", type=positive_float, default=None, help="override the source's BatchNorm eps")
    p.add_argument("--mean", type=float, nargs=3, metavar=("R", "G", "B"), default=None,
                   help="override the input mean the weights expect (on [0, 1] pixels)")
    p.add_argument("--std", type=positive_float, nargs=3, metavar=("R", "G", "B"), default=None,
                   help="override the input std the weights expect (on [0, 1] pixels)")
    p.add_argument("--interpolation", choices=("bicubic", "bilinear", "nearest"), default=None,
                   help="record the resize interpolation the weights were evaluated with")
    p.add_argument("--crop-fraction", type=fraction, default=None,
                   help="record the eval centre-crop fraction (resolution / resize size), in (0, 1]")
    p.set_defaults(func=run_convert)




def run_convert(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.suffix != ".safetensors":
        raise WeightsError(f"-o {out}: expected a .safetensors path")
    if args.mean is not None and not all(math.isfinite(v) and 0 <= v <= 1 for v in args.mean):
        raise WeightsError(f"--mean: got {' '.join(f'{v:g}' for v in args.mean)}, expected 3 numbers in [0, 1] (the "
                           "mean of pixels scaled to [0, 1]: divide 0-255 values by 255)")
    if args.std is not None and not all(v <= 1 for v in args.std):
        raise WeightsError(f"--std: got {' '.join(f'{v:g}' for v in args.std)}, expected 3 numbers in (0, 1] (the "
                           "std of pixels scaled to [0, 1]: divide 0-255 values by 255)")
    overrides = {k: v for k, v in (("mean", args.mean), ("std", args.std), ("interpolation", args.interpolation),
                                   ("crop_fraction", args.crop_fraction)) if v is not None}
    spec_file = is_spec_path(args.model)  # a spec file states its classes; a model name takes the checkpoint's
    base = get_spec(args.model)
    spec = convert_file(args.src, args.source, base, out, padding=args.padding, bn_eps=args.bn_eps,
                        preprocessing=overrides, num_classes=base.num_classes if spec_file else None)
    from effnet.weights import file_preprocessing

    pre = file_preprocessing(out) or {}
    norm = (f", mean={'/'.join(f'{v:.3f}' for v in pre['mean'])} std={'/'.join(f'{v:.3f}' for v in pre['std'])}"
            if "mean" in pre and "std" in pre else "")
    print(f"{args.src} ({args.source}) -> {out}: {spec.name}, padding={spec.padding}, bn_eps={spec.bn_eps:g}{norm}")
    print(f"load it with effnet.create_model({args.model if spec_file else spec.name!r}, pretrained={str(out)!r})")
    return 0


__all__ = ["register"]

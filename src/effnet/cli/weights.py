"""`effnet convert`: another library's EfficientNet checkpoint → an effnet `.safetensors` file."""

from __future__ import annotations

import argparse
from pathlib import Path

from effnet.registry import get_spec
from effnet.weights import SOURCES, WeightsError, convert_file


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert", help="convert a timm / torchvision / lukemelas / Keras checkpoint to effnet's .safetensors",
        description="Rename and re-layout a checkpoint into effnet's names, check it against --model strictly, and "
                    "write a .safetensors file that records the padding and BN eps the weights need.",
    )
    p.add_argument("src", help="checkpoint: .pth/.pt/.bin/.safetensors state dict, or Keras .weights.h5/.h5")
    p.add_argument("--from", dest="source", required=True, choices=list(SOURCES), help="library that wrote SRC")
    p.add_argument("--model", required=True, help="effnet model the weights are for (name or spec .json)")
    p.add_argument("-o", "--output", required=True, help="output .safetensors path")
    p.add_argument("--padding", choices=("same", "symmetric"), default=None,
                   help="override the source's padding (timm tf_efficientnet_*: same)")
    p.add_argument("--bn-eps", type=float, default=None,
                   help="override the source's BatchNorm eps (timm tf_efficientnet_*: 1e-3)")
    p.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.suffix != ".safetensors":
        raise WeightsError(f"-o {out}: expected a .safetensors path")
    spec = convert_file(args.src, args.source, get_spec(args.model), out, padding=args.padding, bn_eps=args.bn_eps)
    print(f"{args.src} ({args.source}) -> {out}: {spec.name}, padding={spec.padding}, bn_eps={spec.bn_eps:g}")
    print(f"load it with effnet.create_model({spec.name!r}, pretrained={str(out)!r})")
    return 0


__all__ = ["register"]

"""The examples that end each subcommand's `--help`, for the parsers that do not write their own epilog."""

from __future__ import annotations

import argparse
import textwrap

EXAMPLES: dict[str, tuple[str, ...]] = {
    "models": ("effnet models", "effnet models --filter lite --format json"),
    "info": ("effnet info efficientnet_b0", "effnet info my_spec.json --resolution 64 --format json"),
    "scale": ("effnet scale efficientnet_b0 --phi 1 -o b1_like.json",
              "effnet scale efficientnet_b0 --strategy fast --target-macs 1G"),
    "demo": ("effnet demo",),
    "experiments": ("effnet experiments table3", "effnet experiments compound-vs-single --jobs 2"),
    "experiments table3": ("effnet experiments table3", "effnet experiments table3 --format json"),
    "experiments single-dims": ("effnet experiments single-dims --jobs 2",
                                "effnet experiments single-dims --quick --out out/single-dims"),
    "experiments width-at-depth-res": ("effnet experiments width-at-depth-res --jobs 2",
                                       "effnet experiments width-at-depth-res --report-only"),
    "experiments compound-vs-single": ("effnet experiments compound-vs-single --jobs 2",
                                       "effnet experiments compound-vs-single --report-only"),
    "experiments transfer": ("effnet experiments transfer --jobs 2",
                             "effnet experiments transfer --quick --out out/transfer"),
    "experiments strategies": ("effnet experiments strategies --jobs 2",
                               "effnet experiments strategies --quick --out out/strategies"),
    "search": ("effnet search coefficients --base efficientnet_b0 --steps 430 --jobs 2",
               "effnet search architecture --target-macs 8M --trials 40"),
    "search coefficients": ("effnet search coefficients --base efficientnet_b0 --steps 430 --jobs 2",
                            "effnet search coefficients --base efficientnet_b0 --report-only --format json"),
    "convert": ("effnet convert tf_efficientnet_b0.pth --from timm-tf --model efficientnet_b0 -o b0.safetensors",
                "effnet convert efficientnetb0.h5 --from keras --model efficientnet_b0 -o b0.safetensors"),
    "predict": ("effnet predict efficientnet_lite0 --pretrained photo.jpg",
                "effnet predict efficientnet_b0 --weights b0.safetensors photos/ --format json"),
    "bench": ("effnet bench efficientnet_b0", "effnet bench efficientnet_b0 --mode train --batch-size 16"),
    "export": ("effnet export efficientnet_lite0 --pretrained --format onnx -o lite0.onnx",
               "effnet export efficientnet_lite1 --pretrained --format torchscript -o lite1.pt --resolution 240"),
    "train": ("effnet train fashion-mnist --model efficientnet_lite0 --pretrained --resolution 64 --epochs 3",
              "effnet train my_images/ --model efficientnet_b0 --out runs/b0 --resume"),
    "eval": ("effnet eval runs/b0 fashion-mnist", "effnet eval runs/b0/checkpoints/best.pt my_images/ --split test"),
    "plot": ("effnet plot runs/b0", "effnet plot runs/a runs/b --labels a,b -o curves.png"),
    "runs": ("effnet runs runs/", "effnet runs runs/b0 --format json"),
}


COMMON_HELP = {"--format": "table (default) or json: machine-readable output on stdout"}
"""Help of flags that mean the same in every subcommand, for those that do not say more."""


def add_examples(parser: argparse.ArgumentParser, path: str = "") -> None:
    """Give `parser` and its subparsers (recursively) their examples, where their epilog has none, and the common
    flags their help line."""
    for action in parser._actions:
        if action.help is None and action.option_strings and action.option_strings[-1] in COMMON_HELP:
            if set(action.choices or ()) <= {"table", "json"}:
                action.help = COMMON_HELP[action.option_strings[-1]]
    if path in EXAMPLES and "example" not in (parser.epilog or ""):
        lines = EXAMPLES[path]
        note = textwrap.fill(parser.epilog, 100) + "\n\n" if parser.epilog else ""
        parser.epilog = note + "example" + ("s" if len(lines) > 1 else "") + ":\n" + "\n".join(f"  {x}" for x in lines)
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                add_examples(sub, f"{path} {name}".strip())

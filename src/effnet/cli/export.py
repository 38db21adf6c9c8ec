"""`effnet export`: ONNX / TorchScript with a dynamic batch, checked against eager PyTorch."""

from __future__ import annotations

import argparse
import json

from effnet.cli._args import positive_float, positive_int
from effnet.export import EXPORTERS, export
from effnet.registry import create_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export to ONNX or TorchScript and check parity with eager PyTorch")
    p.add_argument("model", help="registered name or spec .json")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--pretrained", action="store_true", help="the bundled ImageNet weights (Lite0-2)")
    weights.add_argument("--weights", metavar="PATH", help="a .safetensors/.pth file in effnet's layout")
    p.add_argument("--format", required=True, choices=list(EXPORTERS), help="output format")
    p.add_argument("-o", "--output", required=True, help="output file")
    p.add_argument("--resolution", type=positive_int, default=None, help="input size (default: the model's own)")
    p.add_argument("--tolerance", type=positive_float, default=1e-4,
                   help="largest accepted relative error, a finite positive number (default 1e-4)")
    p.add_argument("--json", action="store_true", help="print the parity report as JSON")
    p.set_defaults(func=run_export)






def run_export(args: argparse.Namespace) -> int:
    pretrained = True if args.pretrained else (args.weights or False)
    model = create_model(args.model, pretrained=pretrained)
    report = export(model, args.output, args.format, resolution=args.resolution, tolerance=args.tolerance)
    if args.json:
        print(json.dumps({**report.__dict__, "ok": report.ok}, indent=2))
        return 0
    print(f"{model.spec.name} -> {report.path} ({report.format}, input (batch, {model.spec.in_channels}, "
          f"{report.resolution}, {report.resolution}), dynamic batch)")
    print(f"parity vs eager PyTorch in {report.runtime}, batch {report.batch_checked}: max abs error "
          f"{report.max_abs_error:.3g}, relative error {report.relative_error:.3g} (tolerance {report.tolerance:g}) "
          f"-> ok")
    return 0


__all__ = ["register"]

"""`effnet export`: ONNX / TorchScript with a dynamic batch, checked against eager PyTorch."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from effnet.cli._args import check_output_file, pixels, positive_float
from effnet.cli._load import load_model
from effnet.export import EXPORTERS, ExportError, export

REPORT_FORMATS = ("table", "json")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export to ONNX or TorchScript and check parity with eager PyTorch")
    p.add_argument("model", help="registered name or spec .json")
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--pretrained", action="store_true", help="the bundled ImageNet weights (Lite0-2)")
    weights.add_argument("--weights", metavar="PATH",
                         help="a .safetensors/.pth file in effnet's layout, or a training checkpoint (.pt: its "
                              "chosen weights, at the resolution it was trained at)")
    p.add_argument("--format", action="append", default=[], choices=[*EXPORTERS, *REPORT_FORMATS],
                   metavar="FORMAT",
                   help=f"the file's format ({', '.join(EXPORTERS)}; default: from the -o suffix) and/or the "
                        "parity report's (table, the default, or json); give it twice for both, e.g. "
                        "--format onnx --format json")
    p.add_argument("-o", "--output", required=True, help="output file")
    p.add_argument("--resolution", type=pixels, default=None, help="input size (default: the model's own)")
    p.add_argument("--tolerance", type=positive_float, default=1e-4,
                   help="largest accepted relative error, a finite positive number (default 1e-4)")
    p.add_argument("--json", action="append_const", dest="format", const="json", help=argparse.SUPPRESS)
    p.set_defaults(func=run_export)


def _formats(values: list[str], output: str) -> tuple[str, str]:
    """(file format, report format) from the repeated --format values; the file's from the -o suffix if not given."""
    files = list(dict.fromkeys(v for v in values if v in EXPORTERS))
    reports = list(dict.fromkeys(v for v in values if v in REPORT_FORMATS))
    if len(files) > 1 or len(reports) > 1:
        raise ExportError(f"--format: got {' and '.join(files if len(files) > 1 else reports)}, expected at most one "
                          "file format and one report format")
    if not files:
        by_suffix = {e.suffix: name for name, e in EXPORTERS.items()}
        suffix = Path(output).suffix.lower()
        if suffix not in by_suffix:
            raise ExportError(f"--format: not given and -o {output} has no known suffix "
                              f"({', '.join(by_suffix)}); give --format {' or '.join(EXPORTERS)}")
        files = [by_suffix[suffix]]
    return files[0], (reports or ["table"])[0]


def run_export(args: argparse.Namespace) -> int:
    file_format, report_format = _formats(args.format, args.output)
    check_output_file(args.output)
    pretrained = True if args.pretrained else (args.weights or False)
    model, config, _ = load_model(args.model, pretrained=args.pretrained, weights=args.weights)  # a training
    # checkpoint gives the weights it chose (EMA) and the resolution it was trained at
    report = export(model, args.output, file_format, resolution=args.resolution or config.resolution,
                    tolerance=args.tolerance)
    if not pretrained:
        print(f"effnet export: note: neither --pretrained nor --weights given, so {args.output} holds randomly "
              "initialised weights (fine for testing a deployment path, not for predictions)", file=sys.stderr)
    if report_format == "json":
        print(json.dumps({**report.__dict__, "ok": report.ok}, indent=2))
        return 0
    print(f"{model.spec.name} -> {report.path} ({report.format}, input (batch, {model.spec.in_channels}, "
          f"{report.resolution}, {report.resolution}), dynamic batch)")
    print(f"parity vs eager PyTorch in {report.runtime}, batch {report.batch_checked}: max abs error "
          f"{report.max_abs_error:.3g}, relative error {report.relative_error:.3g} (tolerance {report.tolerance:g}) "
          f"-> ok")
    return 0


__all__ = ["register"]

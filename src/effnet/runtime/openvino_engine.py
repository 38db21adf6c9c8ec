"""OpenVINO: conversion from a PyTorch module, the IR file (`export_openvino`), NNCF int8 and the CPU runtime.

On AMX/AVX512-BF16 CPUs OpenVINO silently infers in bf16 by default; fp32 pins INFERENCE_PRECISION_HINT=f32.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from effnet.cpu import cpu_flags, int8_unit
from effnet.runtime.base import Runtime, _as_array, _in_channels, _quiet, _require, _resolution


def _to_openvino(model: nn.Module, resolution: int | None):
    """An OpenVINO model converted from the eval-mode module, dynamic batch, spatial size `resolution`."""
    ov = _require("openvino")
    res, ch = _resolution(model, resolution), _in_channels(model)
    with torch.no_grad(), _quiet():
        converted = ov.convert_model(model.eval(), example_input=torch.zeros(1, ch, res, res),
                                     input=[ov.PartialShape([-1, ch, res, res])])
    return converted


def export_openvino(model: nn.Module, path: str | Path, *, resolution: int | None = None) -> Path:
    """OpenVINO IR (`path` .xml + .bin beside it), converted from the PyTorch module, dynamic batch."""
    ov = _require("openvino")
    path = Path(path).with_suffix(".xml")
    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(_to_openvino(model, resolution), str(path), compress_to_fp16=False)  # keep fp32 weights
    return path


def read_openvino(path: Path):
    """The OpenVINO model in an IR (.xml) or ONNX file."""
    return _require("openvino").Core().read_model(str(path))


def quantize_openvino(ov_model, calibration: torch.Tensor | np.ndarray):
    """int8 with NNCF post-training quantization (per-channel weights, statistics over the calibration images,
    fast bias correction), returning a new OpenVINO model."""
    # nncf probes torch's C++-extension toolchain on import, which logs a CUDA_HOME warning on CPU-only machines.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    nncf = _require("nncf")
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    images = _as_array(calibration)
    dataset = nncf.Dataset([img[None] for img in images])
    # Without VNNI or AMX, int8 products go through VPMADDUBSW, whose 16-bit sums saturate with 8-bit weights:
    # NNCF's overflow fix (7-bit weight range) on every layer there, not only on the first.
    vnni = int8_unit(cpu_flags()) != "none"
    advanced = AdvancedQuantizationParameters(overflow_fix=OverflowFix.FIRST_LAYER if vnni else OverflowFix.ENABLE)
    with _quiet():  # MIXED: asymmetric activations (SiLU outputs go below zero), symmetric per-channel weights
        return nncf.quantize(ov_model, dataset, subset_size=len(images), preset=nncf.QuantizationPreset.MIXED,
                             advanced_parameters=advanced)


def _warn_if_not_bf16(compiled) -> None:
    """OpenVINO quietly keeps f32 where the CPU has no bf16 unit (neither AMX nor AVX512-BF16): say so, since the
    caller asked for bf16 and would otherwise report bf16 numbers that are f32 ones."""
    try:
        used = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()  # e.g. "<type: 'bfloat16'>"
    except Exception:  # a plugin without the property: nothing to check
        return
    used = used.split("'")[1] if used.count("'") >= 2 else used
    if used not in ("bf16", "bfloat16"):
        warnings.warn(f"openvino: --precision bf16 asked, but this CPU has no bf16 unit (AMX or AVX512-BF16), so "
                      f"OpenVINO infers in {used}; the results are fp32 ones", stacklevel=2)


class OpenVinoRuntime(Runtime):
    """OpenVINO CPU plugin, one compiled model per input shape (static shapes run faster than dynamic ones).

    A batch that splits evenly over the threads runs as that many single-threaded streams, one slice each, in
    parallel (OpenVINO's THROUGHPUT mode): no barrier between threads inside each layer (B0 bf16 at batch 32:
    1.64× ONNX Runtime fp32 in benchmarks/results/infer_b0.txt, 1.48× before this split).  Batch 1, or a
    batch that does not split evenly, runs as one request on all threads (LATENCY mode)."""

    backend = "openvino"

    def __init__(self, ov_model, precision: str, threads: int | None) -> None:
        ov = _require("openvino")
        self.core, self.model, self.precision = ov.Core(), ov_model, precision
        self.threads = threads or torch.get_num_threads()
        self.config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": self.threads}
        if precision == "fp32":
            self.config["INFERENCE_PRECISION_HINT"] = "f32"
        elif precision == "bf16":
            self.config["INFERENCE_PRECISION_HINT"] = "bf16"
        self._warned = False
        self._compiled: dict[tuple[int, ...], object] = {}  # LATENCY mode, one request on all threads
        self._streams: dict[tuple[int, ...], list] = {}  # THROUGHPUT mode: one request per single-threaded stream

    def _compile(self, shape: tuple[int, ...], config: dict):
        ov = _require("openvino")
        model = self.model.clone()
        model.reshape({model.inputs[0]: ov.PartialShape(list(shape))})
        compiled = self.core.compile_model(model, "CPU", config)
        if self.precision == "bf16" and not self._warned:
            _warn_if_not_bf16(compiled)
            self._warned = True
        return compiled

    def _for_shape(self, shape: tuple[int, ...]):
        compiled = self._compiled.get(shape)
        if compiled is None:
            compiled = self._compiled[shape] = self._compile(shape, self.config)
        return compiled

    def _stream_requests(self, shape: tuple[int, ...]) -> list:
        """`self.threads` infer requests of one model compiled with as many single-threaded streams."""
        requests = self._streams.get(shape)
        if requests is None:
            compiled = self._compile(shape, dict(self.config, PERFORMANCE_HINT="THROUGHPUT", NUM_STREAMS=self.threads))
            requests = self._streams[shape] = [compiled.create_infer_request() for _ in range(self.threads)]
        return requests

    def run(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        if self.threads > 1 and n >= self.threads and n % self.threads == 0:
            part = n // self.threads
            requests = self._stream_requests((part,) + tuple(x.shape[1:]))
            for i, request in enumerate(requests):
                request.start_async({0: x[i * part:(i + 1) * part]})
            for request in requests:
                request.wait()
            return np.concatenate([request.get_output_tensor(0).data for request in requests])
        return self._for_shape(tuple(x.shape))(x)[0]


def save_openvino(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """`effnet.export` entry point: OpenVINO IR at `path` (.xml, weights in the .bin beside it), dynamic batch."""
    export_openvino(model, path, resolution=example.shape[-1])


def openvino_runner(path: Path):
    """`effnet.export` entry point: numpy batch → numpy logits through OpenVINO in fp32."""
    return OpenVinoRuntime(read_openvino(Path(path)), "fp32", None).run


__all__ = ["OpenVinoRuntime", "export_openvino", "openvino_runner", "quantize_openvino", "read_openvino",
           "save_openvino"]

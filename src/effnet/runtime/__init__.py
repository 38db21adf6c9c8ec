"""One interface over the inference engines a model can run on: PyTorch, ONNX Runtime and OpenVINO.

    rt = load_runtime(model, "openvino", "int8", calibration=images)   # or "onnxruntime"/"torch"; "fp32"/"bf16"
    logits = rt(x)                                                     # NCHW float32 in, float32 logits out
    rt = load_runtime(model, engine="auto", batch=16)                  # the fastest engine here, timed and cached
    print(rt.choice.describe())

A runtime takes an `nn.Module` (exported on the fly into `workdir`) or a file made by `export_onnx` /
`export_openvino` (`effnet export --format onnx|openvino`).  Precisions: fp32 (≤ 1e-4 relative to eager),
bf16 (AMX; lossy), int8 (post-training quantization calibrated on real images; lossy).  Lossy paths are
measured against fp32 on real photos (`effnet.agreement.measure_agreement`), never assumed.

One module per engine: `torch_engine`, `onnxruntime_engine` (also the one ONNX exporter and the one ONNX Runtime
session factory), `openvino_engine`; `base` holds the `Runtime` interface, `load` the entry points and `auto` the
timing and the cache behind `engine="auto"` (`choose_engine`, reusable by benchmarks).
"""

from effnet.runtime.auto import choose_engine
from effnet.runtime.base import (
    BACKENDS,
    ENGINES,
    PRECISIONS,
    EngineChoice,
    ExportError,
    Runtime,
    RuntimeUnavailable,
    check_runtime,
)
from effnet.runtime.load import RuntimeModule, available_backends, load_runtime, runtime_module
from effnet.runtime.onnxruntime_engine import (
    ONNX_INPUT,
    ONNX_OUTPUT,
    export_onnx,
    onnx_runner,
    onnx_session,
    quantize_onnx,
    save_onnx,
)
from effnet.runtime.openvino_engine import (
    _to_openvino,  # noqa: F401  (benchmarks/run.py profiles the converted model)
    export_openvino,
    openvino_runner,
    quantize_openvino,
    save_openvino,
)

__all__ = [
    "BACKENDS", "ENGINES", "ONNX_INPUT", "ONNX_OUTPUT", "PRECISIONS", "EngineChoice", "ExportError", "Runtime",
    "RuntimeModule", "RuntimeUnavailable", "available_backends", "check_runtime", "choose_engine", "export_onnx",
    "export_openvino", "load_runtime", "onnx_runner", "onnx_session", "openvino_runner", "quantize_onnx",
    "quantize_openvino", "runtime_module", "save_onnx", "save_openvino",
]

"""Peers that run effnet's own model on another engine, each set up the way that engine's documentation recommends
for speed on a CPU:

- `executorch`: `torch.export` → `to_edge_transform_and_lower` with the XNNPACK partitioner → `to_executorch`, run by
  `executorch.runtime.Runtime`; fp32, one program per input shape (each exported at its shape).
- `litert`: LiteRT's `CompiledModel` on the CPU accelerator (XNNPACK), converted from the module by `litert-torch`;
  fp32, one flatbuffer per input shape.
- `openvino-throughput`: OpenVINO's THROUGHPUT hint with an `AsyncInferQueue` of the plugin's optimal number of
  requests, one image each (as OpenVINO's benchmark_app runs in throughput mode), beside the `openvino` peer's
  LATENCY hint.
- `ort-int8`: ONNX Runtime's static int8 QDQ with unsigned activations and signed per-channel weights (U8S8),
  MinMax-calibrated on real photos: the lossy peer that effnet's lossy paths are compared with.

Every engine is told to use as many threads as torch does.  A peer whose packages are not installed raises
`PeerMissing` with a note saying what to install; the benchmark skips it and says so.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from effnet.runtime.base import _quiet

NEW_PEERS = ("executorch", "litert", "openvino-throughput", "ort-int8")
_NEEDS = {  # import name → what installs it, per peer
    "executorch": {"executorch": "pip install 'effnet[peers]'"},
    "litert": {"ai_edge_litert": "pip install 'effnet[peers]'",
               "litert_torch": "no PyTorch→TFLite converter here: pip install litert-torch (0.10 needs torch<2.15 "
                               "and, through xdsl, typing-extensions<4.13)"},
    "openvino-throughput": {"openvino": "pip install 'effnet[openvino]'"},
    "ort-int8": {"onnxruntime": "pip install 'effnet[export]'", "onnxscript": "pip install 'effnet[export]'"},
}
NOTES = {
    "executorch": "ExecuTorch, XNNPACK delegate, fp32, a program per batch shape",
    "litert": "LiteRT CompiledModel, CPU accelerator (XNNPACK), fp32, a model per batch shape",
    "openvino-throughput": "OpenVINO fp32, THROUGHPUT hint, AsyncInferQueue of {requests} requests x 1 image",
    "ort-int8": "ONNX Runtime static int8 QDQ, U8S8 per-channel, MinMax on real photos",
}

Step = Callable[[torch.Tensor], object]


class PeerMissing(Exception):
    """A peer that is not installed or lacks the model: skipped with a note."""


def require_peer(peer: str) -> None:
    """Raise `PeerMissing` naming what to install when a package `peer` needs does not import here."""
    for module, how in _NEEDS[peer].items():
        if importlib.util.find_spec(module) is None:
            raise PeerMissing(f"{module} is not installed ({how})")


@contextlib.contextmanager
def _native_stderr_silenced():
    """File descriptor 2 pointed at /dev/null for the block: native libraries' log lines, which Python's
    `sys.stderr` does not see (an error still raises, with its Python message)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _threads(threads: int | None) -> int:
    return threads or torch.get_num_threads()


def _per_shape(build: Callable[[torch.Tensor], Step]) -> Step:
    """A step that builds its engine at the first call with each input shape (a benchmark's untimed warm-up) and
    reuses it after."""
    built: dict[tuple[int, ...], Step] = {}

    def step(x: torch.Tensor):
        run = built.get(tuple(x.shape))
        if run is None:
            run = built[tuple(x.shape)] = build(x)
        return run(x)

    return step


def executorch_step(model: nn.Module, threads: int | None = None) -> Step:
    """`model` as ExecuTorch programs lowered to XNNPACK, on `threads` threads of ExecuTorch's pool."""
    with _quiet():  # the thread-pool functions warn that they are experimental
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
        from executorch.extension.pybindings.portable_lib import _threadpool_get_thread_count, _unsafe_reset_threadpool
        from executorch.runtime import Runtime

        if _threadpool_get_thread_count() != _threads(threads):
            _unsafe_reset_threadpool(_threads(threads))  # the pool is process-wide; nothing runs on it here yet
    runtime = Runtime.get()

    def build(x: torch.Tensor) -> Step:
        with torch.no_grad(), _quiet():
            exported = torch.export.export(model.eval(), (x,))
            program = to_edge_transform_and_lower(exported, partitioner=[XnnpackPartitioner()]).to_executorch()
        loaded = runtime.load_program(program.buffer)  # the method runs out of the program: keep both alive
        method = loaded.load_method("forward")

        def run(x: torch.Tensor, _program=loaded) -> torch.Tensor:
            return method.execute([x.contiguous()])[0]

        return run

    return _per_shape(build)


def litert_step(model: nn.Module, threads: int | None = None) -> Step:
    """`model` converted to a LiteRT flatbuffer by litert-torch and run by a `CompiledModel` on the CPU
    accelerator (XNNPACK) with `threads` threads."""
    with _native_stderr_silenced():  # importing the converter's TensorFlow parts logs on stderr
        import litert_torch
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.cpu_options import CpuOptions
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator
        from ai_edge_litert.options import Options

    options = Options(HardwareAccelerator.CPU, cpu_options=CpuOptions(num_threads=_threads(threads)))

    def build(x: torch.Tensor) -> Step:
        # the converter prints its progress on stdout; LiteRT's C++ side logs every accelerator it probes on stderr
        with torch.no_grad(), _quiet(), _native_stderr_silenced():
            flatbuffer = litert_torch.convert(model.eval(), (x,)).model_content()
            compiled = CompiledModel.from_buffer(flatbuffer, options=options)
            signature = next(iter(compiled.get_signature_list()))
            (output,) = compiled.get_output_tensor_details(signature).values()
            inputs, outputs = compiled.create_input_buffers(0), compiled.create_output_buffers(0)
            shape = tuple(output["shape"])
            run(x, compiled, inputs, outputs, shape)  # the first run sets up the runtime environment, and says so

        return lambda x: run(x, compiled, inputs, outputs, shape)

    def run(x: torch.Tensor, compiled, inputs, outputs, shape: tuple[int, ...]) -> torch.Tensor:
        inputs[0].write(x.detach().contiguous().numpy())
        compiled.run_by_index(0, inputs, outputs)
        return torch.from_numpy(outputs[0].read(int(np.prod(shape)), np.float32).reshape(shape))

    return _per_shape(build)


def openvino_throughput_step(model: nn.Module, threads: int | None = None) -> tuple[Step, int]:
    """`model` compiled by OpenVINO for one image with the THROUGHPUT hint (fp32 pinned), and a step that sends
    each image of a batch as its own request through an `AsyncInferQueue` of the plugin's optimal size; with that
    size."""
    import openvino as ov

    from effnet.runtime.openvino_engine import _to_openvino

    converted = _to_openvino(model, None)
    converted.reshape({converted.inputs[0]: ov.PartialShape([1, *converted.inputs[0].get_partial_shape()[1:]])})
    config = {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32",
              "INFERENCE_NUM_THREADS": _threads(threads)}
    compiled = ov.Core().compile_model(converted, "CPU", config)
    requests = compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
    queue = ov.AsyncInferQueue(compiled, requests)
    results: dict[int, np.ndarray] = {}
    queue.set_callback(lambda request, i: results.__setitem__(i, request.get_output_tensor(0).data.copy()))

    def step(x: torch.Tensor) -> torch.Tensor:
        images = x.detach().contiguous().numpy()
        results.clear()
        for i in range(len(images)):
            queue.start_async({0: images[i:i + 1]}, i)
        queue.wait_all()
        return torch.from_numpy(np.concatenate([results[i] for i in range(len(images))]))

    return step, requests


__all__ = ["NEW_PEERS", "NOTES", "PeerMissing", "executorch_step", "litert_step", "openvino_throughput_step",
           "require_peer"]

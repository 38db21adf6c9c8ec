"""Side-by-side speed and memory: effnet's paths against the peers a user would pick instead, in one run.

    report = run_bench("efficientnet_b0", batches=(1, 32), paths=("eager", "folded"), peers=("timm",))

`machine` probes the CPU and its ISA, `ceiling` measures (once per machine, cached) the GEMM throughput and memory
bandwidth its speeds are fractions of, `memory` measures a call's peak memory, `candidates` builds what is timed
(effnet's paths and the peers), `peers` the opt-in peers on other engines (ExecuTorch, LiteRT, OpenVINO THROUGHPUT,
ONNX Runtime int8), `timing` runs them interleaved and computes the paired ratios, and `layers` times one forward
pass layer by layer against the roofline of the measured ceiling.
"""

from effnet.bench.candidates import (
    DEFAULT_PEERS,
    INFER_PATHS,
    LOSSY,
    PEERS,
    TRAIN_PATHS,
    TRAIN_PEERS,
    BenchError,
    Candidate,
    infer_candidate,
    peer_model,
    train_candidate,
)
from effnet.bench.ceiling import Ceiling, machine_ceiling, measure_ceiling
from effnet.bench.layers import LAYER_PATHS, LayerReport, LayerRow, layer_report, roofline
from effnet.bench.machine import Machine, machine
from effnet.bench.memory import isolated_train_memory, peak_memory_mb, peak_tensor_mb, saved_activation_mb
from effnet.bench.timing import Failure, Report, Result, run_bench

__all__ = [
    "DEFAULT_PEERS", "INFER_PATHS", "LAYER_PATHS", "LOSSY", "PEERS", "TRAIN_PATHS", "TRAIN_PEERS", "BenchError",
    "Candidate", "Ceiling", "Failure", "LayerReport", "LayerRow", "Machine", "Report", "Result", "infer_candidate",
    "isolated_train_memory", "layer_report", "machine", "machine_ceiling", "measure_ceiling", "peak_memory_mb",
    "peak_tensor_mb", "peer_model", "roofline", "run_bench", "saved_activation_mb", "train_candidate",
]

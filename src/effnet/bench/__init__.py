"""Side-by-side speed and memory: effnet's paths against the peers a user would pick instead, in one run.

    report = run_bench("efficientnet_b0", batches=(1, 32), paths=("eager", "folded"), peers=("timm",))

`machine` probes the CPU and its fp32 ceiling, `memory` measures a call's peak memory, `candidates` builds what is
timed (effnet's paths and the peers), and `timing` runs them interleaved and computes the paired ratios.
"""

from effnet.bench.candidates import (
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
from effnet.bench.machine import Machine, machine
from effnet.bench.memory import isolated_train_memory, peak_memory_mb, peak_tensor_mb, saved_activation_mb
from effnet.bench.timing import Failure, Report, Result, run_bench

__all__ = [
    "INFER_PATHS", "LOSSY", "PEERS", "TRAIN_PATHS", "TRAIN_PEERS", "BenchError", "Candidate", "Failure", "Machine",
    "Report", "Result", "infer_candidate", "isolated_train_memory", "machine", "peak_memory_mb", "peak_tensor_mb",
    "peer_model", "run_bench", "saved_activation_mb", "train_candidate",
]

"""What a benchmark times: effnet's inference and training paths and the peers a user would pick instead
(timm, torchvision, ONNX Runtime, OpenVINO; and, opt-in, the engines of `effnet.bench.peers`: ExecuTorch, LiteRT,
OpenVINO in THROUGHPUT mode, ONNX Runtime int8), each a `Candidate` whose `step(x)` runs one batch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from effnet.bench.peers import (
    NEW_PEERS,
    NOTES,
    PeerMissing,
    executorch_step,
    litert_step,
    openvino_throughput_step,
    require_peer,
)
from effnet.errors import EffnetError
from effnet.layers import set_training_path
from effnet.optimize import (
    compile_for_inference,
    fuse_bn_silu_for_training,
    optimize_for_inference,
    to_bf16,
)
from effnet.spec import NetSpec

INFER_PATHS = ("eager", "channels_last", "folded", "compile", "bf16", "compile-bf16", "onnxruntime-int8",
               "openvino-bf16", "openvino-int8")
TRAIN_PATHS = ("default", "default-compile", "eager", "channels_last", "channels_last-fused",
               "channels_last-checkpoint", "bf16", "bf16-fused", "checkpoint", "bf16-checkpoint")
DEFAULT_PEERS = ("timm", "torchvision", "onnxruntime", "openvino")  # what `--vs` compares with unless told
PEERS = DEFAULT_PEERS + NEW_PEERS  # NEW_PEERS (lowering, conversion, calibration: slow to build) are asked for by name
TRAIN_PEERS = ("timm", "torchvision", "timm-bf16", "timm-channels_last", "effnet-aten")
# effnet-aten: effnet's training step with ATen's convolutions only (channels_last, fused BN+SiLU; `effnet train
# --no-own-kernels`), the step before effnet's own kernels, kept as a reference to measure them against.
LOSSY = {"bf16", "bf16-fused", "compile-bf16", "onnxruntime-int8", "openvino-bf16", "openvino-int8", "ort-int8"}
_TORCHVISION = {f"efficientnet_b{i}" for i in range(8)}


class BenchError(EffnetError, ValueError):
    """A benchmark that cannot run as asked (unknown path or peer, bad batch list)."""


@dataclass
class Candidate:
    """One thing to time: `step(x)` runs one batch.  `peer` marks what we compare against."""

    name: str
    step: Callable[[torch.Tensor], object]
    peer: bool = False
    note: str = ""


def _effnet_model(name: str | NetSpec, grad_checkpointing: bool = False) -> nn.Module:
    from effnet.registry import create_model

    return create_model(name, grad_checkpointing=grad_checkpointing)


def peer_model(peer: str, name: str) -> nn.Module | None:
    """The same architecture from timm or torchvision (randomly initialised), or None when the peer lacks it."""
    import importlib.util

    if peer.startswith("timm"):
        if importlib.util.find_spec("timm") is None:
            return None
        import timm

        return timm.create_model(name) if name in timm.list_models(name) else None
    if peer == "torchvision":
        if name not in _TORCHVISION:
            return None
        import torchvision

        return getattr(torchvision.models, name)()
    return None


def _infer_step(module: nn.Module) -> Callable[[torch.Tensor], object]:
    def step(x: torch.Tensor):
        with torch.inference_mode():
            return module(x)

    return step


def infer_candidate(
    model_name: str, path: str, calibration: torch.Tensor | None = None, spec: NetSpec | None = None
) -> Candidate:
    """An effnet inference path (see INFER_PATHS) or a peer (see PEERS) for `model_name` (built from `spec`
    when given, e.g. at another resolution)."""
    from effnet.runtime import load_runtime

    model = _effnet_model(spec or model_name).eval()
    if path == "eager":
        return Candidate(path, _infer_step(model))
    if path == "channels_last":
        return Candidate(path, _infer_step(optimize_for_inference(model, fold_bn=False)))
    if path == "folded":
        return Candidate(path, _infer_step(optimize_for_inference(model)), note="BN folded + channels_last")
    if path == "compile":
        return Candidate(path, _infer_step(compile_for_inference(model)), note="inductor, freezing, channels_last")
    if path == "bf16":
        return Candidate(path, _infer_step(to_bf16(model)), note="bf16 weights, folded, channels_last")
    if path == "compile-bf16":
        return Candidate(path, _infer_step(compile_for_inference(model, dtype=torch.bfloat16)),
                         note="bf16, inductor, freezing")
    if path in ("onnxruntime-int8", "openvino-int8", "openvino-bf16"):
        backend, precision = path.split("-")
        rt = load_runtime(model, backend, precision, calibration=calibration)
        return Candidate(path, rt, note="int8 PTQ on real photos" if precision == "int8" else "")
    if path in ("onnxruntime", "openvino"):
        return Candidate(path, load_runtime(model, path, "fp32"), peer=True, note=f"{path} fp32 (exported model)")
    if path in ("timm", "torchvision"):
        peer = peer_model(path, model_name)
        if peer is None:
            raise PeerMissing(f"{path} has no {model_name}")
        return Candidate(path, _infer_step(peer.eval()), peer=True, note=f"{path} eager fp32")
    if path in NEW_PEERS:
        return _engine_peer(path, model, calibration)
    raise BenchError(f"bench: unknown path {path!r}; expected one of {', '.join(INFER_PATHS + PEERS)}")


def _engine_peer(peer: str, model: nn.Module, calibration: torch.Tensor | None) -> Candidate:
    """One of `effnet.bench.peers`' engines running `model`, or `PeerMissing` when its packages are not here."""
    require_peer(peer)
    if peer == "executorch":
        step = executorch_step(model)
    elif peer == "litert":
        step = litert_step(model)
    elif peer == "openvino-throughput":
        step, requests = openvino_throughput_step(model)
        return Candidate(peer, step, peer=True, note=NOTES[peer].format(requests=requests))
    else:  # ort-int8: ONNX Runtime's documented x86 recipe, which is also effnet's onnxruntime-int8 path
        from effnet.runtime import load_runtime

        if calibration is None:
            from effnet.data.calibration import calibration_images

            calibration = calibration_images(model.spec, 64)
        step = load_runtime(model, "onnxruntime", "int8", calibration=calibration)
    return Candidate(peer, step, peer=True, note=NOTES[peer])


def _train_step(model: nn.Module, *, bf16: bool, channels_last: bool,
                compile: bool = False) -> Callable[[torch.Tensor], object]:
    model.train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, foreach=True)
    forward = torch.compile(model) if compile else model

    def step(x: torch.Tensor):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        target = torch.zeros(x.shape[0], dtype=torch.long)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(forward(x), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def train_candidate(model_name: str, path: str, spec: NetSpec | None = None) -> Candidate:
    """One training step (forward, backward, SGD update) of an effnet path (TRAIN_PATHS) or a peer."""
    if path in ("default", "default-compile", "effnet-aten"):  # the settings of `effnet train` (no augmentation)
        model = _effnet_model(spec or model_name)
        fuse_bn_silu_for_training(model)
        if path == "effnet-aten":
            set_training_path(model, "aten")
            return Candidate(path, _train_step(model, bf16=False, channels_last=True), peer=True,
                             note="effnet train --no-own-kernels: channels_last, fused BN+SiLU, ATen convolutions")
        compiled = path == "default-compile"
        return Candidate(path, _train_step(model, bf16=False, channels_last=True, compile=compiled),
                         note="effnet train's step: channels_last, fused BN+SiLU, effnet's depthwise and 1x1 paths"
                              + (", torch.compile" if compiled else ""))
    if path in TRAIN_PATHS:
        model = _effnet_model(spec or model_name, grad_checkpointing="checkpoint" in path)
        if path.endswith("-fused"):
            fuse_bn_silu_for_training(model)
        bf16 = path.startswith("bf16")
        notes = {"eager": "fp32", "channels_last": "fp32 channels_last", "bf16": "bf16 autocast, channels_last",
                 "channels_last-fused": "fp32 channels_last, BN+SiLU saving only BN input",
                 "channels_last-checkpoint": "fp32 channels_last, per-stage checkpointing",
                 "bf16-fused": "bf16, channels_last, BN+SiLU saving only BN input",
                 "checkpoint": "fp32, per-stage checkpointing", "bf16-checkpoint": "bf16, channels_last, checkpointing"}
        return Candidate(path, _train_step(model, bf16=bf16, channels_last=bf16 or path.startswith("channels_last")),
                         note=notes[path])
    if path in TRAIN_PEERS:
        peer = peer_model(path, model_name)
        if peer is None:
            raise PeerMissing(f"{path.split('-')[0]} has no {model_name}")
        bf16, channels_last = path.endswith("bf16"), path.endswith(("bf16", "channels_last"))
        note = "bf16 autocast, channels_last" if bf16 else "fp32 channels_last" if channels_last else "fp32"
        return Candidate(path, _train_step(peer, bf16=bf16, channels_last=channels_last), peer=True, note=note)
    raise BenchError(f"bench: unknown train path {path!r}; expected one of {', '.join(TRAIN_PATHS + TRAIN_PEERS)}")


__all__ = [
    "DEFAULT_PEERS", "INFER_PATHS", "LOSSY", "PEERS", "TRAIN_PATHS", "TRAIN_PEERS", "BenchError", "Candidate",
    "PeerMissing", "infer_candidate", "peer_model", "train_candidate",
]

"""Reading checkpoint files without running code from them.

A `.pth` file is a pickle, and unpickling can call any function the file names (``os.system`` included).  effnet
reads `.pth` only through ``torch.load(..., weights_only=True)``, whose restricted unpickler accepts tensors,
containers and primitive values and refuses everything else *before* calling it.  Both of torch's formats work:
the zip format (torch >= 1.6) and the older "legacy" pickle stream the bundled Lite files use.

safetensors is effnet's own format: a JSON header plus raw tensor bytes, nothing to execute.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from effnet.errors import EffnetError
from effnet.files import checked_output, file_mode


class WeightsError(EffnetError):
    """A weights file cannot be read, or does not fit the model; nothing has been loaded."""


class UnsafeCheckpointError(WeightsError):
    """A `.pth` file holds objects other than tensors and plain containers (possibly code); it was not run."""


# Dicts that training scripts wrap a state dict in; the first present wins.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "state_dict_ema", "model_ema")

SAFETENSORS_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


def read_pth(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a `.pth` state dict, read with ``weights_only=True``.

    A checkpoint dict that wraps the state dict (``{"state_dict": ..., "epoch": 3}``) is unwrapped.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path}: no such file") from None
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        found = next((line for line in lines if "GLOBAL" in line or "global" in line), None)
        if found is None:  # not an attack, just not a pickle torch understands
            reason = next((line for line in lines if "Unsupported" in line), lines[0] if lines else "")
            raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({reason[:160]})") from None
        raise UnsafeCheckpointError(
            f"{path}: refused to load: the pickle references objects outside tensors and plain containers "
            f"({found[:160]}); nothing in it was executed. Only load files you trust, or convert them to "
            f".safetensors in an environment you trust"
        ) from None
    except Exception as exc:  # noqa: BLE001 - torch's unpicklers raise many types (KeyError, EOFError...) on junk
        message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, KeyError | IndexError | AttributeError | TypeError | UnicodeDecodeError):
            message = "not a pickle torch can read"
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({message})") from None
    return _tensors_only(_unwrap(obj, path), path)


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and the string metadata of a `.safetensors` file."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable .safetensors file ({exc})") from None
    return tensors, metadata


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """Only the string metadata of a `.safetensors` file (no tensor is read)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable .safetensors file ({exc})") from None


def check_writable(path: str | Path) -> Path:
    """`path` if a weights file can be written there (`effnet.files.output_problem`); else `WeightsError` naming it
    (checked before any work)."""
    return checked_output(path, WeightsError)


def write_safetensors(state: Mapping[str, torch.Tensor], path: str | Path, metadata: Mapping[str, str] | None) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    path = check_writable(path)
    # safetensors refuses tensors that share memory or are not contiguous; copies are cheap at this size.
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    mode = file_mode(path)
    try:
        save_file(tensors, str(path), metadata=dict(metadata or {}))
        os.chmod(path, mode)  # safetensors leaves its file 0o600
    except (SafetensorError, OSError) as exc:
        message = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{path}: cannot write the .safetensors file ({message})") from None


def _unwrap(obj: object, path: Path) -> Mapping:
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
        return obj
    raise WeightsError(f"{path}: expected a state dict (name -> tensor), got a {type(obj).__name__}")


def _tensors_only(obj: Mapping, path: Path) -> dict[str, torch.Tensor]:
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise WeightsError(f"{path}: holds no tensors (keys: {sorted(map(str, obj))[:5]})")
    # DataParallel / DistributedDataParallel prefix every name with "module."
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state

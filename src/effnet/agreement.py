"""How far a lossy inference path (int8, bf16) moves a model's answers: top-1 agreement with eager fp32.

No ImageNet labels exist for the real photos these paths are judged on (`effnet.data.calibration.photo_batch`,
split "evaluation"), so accuracy *change* is bounded by disagreement: if the paths agree on a view, that view's
correctness cannot differ, so |Δ top-1| ≤ 100 % − agreement.  The benchmarks and the runtime tests report it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

CONFIDENT = 0.5


@dataclass(frozen=True)
class Agreement:
    path: str
    images: int
    top1_agreement: float  # fraction of views whose top-1 equals fp32's
    top5_contains_fp32_top1: float
    max_abs_logit_error: float
    bound_top1_change_pp: float  # |Δ top-1| ≤ this, in percentage points
    confident_images: int  # views where fp32's top-1 probability is at least CONFIDENT
    confident_top1_agreement: float


def agreement(reference: torch.Tensor, logits: torch.Tensor, path: str) -> Agreement:
    """Agreement overall, and on the views fp32 is confident about (p(top-1) ≥ 0.5): photos far from ImageNet
    (micrographs, textures, text) have near-ties among classes that any rounding can swap."""
    ref_top1 = reference.argmax(1)
    same = logits.argmax(1) == ref_top1
    top5 = (logits.topk(5, dim=1).indices == ref_top1[:, None]).any(1).float().mean().item()
    err = (logits - reference).abs().max().item()
    confident = reference.softmax(1).max(1).values >= CONFIDENT
    n_conf = int(confident.sum())
    conf_agree = same[confident].float().mean().item() if n_conf else float("nan")
    agree = same.float().mean().item()
    return Agreement(path, len(reference), agree, top5, err, 100 * (1 - agree), n_conf, conf_agree)


def measure_agreement(
    fp32: Callable[[torch.Tensor], torch.Tensor],
    paths: dict[str, Callable[[torch.Tensor], torch.Tensor]],
    images: torch.Tensor,
    batch: int = 32,
) -> list[Agreement]:
    """Top-1 agreement of each lossy path with the fp32 reference on `images`."""

    def run(fn):
        with torch.inference_mode():
            return torch.cat([torch.as_tensor(fn(images[i:i + batch])).float() for i in range(0, len(images), batch)])

    reference = run(fp32)
    return [agreement(reference, run(fn), name) for name, fn in paths.items()]


__all__ = ["CONFIDENT", "Agreement", "agreement", "measure_agreement"]

"""RMSProp in TensorFlow's form (the optimizer of the paper, Sec. 5.2) and parameter groups.

TensorFlow's `RMSPropOptimizer` differs from `torch.optim.RMSprop` in three ways that matter for reproducing the
recipe: the mean square starts at 1 (not 0), ε sits *inside* the square root, and the learning rate is applied
inside the momentum buffer (so a changing lr does not rescale past momentum):

    ms  ← ρ·ms + (1 − ρ)·g²
    mom ← μ·mom + lr·g / √(ms + ε)
    θ   ← θ − mom

Weight decay follows the reference too: L2 on the loss, i.e. g ← g + wd·θ, and only on conv/dense weights —
norm parameters and biases are excluded (`param_groups`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

OPTIMIZERS = ("rmsproptf", "sgd")


class RMSpropTF(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable,
        lr: float,
        decay: float = 0.9,
        momentum: float = 0.9,
        eps: float = 1e-3,
        weight_decay: float = 0.0,
    ) -> None:
        for name, value in (("lr", lr), ("eps", eps), ("weight_decay", weight_decay)):
            if value < 0:
                raise ValueError(f"RMSpropTF {name}: got {value}, expected >= 0")
        for name, value in (("decay", decay), ("momentum", momentum)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"RMSpropTF {name}: got {value}, expected in [0, 1)")
        super().__init__(params, dict(lr=lr, decay=decay, momentum=momentum, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        """One update of every parameter with a gradient, a group's tensors at a time (`torch._foreach_*`: the
        same operations, in the same order, as one tensor at a time, so the same numbers)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, rho, mu, eps, wd = group["lr"], group["decay"], group["momentum"], group["eps"], group["weight_decay"]
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if wd != 0:
                grads = torch._foreach_add(grads, params, alpha=wd)
            states = [self.state[p] for p in params]
            for p, state in zip(params, states):
                if not state:
                    state["step"] = 0
                    state["square_avg"] = torch.ones_like(p, memory_format=torch.preserve_format)
                    if mu > 0:
                        state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
            square_avg = [state["square_avg"] for state in states]
            torch._foreach_mul_(square_avg, rho)
            torch._foreach_addcmul_(square_avg, grads, grads, value=1 - rho)
            denom = torch._foreach_add(square_avg, eps)
            torch._foreach_sqrt_(denom)
            if mu > 0:
                bufs = [state["momentum_buffer"] for state in states]
                torch._foreach_mul_(bufs, mu)
                torch._foreach_addcdiv_(bufs, grads, denom, value=lr)
                torch._foreach_sub_(params, bufs)
            else:
                torch._foreach_addcdiv_(params, grads, denom, value=-lr)
        return loss


def is_no_decay(name: str, param: nn.Parameter) -> bool:
    """Norm scales/shifts and every bias are 1-D; conv and dense weights are not."""
    return param.ndim <= 1 or name.endswith(".bias")


def param_groups(
    model: nn.Module,
    weight_decay: float,
    *,
    backbone_lr_scale: float = 1.0,
    head_prefix: str = "classifier.",
) -> list[dict]:
    """Up to four groups: (backbone | classifier) × (decay | no decay).  Each carries `lr_scale`, which the
    schedule multiplies into its lr (a lower backbone lr for fine-tuning).  Frozen parameters are left out."""
    buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = (name.startswith(head_prefix), is_no_decay(name, p))
        buckets.setdefault(key, []).append(p)
    groups = []
    for (is_head, no_decay), params in sorted(buckets.items()):
        groups.append({
            "params": params,
            "weight_decay": 0.0 if no_decay else weight_decay,
            "lr_scale": 1.0 if is_head else backbone_lr_scale,
            "name": ("classifier" if is_head else "backbone") + ("/no_decay" if no_decay else "/decay"),
        })
    return groups


def make_optimizer(
    name: str, groups: list[dict], *, lr: float, decay: float, momentum: float, eps: float
) -> torch.optim.Optimizer:
    if name == "rmsproptf":
        return RMSpropTF(groups, lr=lr, decay=decay, momentum=momentum, eps=eps)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=momentum > 0, foreach=True)
    raise ValueError(f"optimizer: got {name!r}, expected one of {OPTIMIZERS}")

"""The recipe's pieces against hand-computed values: lr schedule, TF-form RMSProp, EMA, weight-decay groups."""

import math

import pytest
import torch
from torch import nn

from effnet.train import LRSchedule, ModelEma, RMSpropTF, make_schedule, param_groups, scaled_lr
from tests.conftest import tiny_spec


def test_lr_is_scaled_linearly_with_batch():
    assert scaled_lr(0.016, 256) == pytest.approx(0.016)
    assert scaled_lr(0.016, 4096) == pytest.approx(0.256)  # the paper's TPU setting
    assert scaled_lr(0.016, 64) == pytest.approx(0.004)


def test_schedule_warms_up_linearly_then_decays_097_every_24_epochs():
    s = make_schedule(base_lr=0.1, steps_per_epoch=10, warmup_epochs=1, decay_epochs=2.4, decay_rate=0.97)
    assert (s.warmup_steps, s.decay_steps) == (10, 24)
    assert s(0) == 0.0
    assert s(5) == pytest.approx(0.05)
    assert s(10) == pytest.approx(0.1)  # warm-up over, no decay yet
    assert s(23) == pytest.approx(0.1)
    assert s(24) == pytest.approx(0.097)
    assert s(48) == pytest.approx(0.1 * 0.97**2)
    assert s(100) == pytest.approx(0.1 * 0.97**4)  # floor(100/24) = 4: staircase


def test_warmup_overlays_decay_like_the_reference():
    # warm-up longer than one decay period: lr during warm-up is base·step/warmup, not the decayed value
    s = LRSchedule(base_lr=1.0, warmup_steps=50, decay_steps=10, decay_rate=0.5)
    assert s(20) == pytest.approx(0.4)
    assert s(50) == pytest.approx(0.5**5)


def test_rmsprop_tf_matches_hand_computed_two_steps():
    p = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = RMSpropTF([p], lr=0.1, decay=0.9, momentum=0.9, eps=1e-3, weight_decay=0.01)
    grads = [torch.tensor([0.5, 1.0]), torch.tensor([-0.2, 0.4])]
    theta = [1.0, -2.0]
    ms, mom = [1.0, 1.0], [0.0, 0.0]  # TF starts the mean square at one
    for g in grads:
        p.grad = g.clone()
        opt.step()
        for i in range(2):
            gi = g[i].item() + 0.01 * theta[i]  # L2 weight decay enters the gradient
            ms[i] = 0.9 * ms[i] + 0.1 * gi * gi
            mom[i] = 0.9 * mom[i] + 0.1 * gi / math.sqrt(ms[i] + 1e-3)  # eps inside the root, lr inside momentum
            theta[i] -= mom[i]
        assert p.detach().tolist() == pytest.approx(theta, rel=1e-6)


def test_rmsprop_tf_differs_from_torch_rmsprop():
    a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    tf, pt = RMSpropTF([a], lr=0.01, momentum=0.0), torch.optim.RMSprop([b], lr=0.01, alpha=0.9, eps=1e-3)
    for opt, p in ((tf, a), (pt, b)):
        p.grad = torch.full((3,), 0.5)
        opt.step()
    # torch starts at 0 mean square (step ≈ lr·g/|g|·√10); TF starts at 1 (step ≈ lr·g)
    assert (1 - a.detach()).tolist() == pytest.approx([0.01 * 0.5 / math.sqrt(0.9 + 0.1 * 0.25 + 1e-3)] * 3, rel=1e-4)
    assert not torch.allclose(a, b)


def test_rmsprop_tf_lr_change_does_not_rescale_past_momentum():
    p = nn.Parameter(torch.zeros(1))
    opt = RMSpropTF([p], lr=1.0, decay=0.0, momentum=0.5, eps=0.0)
    p.grad = torch.ones(1)
    opt.step()  # mom = 1·1/1 = 1
    opt.param_groups[0]["lr"] = 0.0
    opt.step()  # mom = 0.5·1 + 0 = 0.5 — the old lr stays inside the buffer
    assert p.item() == pytest.approx(-1.5)


def test_no_weight_decay_on_norm_and_bias():
    from effnet.network import ConvNet

    model = ConvNet(tiny_spec())
    groups = param_groups(model, 1e-5)
    names = {id(p): n for n, p in model.named_parameters()}
    for g in groups:
        for p in g["params"]:
            name = names[id(p)]
            no_decay = ".bn." in name or name.endswith(".bias")
            assert g["weight_decay"] == (0.0 if no_decay else 1e-5), name
    decayed = {names[id(p)] for g in groups if g["weight_decay"] for p in g["params"]}
    assert "stem.conv.weight" in decayed and "classifier.weight" in decayed
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_backbone_lr_scale_and_frozen_parameters():
    from effnet.network import ConvNet

    model = ConvNet(tiny_spec())
    model.stem.conv.weight.requires_grad_(False)
    groups = param_groups(model, 1e-5, backbone_lr_scale=0.1)
    scales = {g["name"]: g["lr_scale"] for g in groups}
    assert scales["classifier/decay"] == 1.0 and scales["backbone/decay"] == 0.1
    assert all(p is not model.stem.conv.weight for g in groups for p in g["params"])


def test_ema_update_with_warmup():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = ModelEma(model, decay=0.9999, warmup=True)
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(10**7) == 0.9999
    expected = 0.0
    for n, value in enumerate([1.0, 2.0, 3.0]):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model)
        d = min(0.9999, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * value
        assert ema.module.weight[0, 0].item() == pytest.approx(expected, rel=1e-6)


def test_ema_without_warmup_and_buffers_copied():
    model = nn.BatchNorm1d(2)
    ema = ModelEma(model, decay=0.5, warmup=False)
    with torch.no_grad():
        model.weight.fill_(3.0)
        model.running_mean.fill_(7.0)
    ema.update(model)
    assert ema.module.weight.tolist() == pytest.approx([2.0, 2.0])
    assert ema.module.running_mean.tolist() == [7.0, 7.0]

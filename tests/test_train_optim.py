"""The recipe's pieces against hand-computed values: lr schedule, TF-form RMSProp, EMA, weight-decay groups."""

import math

import pytest
import torch
from torch import nn

from effnet.train import LRSchedule, ModelEma, RMSpropTF, make_schedule, param_groups, scaled_lr
from effnet.train.optim import make_optimizer
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


def _rmsprop_tf_per_tensor(params, grads, states, *, lr, rho, mu, eps, wd):
    """The update written one tensor at a time, as the paper's reference code states it."""
    for p, g, state in zip(params, grads, states):
        g = g if wd == 0 else g.add(p, alpha=wd)
        if not state:
            state["square_avg"] = torch.ones_like(p)
            state["momentum_buffer"] = torch.zeros_like(p)
        square_avg, buf = state["square_avg"], state["momentum_buffer"]
        square_avg.mul_(rho).addcmul_(g, g, value=1 - rho)
        buf.mul_(mu).addcdiv_(g, square_avg.add(eps).sqrt_(), value=lr)
        p.sub_(buf)


@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_rmsprop_tf_grouped_step_equals_the_per_tensor_update_bit_for_bit(wd):
    torch.manual_seed(0)
    shapes = [(8, 3, 3, 3), (8,), (10, 8), (1,)]
    params = [torch.randn(s, requires_grad=True) for s in shapes]
    reference = [p.detach().clone() for p in params]
    states = [{} for _ in params]
    opt = RMSpropTF([{"params": params, "weight_decay": wd}], lr=0.05, decay=0.9, momentum=0.9, eps=1e-3)
    for step in range(4):
        grads = [torch.randn(s) for s in shapes]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        params[3].grad = None if step == 1 else params[3].grad  # a parameter without a gradient is left alone
        opt.step()
        _rmsprop_tf_per_tensor([r for i, r in enumerate(reference) if not (step == 1 and i == 3)],
                               [g for i, g in enumerate(grads) if not (step == 1 and i == 3)],
                               [s for i, s in enumerate(states) if not (step == 1 and i == 3)],
                               lr=0.05, rho=0.9, mu=0.9, eps=1e-3, wd=wd)
        for p, r in zip(params, reference):
            assert torch.equal(p.detach(), r)
    assert opt.state[params[0]]["step"] == 4 and opt.state[params[3]]["step"] == 3


def test_sgd_is_grouped_and_equals_the_per_tensor_sgd():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    twin = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    twin.load_state_dict(model.state_dict())
    grouped = make_optimizer("sgd", param_groups(model, 1e-3), lr=0.1, decay=0.9, momentum=0.9, eps=1e-3)
    assert all(g["foreach"] for g in grouped.param_groups)
    single = torch.optim.SGD(param_groups(twin, 1e-3), lr=0.1, momentum=0.9, nesterov=True, foreach=False)
    x = torch.randn(6, 3, 8, 8)
    for _ in range(3):
        for m, opt in ((model, grouped), (twin, single)):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)


def test_ema_copies_every_buffer_including_integer_counters():
    model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3))
    ema = ModelEma(model, decay=0.9, warmup=False)
    model.train()
    model(torch.randn(4, 2, 5, 5))
    model(torch.randn(4, 2, 5, 5))
    ema.update(model)
    assert ema.module[1].num_batches_tracked.item() == 2
    assert torch.equal(ema.module[1].running_var, model[1].running_var)
    assert not torch.equal(ema.module[1].running_var, torch.ones(3))

"""Training-memory features: the memory-efficient SiLU and per-stage activation checkpointing."""

import pytest
import torch
from torch import nn

import effnet
from effnet.bench import saved_activation_mb
from effnet.layers import MemoryEfficientSiLU, make_activation, silu_memory_efficient
from effnet.network import ConvNet
from tests.conftest import tiny_spec


def test_memory_efficient_silu_gradient_equals_autograd():
    x = torch.randn(4, 8, 5, 5, dtype=torch.float64, requires_grad=True)
    g = torch.randn_like(x)
    (ours,) = torch.autograd.grad(silu_memory_efficient(x), x, g)
    (ref,) = torch.autograd.grad(x * torch.sigmoid(x), x, g)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(silu_memory_efficient, (x[:1, :2].detach().requires_grad_(),))


def test_memory_efficient_silu_saves_only_its_input():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    y = x * 1.0
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        silu_memory_efficient(y)
    assert len(saved) == 1 and saved[0].data_ptr() == y.data_ptr()


def test_builder_uses_memory_efficient_silu_and_forward_is_unchanged():
    act = make_activation("silu")
    assert isinstance(act, MemoryEfficientSiLU)
    x = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(act(x.clone()), nn.functional.silu(x))


def test_state_dict_and_params_unchanged_by_training_options():
    a = ConvNet(tiny_spec())
    b = effnet.create_model(tiny_spec(), grad_checkpointing=True)
    assert list(a.state_dict()) == list(b.state_dict())
    assert effnet.count_params(a) == effnet.count_params(b)


def _grads(model, x):
    torch.manual_seed(7)
    model(x).square().mean().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_checkpointing_gives_equal_gradients_and_bn_statistics():
    spec = tiny_spec(drop_path_rate=0.2)
    plain = ConvNet(spec).train()
    ckpt = ConvNet(spec, grad_checkpointing=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(4, 3, 32, 32)
    g1, g2 = _grads(plain, x), _grads(ckpt, x)
    for name in g1:
        torch.testing.assert_close(g2[name], g1[name], rtol=1e-5, atol=1e-6, msg=name)
    for (name, b1), b2 in zip(plain.named_buffers(), ckpt.buffers()):
        torch.testing.assert_close(b2, b1, msg=name)  # running stats updated once, not twice


def test_checkpointing_saves_activation_memory():
    spec = tiny_spec()
    x = torch.randn(8, 3, 32, 32)
    plain = saved_activation_mb(lambda: ConvNet(spec).train()(x).sum().backward())
    ckpt = saved_activation_mb(lambda: ConvNet(spec, grad_checkpointing=True).train()(x).sum().backward())
    assert ckpt < 0.6 * plain


def test_checkpointing_model_infers_like_the_plain_one():
    ckpt = ConvNet(tiny_spec(), grad_checkpointing=True).eval()
    plain = ConvNet(tiny_spec()).eval()
    plain.load_state_dict(ckpt.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ckpt(x), plain(x))


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_fused_bn_silu_gives_equal_gradients_statistics_and_less_saved_memory(memory_format):
    from effnet.optimize import fuse_bn_silu_for_training

    spec = tiny_spec(drop_path_rate=0.0)
    plain, fused = ConvNet(spec).train(), ConvNet(spec).train()
    fused.load_state_dict(plain.state_dict())
    assert fuse_bn_silu_for_training(fused) > 0
    assert list(fused.state_dict()) == list(plain.state_dict())
    plain, fused = plain.to(memory_format=memory_format), fused.to(memory_format=memory_format)
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=memory_format)
    g1, g2 = _grads(plain, x), _grads(fused, x)
    for name in g1:
        torch.testing.assert_close(g2[name], g1[name], rtol=1e-4, atol=1e-6, msg=name)
    for (name, b1), b2 in zip(plain.named_buffers(), fused.buffers()):
        torch.testing.assert_close(b2, b1, msg=name)
    step = lambda m: (lambda: m(x).sum().backward())  # noqa: E731
    assert saved_activation_mb(step(fused)) < 0.85 * saved_activation_mb(step(plain))
    with torch.no_grad():
        torch.testing.assert_close(fused.eval()(x), plain.eval()(x))


def test_memory_efficient_silu_double_backward_equals_autograd():
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(silu_memory_efficient, (x,))
    (g1,) = torch.autograd.grad(silu_memory_efficient(x).sum(), x, create_graph=True)
    (ref,) = torch.autograd.grad(torch.nn.functional.silu(x).sum(), x, create_graph=True)
    torch.testing.assert_close(torch.autograd.grad(g1.sum(), x)[0], torch.autograd.grad(ref.sum(), x)[0])


def test_fused_bn_silu_respects_a_frozen_batchnorm():
    """A BN put in eval mode inside a training model (a frozen backbone) keeps its statistics, fused or not."""
    from effnet.optimize import fuse_bn_silu_for_training

    model = ConvNet(tiny_spec()).train()
    fuse_bn_silu_for_training(model)
    model.stem.bn.eval()
    before = model.stem.bn.running_mean.clone()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert torch.equal(model.stem.bn.running_mean, before)
    assert int(model.stages[0][0].depthwise.bn.num_batches_tracked) == 1  # a training BN still updates

"""effnet's squeeze-excite operator (`effnet.ops.squeeze_excite`) against the stock torch formulas of
`layers.SqueezeExcite`."""

from __future__ import annotations

import copy

import pytest
import torch

from effnet import ConvNet, ops
from effnet.layers import SqueezeExcite, set_training_path
from effnet.ops import native
from effnet.ops import squeeze_excitation as se
from tests.conftest import tiny_spec

pytestmark = pytest.mark.skipif(not se.kernel_available(), reason="no C compiler: effnet's kernel cannot be built")


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def _channels_last(t):
    return t.contiguous(memory_format=torch.channels_last)


def _pair(channels, reduced, activation="silu", seed=0):
    """A SqueezeExcite on effnet's path and a copy on the stock path, with non-trivial biases."""
    torch.manual_seed(seed)
    ours = SqueezeExcite(channels, reduced, activation).train()
    with torch.no_grad():
        ours.reduce.bias.normal_()
        ours.expand.bias.normal_()
    stock = copy.deepcopy(ours)
    set_training_path(stock, "aten")
    return ours, stock


def _run(module, x, grad):
    x = x.detach().clone().requires_grad_()
    module.zero_grad(set_to_none=True)
    out = module(x)
    out.backward(grad)
    return [out, x.grad] + [p.grad for p in module.parameters()]


@pytest.fixture
def kernel_calls(monkeypatch):
    """The names of effnet's kernel calls (each `native.over_channels` call of this operator)."""
    calls = []
    real = se.native.over_channels

    def counted(channels, call, what, *rest):
        if what.startswith("squeeze-excite"):
            calls.append(what)
        return real(channels, call, what, *rest)

    monkeypatch.setattr(se.native, "over_channels", counted)
    return calls


@pytest.mark.parametrize("shape", [(8, 24, 9, 9), (8, 19, 5, 7), (1, 40, 1, 1), (8, 8, 1, 1), (1, 3, 6, 6),
                                   (4, 48, 9, 9), (2, 72, 18, 18), (8, 120, 3, 3)])
def test_forward_and_all_gradients_equal_stock(shape, kernel_calls):
    ours, stock = _pair(shape[1], max(1, shape[1] // 4))
    x = _channels_last(torch.randn(shape) * 2 + 0.3)
    grad = torch.randn(shape)
    got, ref = _run(ours, x, grad), _run(stock, x, grad)
    for a, b in zip(got, ref):
        assert _rel(a, b) <= 1e-5
    assert got[0].is_contiguous(memory_format=torch.channels_last)
    assert got[1].is_contiguous(memory_format=torch.channels_last)
    assert kernel_calls == ["squeeze-excite pooling", "squeeze-excite scaling"] + ["squeeze-excite backward"] * 2


@pytest.mark.parametrize("activation", ["relu", "relu6", "hardswish", "gelu", "identity"])
def test_other_activations_equal_stock(activation, kernel_calls):
    ours, stock = _pair(24, 6, activation)
    x = _channels_last(torch.randn(4, 24, 5, 5) * 3)
    grad = torch.randn(4, 24, 5, 5)
    for a, b in zip(_run(ours, x, grad), _run(stock, x, grad)):
        assert _rel(a, b) <= 1e-5
    assert len(kernel_calls) == 4


def test_a_non_contiguous_output_gradient_gives_the_same_gradients():
    ours, stock = _pair(16, 4)
    x = _channels_last(torch.randn(3, 16, 5, 5))
    grad = torch.randn(3, 16, 5, 5)  # NCHW-contiguous, not channels-last
    for a, b in zip(_run(ours, x, grad), _run(stock, x, grad)):
        assert _rel(a, b) <= 1e-5


def test_result_does_not_depend_on_the_thread_count(monkeypatch):
    # 48 channels on 81 pixels: one thread sums all 48 channels row by row, two threads take 32 and 16 channels
    # block by block; every channel's sums are formed alike.
    monkeypatch.setattr(native, "GRAIN", 1)  # split even this small tensor between the threads
    ours, _ = _pair(48, 12)
    x = _channels_last(torch.randn(4, 48, 9, 9))
    grad = torch.randn(4, 48, 9, 9)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _run(ours, x, grad)
        torch.set_num_threads(2)
        two = _run(ours, x, grad)
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(a, b) for a, b in zip(one, two))


def test_the_kernel_pools_as_the_backward_pass_pools_and_close_to_float64():
    x = _channels_last(torch.randn(3, 40, 17, 17) + 1.0)
    pooled = se._own_pool(x)
    assert _rel(pooled.double(), x.double().mean((2, 3))) <= 1e-6
    n, c, h, w = x.shape
    dgate, again = torch.empty(n, c), torch.empty(n, c)
    grad = _channels_last(torch.randn(x.shape))
    code = se._entry("se_backward_sums_nhwc", 4)(grad.data_ptr(), x.data_ptr(), dgate.data_ptr(), again.data_ptr(),
                                                  n, h * w, c, 0, c, 1)
    assert code == 0 and torch.equal(again, pooled)
    assert _rel(dgate.double(), (grad.double() * x.double()).sum((2, 3))) <= 1e-6


def _double_inputs(activation_seed=0):
    g = torch.Generator().manual_seed(activation_seed)
    x = torch.randn(2, 5, 3, 3, generator=g, dtype=torch.float64).requires_grad_()
    params = [torch.randn(shape, generator=g, dtype=torch.float64).requires_grad_() for shape in
              ((2, 5), (2,), (5, 2), (5,))]
    return x, params


@pytest.mark.parametrize("activation", ["silu", "relu", "gelu"])
@pytest.mark.parametrize("function", [ops.squeeze_excite, se.squeeze_excite_op])
def test_gradcheck_in_float64(function, activation):
    x, params = _double_inputs()
    assert torch.autograd.gradcheck(lambda *t: function(*t, activation), (x, *params))


def test_gradgradcheck_in_float64():
    x, params = _double_inputs()
    assert torch.autograd.gradgradcheck(lambda *t: ops.squeeze_excite(*t, "silu"), (x, *params))


@pytest.mark.parametrize("channels_last", [True, False])
def test_opcheck_of_the_registered_operators(channels_last):
    x = torch.randn(2, 16, 3, 3)
    if channels_last:
        x = _channels_last(x)
    params = [torch.randn(4, 16), torch.randn(4), torch.randn(16, 4), torch.randn(16)]
    torch.library.opcheck(se.squeeze_excite_op, (x.requires_grad_(), *(p.requires_grad_() for p in params), "silu"))
    grad = torch.randn_like(x)
    torch.library.opcheck(se.squeeze_excite_backward, (grad, x.detach(), *(p.detach() for p in params), "silu"))


def test_falls_back_to_torch_without_the_kernel(monkeypatch, kernel_calls):
    monkeypatch.setattr(se, "kernel_available", lambda: False)
    ours, stock = _pair(16, 4)
    x = _channels_last(torch.randn(2, 16, 5, 5))
    grad = torch.randn(2, 16, 5, 5)
    for a, b in zip(_run(ours, x, grad), _run(stock, x, grad)):
        assert _rel(a, b) <= 1e-5
    assert kernel_calls == []


def test_the_layer_routes_only_channels_last_cpu_training_through_the_operator(monkeypatch):
    calls = []
    real = ops.squeeze_excite
    monkeypatch.setattr(ops, "squeeze_excite", lambda *a: calls.append(a[-1]) or real(*a))
    module = SqueezeExcite(16, 4)
    assert list(module.state_dict()) == ["reduce.weight", "reduce.bias", "expand.weight", "expand.bias"]
    x = _channels_last(torch.randn(2, 16, 5, 5))
    module(x)
    assert calls == ["silu"]  # training, autograd on, CPU, float32, channels-last
    with torch.no_grad():
        module(x)
    module(x.contiguous())
    module.double()(x.double())
    module.float().eval()(x)
    module.train()
    module.act = torch.nn.Tanh()  # an activation the operator does not know
    module(x)
    assert calls == ["silu"]
    module.act = torch.nn.SiLU()
    module(x)
    assert calls == ["silu", "silu"]
    assert set_training_path(torch.nn.Sequential(module), "aten") == 1
    module(x)
    assert calls == ["silu", "silu"]
    set_training_path(module, "auto")
    module(x)
    assert len(calls) == 3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        module(x)  # the stock formulas, in autocast's precisions
    assert len(calls) == 3


def test_the_kernel_takes_a_gate_computed_under_autocast():
    ours, stock = _pair(16, 4)
    x = _channels_last(torch.randn(2, 16, 5, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = ops.squeeze_excite(x, ours.reduce.weight.flatten(1), ours.reduce.bias, ours.expand.weight.flatten(1),
                                 ours.expand.bias, "silu")
        ref = stock(x)
    assert got.dtype == torch.float32 and _rel(got, ref.float()) <= 2e-2


def test_torch_compile_sees_the_operators_and_matches_eager():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), SqueezeExcite(16, 4)).train()
    x = _channels_last(torch.randn(4, 3, 6, 6))
    model = model.to(memory_format=torch.channels_last)
    eager = torch.autograd.grad(model(x).square().sum(), list(model.parameters()))
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return torch._dynamo.backends.debugging.aot_eager(gm, example_inputs)

    compiled = torch.compile(model, backend=backend, fullgraph=True)
    got = torch.autograd.grad(compiled(x).square().sum(), list(model.parameters()))
    assert "effnet.squeeze_excite" in str(graphs[0].graph)
    for a, b in zip(got, eager):
        assert _rel(a, b) <= 1e-6


def test_a_model_trains_one_step_with_the_stock_gradients(kernel_calls):
    torch.manual_seed(0)
    ours = ConvNet(tiny_spec(dropout=0.0, drop_path_rate=0.0)).to(memory_format=torch.channels_last).train()
    stock = copy.deepcopy(ours)
    for m in stock.modules():
        if isinstance(m, SqueezeExcite):
            m.training_path = "aten"
    x = _channels_last(torch.randn(6, 3, 32, 32))
    y = torch.randint(0, 10, (6,))
    grads = []
    for model in (ours, stock):
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        grads.append({name: p.grad.clone() for name, p in model.named_parameters()})
        opt.step()
    assert grads[0].keys() == grads[1].keys()
    # Each gradient relative to its own largest value, or to a tenth of the model's largest where that is more:
    # the biases of a BatchNorm followed by another BatchNorm have zero gradients in exact arithmetic, rounding
    # noise in both paths.
    floor = 0.1 * max(g.abs().max() for g in grads[1].values())
    for name in grads[0]:
        a, b = grads[0][name], grads[1][name]
        assert (a - b).abs().max() <= 1e-5 * max(b.abs().max(), floor), name
    for a, b in zip(ours.parameters(), stock.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    se_modules = sum(isinstance(m, SqueezeExcite) for m in ours.modules())
    assert se_modules > 0 and len(kernel_calls) == 4 * se_modules

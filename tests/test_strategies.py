"""Scaling strategies: every rule splits a nominal cost multiplier s into (d, w, r) with d·w²·r² = s."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from effnet.scaling import (
    DOLLAR_A,
    STRATEGIES,
    compound,
    scale,
    scale_by,
    solve_scale,
    strategy_multipliers,
)
from effnet.spec import SpecError
from tests.conftest import tiny_spec


def _options(strategy: str) -> dict:
    return {"a": 0.6} if strategy == "dollar" else {}


@pytest.mark.parametrize("strategy", STRATEGIES)
@given(s=st.floats(1 / 64, 512))
def test_every_strategy_multiplies_the_nominal_cost_by_s(strategy, s):
    m = strategy_multipliers(s, strategy, **_options(strategy))
    assert m.depth * m.width**2 * m.resolution**2 == pytest.approx(s, rel=1e-9)
    assert m.macs_factor == pytest.approx(s, rel=1e-9)


@pytest.mark.parametrize(("strategy", "expected"), [
    ("depth", (4.0, 1.0, 1.0)), ("width", (1.0, 2.0, 1.0)), ("resolution", (1.0, 1.0, 2.0)),
    ("uniform", (4 ** (1 / 3), 4 ** (1 / 6), 4 ** (1 / 6))), ("fast", (4**0.1, 4**0.4, 4**0.05)),
])
def test_single_dimensions_and_dollars_named_members(strategy, expected):
    m = strategy_multipliers(4.0, strategy)
    assert (m.depth, m.width, m.resolution) == pytest.approx(expected, rel=1e-12)


def test_dollar_family_is_d_w_r_of_a():
    """Dollár et al.: d = s^((1-a)/2), w = s^(a/2), r = s^((1-a)/4); a=1 is width alone."""
    for a in (0.0, 0.25, 0.5, 1.0):
        m = strategy_multipliers(9.0, "dollar", a=a)
        assert (m.depth, m.width, m.resolution) == pytest.approx((9 ** ((1 - a) / 2), 9 ** (a / 2),
                                                                  9 ** ((1 - a) / 4)))
    assert strategy_multipliers(9.0, "dollar", a=1.0) == strategy_multipliers(9.0, "width")
    assert strategy_multipliers(5.0, "dollar", a=DOLLAR_A["fast"]) == strategy_multipliers(5.0, "fast")
    assert strategy_multipliers(5.0, "dollar", a=1 / 3) == strategy_multipliers(5.0, "uniform")


def test_compound_strategy_is_eq3_at_phi_of_s():
    """φ = ln s / ln(α·β²·γ²); at s = (α·β²·γ²)^2 that is φ = 2 exactly."""
    alpha, beta, gamma = 1.2, 1.1, 1.15
    s = (alpha * beta**2 * gamma**2) ** 2
    m = strategy_multipliers(s, "compound", alpha=alpha, beta=beta, gamma=gamma)
    ref = compound(2.0, alpha, beta, gamma)
    assert (m.depth, m.width, m.resolution) == pytest.approx((ref.depth, ref.width, ref.resolution), rel=1e-12)
    depth_only = strategy_multipliers(8.0, "compound", alpha=2.0, beta=1.0, gamma=1.0)
    assert (depth_only.depth, depth_only.width, depth_only.resolution) == pytest.approx((8.0, 1.0, 1.0))


def test_scale_by_scales_the_spec_with_the_strategy():
    spec = tiny_spec()
    m = strategy_multipliers(4.0, "fast")
    assert scale_by(spec, 4.0, "fast") == scale(spec, m.depth, m.width, m.resolution)
    assert scale_by(spec, 1.0, "depth") == spec


@pytest.mark.parametrize(("args", "kwargs", "message"), [
    ((2.0, "diagonal"), {}, "strategy: got 'diagonal', expected one of compound, depth"),
    ((2.0, "dollar"), {}, "needs a, e.g. a=0.8"),
    ((2.0, "fast"), {"a": 0.5}, "'dollar' strategy only"),
    ((2.0, "dollar"), {"a": 1.5}, r"a: got 1.5, expected a number in \[0, 1\]"),
    ((0.0, "depth"), {}, "scale s multiplier: got 0.0"),
    ((float("nan"), "width"), {}, "scale s multiplier"),
    ((2.0, "compound"), {"alpha": 1.0, "beta": 1.0, "gamma": 1.0}, "expected > 1"),
    ((1e6, "compound"), {"alpha": 100.0, "beta": 0.1, "gamma": 1.01}, "multipliers out of range"),
])
def test_bad_strategy_input_is_one_clear_error(args, kwargs, message):
    with pytest.raises(SpecError, match=message):
        strategy_multipliers(*args, **kwargs)


def _blocks(spec) -> float:
    return float(spec.num_blocks)


def test_scale_solver_meets_a_target_for_every_strategy():
    """A cost that grows with each strategy (MACs stand-in: blocks x width^2 x pixels) is met within tolerance."""
    spec = tiny_spec()

    def cost(s):
        return s.num_blocks * sum(st.out_channels for st in s.stages) ** 2 * s.resolution**2

    base = cost(spec)
    for strategy in STRATEGIES:
        sol = solve_scale(spec, 6 * base, cost, strategy=strategy, tolerance=0.1, **_options(strategy))
        assert sol.within_tolerance, (strategy, sol)
        assert sol.strategy == strategy and sol.spec == scale_by(spec, sol.scale, strategy, **_options(strategy))
        assert sol.multipliers.macs_factor == pytest.approx(sol.scale)


def test_scale_solver_counts_the_builders_limit_as_above_the_target():
    """Depth-only s of 4096 is beyond MAX_REPEATS: no error, the largest buildable model is reported instead."""
    spec = tiny_spec()
    sol = solve_scale(spec, 1e9, _blocks, strategy="depth")
    assert not sol.within_tolerance and sol.above is None
    s_max, blocks = sol.below
    # tiny's stages have 1, 2, 1 blocks: the middle one reaches MAX_REPEATS = 1000 first, at s = 500
    assert blocks == 2000 and math.ceil(2 * s_max) == 1000 and s_max == pytest.approx(500, rel=1e-3)
    # reachable targets are unaffected by the limit, however far the range reaches
    sol = solve_scale(spec, 40.0, _blocks, strategy="depth", log2_range=(-8.0, 40.0))
    assert sol.within_tolerance and sol.cost == pytest.approx(40.0, rel=0.03)


def test_scale_solver_reports_nearest_values_in_a_rounding_jump():
    sol = solve_scale(tiny_spec(), 4.5, _blocks, strategy="depth")
    assert not sol.within_tolerance and sol.scale is None and sol.spec is None
    (s_lo, below), (s_hi, above) = sol.below, sol.above
    assert below < 4.5 < above and s_lo < s_hi


def test_scale_solver_costs_each_rounded_model_once():
    calls = []
    solve_scale(tiny_spec(), 4.5, lambda s: calls.append(s) or _blocks(s), strategy="uniform")
    assert len(calls) == len(set(calls))


# -- B0 budgets and the CLI -----------------------------------------------------------------------------------------

def _cli(capsys, *argv):
    from effnet.cli import main

    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_depth_only_phi_budget_of_b0_solves(capsys):
    """With α=2, β=γ=1 the φ range reaches depth 256, beyond the builder's limit: that end counts as above 3G."""
    import json

    code, out, _ = _cli(capsys, "scale", "efficientnet_b0", "--target-macs", "3G", "--alpha", "2", "--beta", "1",
                        "--gamma", "1", "--format", "json")
    assert code == 0 and out.startswith("solved: phi=")
    result = json.loads(out[out.index("{"):])
    assert abs(result["macs"] / 3e9 - 1) <= 0.03 and result["width"] == result["resolution_multiplier"] == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["depth", "width", "resolution"])
def test_single_dimension_macs_budgets_of_b0_solve(strategy):
    from effnet.budget import solve_scale_for_macs
    from effnet.profile import count_macs

    sol = solve_scale_for_macs("efficientnet_b0", 3e9, strategy=strategy)
    assert sol.within_tolerance and abs(count_macs(sol.spec) / 3e9 - 1) <= 0.03
    others = {"depth": ("width", "resolution"), "width": ("depth", "resolution"),
              "resolution": ("depth", "width")}[strategy]
    assert all(getattr(sol.multipliers, o) == 1.0 for o in others)


def test_cli_scale_by_splits_s_with_the_strategy(capsys):
    import json

    code, out, _ = _cli(capsys, "scale", "efficientnet_b0", "--strategy", "dollar", "--dollar-a", "0.5",
                        "--scale-by", "4", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["strategy"] == "dollar" and data["scale_by"] == 4 and data["dollar_a"] == 0.5
    assert (data["depth"], data["width"], data["resolution_multiplier"]) == pytest.approx((2**0.5, 2**0.5, 2**0.25))
    assert data["ideal_ratio"] == pytest.approx(4.0) and data["name"] == "efficientnet_b0_dollar_s4"
    assert data["activations"] > data["base_activations"] > 0
    code, out, _ = _cli(capsys, "scale", "efficientnet_b0", "--strategy", "fast", "--scale-by", "2")
    assert code == 0 and "(strategy fast, s=2)" in out and "activations ratio:" in out


def test_cli_compound_scale_by_is_phi_of_s(capsys):
    code, out, _ = _cli(capsys, "scale", "efficientnet_b0", "--scale-by", str(1.2 * 1.1**2 * 1.15**2))
    assert code == 0 and "strategy compound" in out and "phi=1," in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--strategy", "dollar", "--dollar-a", "1.5", "--scale-by", "2"],
     "--dollar-a: got 1.5, expected a number in [0, 1]"),
    (["--strategy", "dollar", "--scale-by", "2"], "--strategy dollar needs --dollar-a A"),
    (["--dollar-a", "0.5", "--scale-by", "2"], "--dollar-a 0.5 is the parameter of --strategy dollar"),
    (["--scale-by", "0"], "--scale-by: got 0, expected a finite number > 0"),
    (["--scale-by", "-2"], "--scale-by: got -2, expected a finite number > 0"),
    (["--scale-by", "2", "--target-macs", "1G"],
     "give one of --target-macs / --target-latency, without --phi, --scale-by"),
    (["--scale-by", "2", "--depth", "2"], "--scale-by 2 sets the cost multiplier"),
    (["--strategy", "width"], "--strategy width needs --scale-by S or --target-macs/--target-latency"),
    (["--strategy", "width", "--alpha", "2", "--scale-by", "2"], "--strategy width does not use them"),
])
def test_cli_bad_strategy_input_is_one_line_and_status_2(capsys, argv, message):
    code, out, err = _cli(capsys, "scale", "efficientnet_b0", *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("effnet scale: error: ") and message in err


def test_cli_out_of_range_target_names_the_nearest_reachable_models(capsys):
    """A target beyond the builder's limits is one error line (exit 2) with the nearest reachable model, never a
    traceback of the builder."""
    code, out, err = _cli(capsys, "scale", "efficientnet_b0", "--strategy", "width", "--target-macs", "1000T")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "no s lands within 3%" in err and "nearest reachable: s=" in err and "widen --tolerance" in err

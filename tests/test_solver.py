"""The budget solver: φ whose rounded model lands within 3% of a MACs (or latency) target, or the nearest values."""

import json

import pytest

from effnet import budget
from effnet.budget import measure_latency, solve_for_latency, solve_for_macs
from effnet.cli import main
from effnet.profile import count_macs
from effnet.scaling import scale_compound, solve_phi
from effnet.spec import SpecError
from tests.conftest import tiny_spec


@pytest.mark.parametrize(("base", "target"), [("efficientnet_b0", 1.8e9), ("mobilenet_v2", 0.6e9),
                                              ("mobilenet_v2", 0.15e9)])
def test_macs_target_met_within_3_percent(base, target):
    sol = solve_for_macs(base, target)
    assert sol.within_tolerance and abs(sol.relative_error) <= 0.03
    # the reported cost is that of the rounded model at the reported φ, recounted independently
    from effnet.registry import get_spec

    assert count_macs(scale_compound(get_spec(base), sol.phi)) == sol.cost


def test_solver_is_pure_and_takes_any_cost():
    """A cost that is a coarse step function (block count) puts targets inside jumps: nearest values reported."""
    spec = tiny_spec()
    blocks = lambda s: float(s.num_blocks)
    sol = solve_phi(spec, 8.0, blocks, tolerance=0.03)
    assert sol.within_tolerance and sol.cost == 8.0
    assert scale_compound(spec, sol.phi).num_blocks == 8
    # 4 stages... tiny has 4 blocks at phi=0 and repeats round up per stage, so 4.5 blocks are never reachable
    sol = solve_phi(spec, 4.5, blocks, tolerance=0.03)
    assert not sol.within_tolerance and sol.phi is None
    (phi_lo, below), (phi_hi, above) = sol.below, sol.above
    assert below < 4.5 < above and phi_lo < phi_hi and phi_hi - phi_lo < 1e-3


def test_unreachable_targets_report_the_range_end():
    spec = tiny_spec()
    sol = solve_phi(spec, 1.0, lambda s: float(s.num_blocks), phi_range=(0.0, 2.0))
    assert not sol.within_tolerance and sol.below is None and sol.above == (0.0, 4.0)
    sol = solve_phi(spec, 1e6, lambda s: float(s.num_blocks), phi_range=(0.0, 2.0))
    assert sol.above is None and sol.below[0] == 2.0


def test_each_rounded_model_is_costed_once():
    calls = []
    spec = tiny_spec()
    solve_phi(spec, 4.5, lambda s: calls.append(s) or float(s.num_blocks))
    assert len(calls) == len(set(calls))


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "1G", True])
def test_bad_target_is_a_spec_error(bad):
    with pytest.raises(SpecError, match="target"):
        solve_phi(tiny_spec(), bad, lambda s: 1.0)


def test_latency_solver_bisects_on_measured_latency():
    """With a deterministic stand-in for the clock (ms ∝ MACs) the latency solver meets its tolerance."""
    fake = lambda s: count_macs(s) / 1e9 * 0.01  # 10 ms per GMAC
    sol = solve_for_latency(tiny_spec(), 0.00009, measure=fake, tolerance=0.05, phi_range=(-1.0, 6.0))
    assert sol.within_tolerance and abs(sol.cost / 0.00009 - 1) <= 0.05


def test_measure_latency_runs_the_model():
    t = measure_latency(tiny_spec(), batch=2, repeats=3, warmup=1)
    assert 0 < t < 5
    with pytest.raises(SpecError, match="statistic"):
        measure_latency(tiny_spec(), statistic="mean")


def test_cli_target_macs(capsys):
    assert main(["scale", "mobilenet_v2", "--target-macs", "600M", "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("solved: phi=")
    result = json.loads(out[out.index("{"):])
    assert abs(result["macs"] / 600e6 - 1) <= 0.03 and result["phi"] == pytest.approx(float(
        out.split("phi=")[1].split()[0]), abs=1e-4)


def test_cli_unreachable_target_names_nearest_values(capsys):
    assert main(["scale", "mobilenet_v2", "--target-macs", "1k"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "nearest reachable: phi=-3.0000 -> 81.018 MMACs" in captured.err


def test_cli_target_latency(capsys, monkeypatch):
    monkeypatch.setattr(budget, "measure_latency", lambda s, batch, threads: count_macs(s) / 1e9 * 0.04 * batch)
    assert main(["scale", "mobilenet_v2", "--target-latency", "25ms", "--batch", "1"]) == 0
    out = capsys.readouterr().out
    assert "solved: phi=" in out and "for target 25.00 ms" in out


@pytest.mark.parametrize("text", ["1.8X", "-5M", "G", "0"])
def test_cli_rejects_bad_budgets(text, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["scale", "mobilenet_v2", f"--target-macs={text}"])
    assert exc.value.code == 2 and "expected a MACs count" in capsys.readouterr().err

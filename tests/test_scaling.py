import math
import re
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from effnet.families.efficientnet import EFFICIENTNET_B0, EFFICIENTNET_LITE0
from effnet.scaling import compound, round_filters, round_repeats, scale, scale_compound
from effnet.spec import BLOCK_KINDS, HeadSpec, NetSpec, ScalingRules, SpecError, StageSpec, StemSpec


@pytest.mark.parametrize(
    ("channels", "width", "expected"),
    [
        (32, 1.0, 32), (32, 1.1, 32), (16, 1.1, 16), (24, 1.1, 24), (40, 1.1, 48), (1280, 1.1, 1408),
        (32, 1.4, 48), (40, 1.4, 56), (112, 1.4, 160), (32, 2.0, 64), (1280, 4.3, 5504),
        # never below the divisor; never below 90% of the value
        (10, 1.0, 16), (9, 1.0, 16), (3, 1.0, 8), (44, 1.0, 48),
    ],
)
def test_round_filters_matches_reference_rule(channels, width, expected):
    assert round_filters(channels, width) == expected


def test_round_filters_never_below_90_percent():
    for c in range(1, 600):
        for w in (0.25, 0.5, 0.75, 1.0, 1.1, 1.3, 2.0):
            r = round_filters(c, w)
            assert r % 8 == 0 and r >= 0.9 * c * w


def test_round_repeats_is_ceil():
    assert [round_repeats(r, 1.2) for r in (1, 2, 2, 3, 3, 4, 1)] == [2, 3, 3, 4, 4, 5, 2]
    assert round_repeats(4, 0.5) == 2 and round_repeats(1, 0.1) == 1


def test_compound_is_eq3():
    m = compound(2, 1.2, 1.1, 1.15)
    assert m.depth == pytest.approx(1.44) and m.width == pytest.approx(1.21) and m.resolution == pytest.approx(1.3225)
    down = compound(-1)
    assert down.depth == pytest.approx(1 / 1.2) and down.resolution < 1


def test_compound_warns_when_constraint_is_far_from_two():
    with pytest.warns(UserWarning, match="far from the paper's constraint"):
        compound(1, alpha=2.0, beta=1.5, gamma=1.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compound(1)  # 1.2 * 1.21 * 1.3225 = 1.92: within tolerance


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "2", True])
def test_bad_multipliers_are_rejected(bad):
    with pytest.raises(SpecError, match="multiplier: got"):
        scale(EFFICIENTNET_B0, depth=bad)
    with pytest.raises(SpecError, match="expected a finite number"):
        compound(1, alpha=bad)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "1"])
def test_bad_phi_is_rejected(bad):
    with pytest.raises(SpecError, match="phi: got"):
        compound(bad)


def test_identity_scale_returns_equal_spec():
    assert scale(EFFICIENTNET_B0) == EFFICIENTNET_B0


def test_scale_compound_phi1():
    spec = scale_compound(EFFICIENTNET_B0, 1)
    assert spec.resolution == round(224 * 1.15) == 258
    assert [s.repeats for s in spec.stages] == [2, 3, 3, 4, 4, 5, 2]
    assert spec.head.channels == 1408


def test_lite_keeps_stem_head_and_end_repeats_fixed():
    spec = scale(EFFICIENTNET_LITE0, depth=1.8, width=1.4)
    assert spec.stem.channels == 32 and spec.head.channels == 1280
    assert spec.stages[0].repeats == 1 and spec.stages[-1].repeats == 1
    assert spec.stages[1].repeats == 4
    unfixed = scale(EFFICIENTNET_LITE0, depth=1.8, width=1.4, fix_stem=False, fix_head=False,
                    fix_first_last_repeats=False)
    assert unfixed.stem.channels == 48 and unfixed.head.channels == 1792 and unfixed.stages[0].repeats == 2


# -- properties on random valid specs ---------------------------------------------------------------------

_stage = st.builds(
    StageSpec,
    kind=st.sampled_from(BLOCK_KINDS),
    repeats=st.integers(1, 6),
    kernel=st.sampled_from([1, 3, 5, 7]),
    stride=st.sampled_from([1, 2]),
    out_channels=st.integers(1, 512),
    expand_ratio=st.sampled_from([1, 2, 4, 6]),
    se_ratio=st.just(0.0),
)
_spec = st.builds(
    NetSpec,
    name=st.just("random"),
    stages=st.lists(_stage, min_size=1, max_size=8).map(tuple),
    stem=st.builds(StemSpec, channels=st.integers(1, 128)),
    head=st.builds(HeadSpec, channels=st.sampled_from([0, 320, 1000, 1280])),
    resolution=st.integers(32, 512),
)
_multiplier = st.floats(0.1, 5.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(spec=_spec, depth=_multiplier, width=_multiplier, resolution=_multiplier)
def test_scale_never_crashes_keeps_divisibility_and_repeats(spec, depth, width, resolution):
    out = scale(spec, depth, width, resolution)
    divisor = spec.scaling.divisor
    assert out.stem.channels % divisor == 0
    assert all(s.out_channels % divisor == 0 for s in out.stages)
    assert all(s.repeats >= 1 for s in out.stages)
    assert out.head.channels % divisor == 0
    assert out.resolution >= 8
    assert len(out.stages) == len(spec.stages)
    for a, b in zip(spec.stages, out.stages):
        assert b.repeats == max(1, math.ceil(a.repeats * depth))
    out.validate()  # the result is itself a valid spec


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(width=1e308), "width multiplier 1e+308: channels 16 would become inf, above the limit of 65,536"),
        (dict(depth=5000), "depth multiplier 5000: repeats 1 would become 5e+03, above the limit of 1,000"),
        (dict(resolution=1e6), "resolution multiplier 1e+06: resolution 224 would become 2.24e+08"),
    ],
)
def test_absurd_multipliers_fail_at_once_with_the_limit(kwargs, message):
    with pytest.raises(SpecError, match=re.escape(message)):
        scale(EFFICIENTNET_B0, **kwargs)


@pytest.mark.parametrize("phi", [5000, -5000])
def test_overflowing_phi_is_a_clear_error(phi):
    with pytest.raises(SpecError, match=rf"phi={phi} with alpha=1.2, beta=1.1, gamma=1.15 gives multipliers out of"):
        compound(phi)


_rules = st.builds(ScalingRules, divisor=st.sampled_from([1, 4, 8, 16]), fix_stem=st.booleans(),
                   fix_head=st.booleans(), fix_first_last_repeats=st.booleans())
_se_stage = st.builds(
    StageSpec, kind=st.just("mbconv"), repeats=st.integers(1, 6), kernel=st.sampled_from([3, 5]),
    stride=st.sampled_from([1, 2]), out_channels=st.integers(1, 512), expand_ratio=st.sampled_from([1, 4, 6]),
    se_ratio=st.sampled_from([0.0, 0.25, 0.5]),
)


@settings(max_examples=150, deadline=None)
@given(stages=st.lists(_se_stage, min_size=2, max_size=6), rules=_rules, depth=_multiplier, width=_multiplier)
def test_scale_honours_the_specs_rules(stages, rules, depth, width):
    spec = NetSpec(name="r", stages=tuple(stages), scaling=rules, stem=StemSpec(channels=32))
    out = scale(spec, depth, width)
    assert all(s.out_channels % rules.divisor == 0 and s.se_ratio == a.se_ratio for s, a in zip(out.stages, stages))
    assert (out.stem == spec.stem) if rules.fix_stem else out.stem.channels % rules.divisor == 0
    assert (out.head == spec.head) if rules.fix_head else out.head.channels % rules.divisor == 0
    if rules.fix_first_last_repeats:
        assert (out.stages[0].repeats, out.stages[-1].repeats) == (stages[0].repeats, stages[-1].repeats)
    assert all(b.repeats >= a.repeats if depth >= 1 else b.repeats >= 1 for a, b in zip(stages, out.stages))

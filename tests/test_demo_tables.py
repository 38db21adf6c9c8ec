import pytest

from effnet.experiments.family import compound_rows, model_rows
from effnet.families.efficientnet import EFFICIENTNET_B0
from effnet.scaling import compound, scale


def test_compound_table_rows_are_measured_not_ideal():
    rows = compound_rows(range(3))
    assert [r.phi for r in rows] == [0, 1, 2]
    assert rows[0].ratio == 1.0
    assert rows[1].ratio == pytest.approx(2.57, abs=0.01) and rows[1].target == 2.0
    assert rows[1].ideal == pytest.approx(1.2 * 1.1**2 * 1.15**2)


def test_note_facts_hold():
    """The demo's explanation of the deviation from 2^phi states these numbers; keep them true."""
    m = compound(1)
    scaled = scale(EFFICIENTNET_B0, m.depth, m.width, m.resolution)
    assert EFFICIENTNET_B0.num_blocks == 16 and scaled.num_blocks == 23
    assert m.macs_factor == pytest.approx(1.92, abs=0.005)


def test_model_rows_carry_paper_figures():
    (row,) = model_rows(["efficientnet_b3"])
    assert (row.paper_params_m, row.paper_macs_b) == (12.0, 1.8) and row.params == 12_233_232


def test_macs_vs_paper_is_signed_percent():
    (row,) = model_rows(["efficientnet_b0"])
    assert row.macs_vs_paper == "-1.1%"
    (lite,) = model_rows(["efficientnet_lite0"])
    assert lite.macs_vs_paper is None

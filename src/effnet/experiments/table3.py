"""Table 3 of the paper, computed: MobileNetV1/V2 and ResNet-50 scaled by depth, width, resolution and compound.

The paper (Tan & Le 2019, Table 3) shows that compound scaling helps ConvNets it did not design.  Here each cell is
the baseline spec passed through the one `scaling.scale` function and counted by `profile.count_macs`, beside the
paper's figure ("FLOPS" in the paper are multiply-adds, i.e. MACs).

The paper gives the compound setting only for MobileNetV1: d=1.4, w=1.2, r=1.3.  That is φ=2 of the B0
coefficients (α, β, γ) = (1.2, 1.1, 1.15) rounded to one decimal (1.44, 1.21, 1.3225), so we *assume* the same
setting for MobileNetV2 and ResNet-50, whose compound rows the paper states only as "compound scale".

Cells more than `EXPLAIN_ABOVE` from the paper carry an explanation in `NOTES`; tests/test_table3.py pins our
numbers for those cells, so a change to the rounding rules or the builder shows up there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

from effnet.profile import build_meta, count_macs, count_params
from effnet.registry import get_spec
from effnet.scaling import Multipliers, scale

EXPLAIN_ABOVE = 0.10
"""Relative difference to the paper above which a cell must say why."""

BASELINES = ("mobilenet_v1", "mobilenet_v2", "resnet50")

COMPOUND = Multipliers(depth=1.4, width=1.2, resolution=1.3)
"""Paper, Table 3, MobileNetV1 row; assumed for MobileNetV2 and ResNet-50 (the paper does not state theirs)."""

SETTINGS: dict[str, Multipliers] = {
    "baseline": Multipliers(),
    "depth (d=4)": Multipliers(depth=4.0),
    "width (w=2)": Multipliers(width=2.0),
    "resolution (r=2)": Multipliers(resolution=2.0),
    "compound (d=1.4, w=1.2, r=1.3)": COMPOUND,
}

PAPER_GMACS: dict[str, dict[str, float | None]] = {
    # Table 3 "FLOPS" (multiply-adds), in billions; None: the paper has no such row.
    "mobilenet_v1": {"baseline": 0.6, "depth (d=4)": None, "width (w=2)": 2.2, "resolution (r=2)": 2.2,
                     "compound (d=1.4, w=1.2, r=1.3)": 2.3},
    "mobilenet_v2": {"baseline": 0.3, "depth (d=4)": 1.2, "width (w=2)": 1.1, "resolution (r=2)": 1.2,
                     "compound (d=1.4, w=1.2, r=1.3)": 1.3},
    "resnet50": {"baseline": 4.1, "depth (d=4)": 16.2, "width (w=2)": 14.7, "resolution (r=2)": 16.4,
                 "compound (d=1.4, w=1.2, r=1.3)": 16.7},
}

NOTES: dict[tuple[str, str], str] = {
    ("mobilenet_v2", "compound (d=1.4, w=1.2, r=1.3)"): (
        "depth is rounded up per stage (ceil, as EfficientNet does): MobileNetV2's short stages 1,2,3,4,3,3,1 "
        "become 2,3,5,6,5,5,2, i.e. 28 blocks instead of 17 x 1.4 = 23.8, an effective d of 1.65; rounding each "
        "stage to the nearest integer instead gives 1.12 GMACs. The paper's compound setting for MobileNetV2 is "
        "not published; d=1.4, w=1.2, r=1.3 (its MobileNetV1 setting) is our assumption."
    ),
    ("resnet50", "depth (d=4)"): (
        "4x the repeats per stage (3,4,6,3 -> 12,16,24,12 blocks) adds only identity-shortcut blocks; each stage's "
        "first block (strided, with the projection shortcut, reading the wider input at the higher resolution) and "
        "the 7x7 stem are not repeated, so MACs grow 3.56x, not 4x. The paper's 16.2B is ~4x the baseline, as if "
        "every block of a stage were multiplied (stem + 4 x the stages' MACs = 16.0 GMACs here)."
    ),
}


@dataclass(frozen=True)
class Table3Cell:
    model: str
    setting: str
    depth: float
    width: float
    resolution_multiplier: float
    resolution: int
    params: int
    macs: int
    paper_gmacs: float | None

    @property
    def relative_difference(self) -> float | None:
        """(ours − paper) / paper."""
        return None if self.paper_gmacs is None else self.macs / 1e9 / self.paper_gmacs - 1.0

    @property
    def note(self) -> str | None:
        return NOTES.get((self.model, self.setting))

    @property
    def needs_explanation(self) -> bool:
        diff = self.relative_difference
        return diff is not None and abs(diff) > EXPLAIN_ABOVE

    def to_dict(self) -> dict:
        return asdict(self) | {"relative_difference": self.relative_difference, "note": self.note}


def table3_cells(models: tuple[str, ...] = BASELINES) -> list[Table3Cell]:
    """One cell per (baseline, setting), in the paper's order."""
    return list(_cells(tuple(models)))


@lru_cache(maxsize=4)
def _cells(models: tuple[str, ...]) -> tuple[Table3Cell, ...]:  # counting ResNet-50 at d=4 takes a few seconds
    cells = []
    for model in models:
        base = get_spec(model)
        for setting, m in SETTINGS.items():
            spec = scale(base, m.depth, m.width, m.resolution)
            cells.append(Table3Cell(
                model, setting, m.depth, m.width, m.resolution, spec.resolution,
                count_params(build_meta(spec)), count_macs(spec), PAPER_GMACS[model][setting],
            ))
    return tuple(cells)


def unexplained(cells: list[Table3Cell]) -> list[Table3Cell]:
    """Cells off by more than `EXPLAIN_ABOVE` with no note: there should be none."""
    return [c for c in cells if c.needs_explanation and not c.note]


__all__ = ["BASELINES", "COMPOUND", "EXPLAIN_ABOVE", "NOTES", "PAPER_GMACS", "SETTINGS", "Table3Cell",
           "table3_cells", "unexplained"]

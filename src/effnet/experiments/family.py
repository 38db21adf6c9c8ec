"""The EfficientNet family beside the paper's Table 2, and B0 under compound scaling for φ = 0…7."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from effnet.families.efficientnet import EFFICIENTNET_B0, PAPER_TABLE2
from effnet.profile import ModelProfile, profile
from effnet.registry import get_spec, list_models
from effnet.scaling import compound, scale


@dataclass(frozen=True)
class ModelRow:
    name: str
    params: int
    macs: int
    resolution: int
    paper_params_m: float | None
    paper_macs_b: float | None

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def macs_vs_paper(self) -> str | None:
        """Our MACs against Table 2's, as a signed percentage ("-1.1%"), or None where the paper has no figure."""
        return None if self.paper_macs_b is None else f"{100 * (self.macs / 1e9 / self.paper_macs_b - 1):+.1f}%"


def model_rows(names: list[str] | None = None) -> list[ModelRow]:
    rows = []
    for name in list_models() if names is None else names:
        p: ModelProfile = profile(get_spec(name))
        paper = PAPER_TABLE2.get(name, (None, None))
        rows.append(ModelRow(name, p.params, p.macs, p.resolution, *paper))
    return rows


@dataclass(frozen=True)
class CompoundRow:
    phi: int
    depth: float
    width: float
    resolution: int
    params: int
    macs: int
    ratio: float  # MACs / B0's MACs, measured
    ideal: float  # d·w²·r² with the unrounded multipliers
    target: float  # 2^φ


def compound_rows(
    phis: range = range(8), alpha: float = 1.2, beta: float = 1.1, gamma: float = 1.15
) -> list[CompoundRow]:
    """B0 scaled by Eq. 3 for each φ: what rounding does to the 2^φ promise."""
    base_macs = profile(EFFICIENTNET_B0).macs
    rows = []
    for phi in phis:
        m = compound(phi, alpha, beta, gamma)
        spec = scale(EFFICIENTNET_B0, m.depth, m.width, m.resolution, name=f"b0_phi{phi}")
        p = profile(spec)
        rows.append(CompoundRow(phi, m.depth, m.width, spec.resolution, p.params, p.macs, p.macs / base_macs,
                                m.macs_factor, 2.0**phi))
    return rows


COMPOUND_NOTE = """\
Reading the table: Eq. 3 promises MACs x 2^phi only approximately.
- Above 2^phi at small phi: depth is rounded *up* per stage (round_repeats = ceil). B0's stages have 1, 2, 2, 3, 3,
  4, 1 blocks; at d = 1.2 each gains one (16 blocks -> 23), so depth grows 1.44x instead of 1.2x. Widths also round
  to multiples of 8 and the resolution to whole pixels.
- Below 2^phi at large phi: alpha * beta^2 * gamma^2 = 1.2 * 1.1^2 * 1.15^2 = 1.92, so even the unrounded model
  grows like 1.92^phi (the d*w^2*r^2 column); the rounding excess shrinks relative to each stage as phi grows."""

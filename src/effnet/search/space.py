"""The architecture search space as data: MnasNet's factorised hierarchical space (Tan et al., "MnasNet:
Platform-Aware Neural Architecture Search for Mobile", CVPR 2019, Sec. 4) over a fixed skeleton of stages.

The skeleton fixes what the paper fixes: the number of stages, each stage's stride and base width, the stem and
the head.  Each stage then chooses, independently of the others (the "factorised" part: layers differ between
stages, repeat within one), its block kind, kernel, squeeze-excitation ratio, number of repeats (an offset from
the stage's base) and a width multiplier.  The shipped file (`resources/mnas_space.json`) puts this on
EfficientNet-B0's skeleton, which is how the paper's B0 was found (Sec. 4.2: the MnasNet space and reward, with
FLOPS in place of latency).  A user edits a copy and passes it with `--space`.

A point is a plain dict `{"s1_block": "mbconv6", "s1_kernel": 3, ...}` (the Optuna parameters), and
`SearchSpace.spec(point, ...)` turns it into an ordinary `NetSpec`.  Nothing here imports torch or Optuna.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from effnet.errors import EffnetError
from effnet.scaling import round_filters
from effnet.spec import SE_KINDS, HeadSpec, NetSpec, ScalingRules, SpecError, StageSpec, StemSpec

BLOCKS: dict[str, tuple[str, float]] = {
    "separable": ("separable", 1.0),
    "mbconv1": ("mbconv", 1.0),
    "mbconv3": ("mbconv", 3.0),
    "fused_mbconv1": ("fused_mbconv", 1.0),
    "mbconv6": ("mbconv", 6.0),
    "fused_mbconv4": ("fused_mbconv", 4.0),
    "fused_mbconv6": ("fused_mbconv", 6.0),
}
"""Block choices → (spec `kind`, `expand_ratio`), cheapest first (in MACs, for equal widths and a 3x3 kernel).  The
Fused-MBConv choices are EfficientNetV2's (Sec. 3.2: MBConv or Fused-MBConv, expansion 1, 4 or 6).  SE exists only
in (Fused-)MBConv blocks, so a separable stage ignores its `se_ratio` choice (the spec gets 0)."""

DIMENSIONS = ("block", "kernel", "se_ratio", "repeats_offset", "width")
DEFAULT_SPACE = "mnas_space.json"
_TOP_KEYS = {"name", "description", "stem", "head", "activation", "dropout", "drop_path_rate", "bn_eps",
             "bn_momentum", "divisor", "choices", "stages"}
_STAGE_KEYS = {"stride", "out_channels", "repeats", "choices"}


class SpaceError(EffnetError, ValueError):
    """A search-space file holds a value the search cannot use; the message names the file and the field."""


class _Suggests(Protocol):
    def suggest_categorical(self, name: str, choices: list) -> Any: ...


@dataclass(frozen=True)
class StageChoices:
    """One stage of the skeleton (stride, base width, base repeats) and what the search may choose for it."""

    stride: int
    out_channels: int
    repeats: int
    block: tuple[str, ...]
    kernel: tuple[int, ...]
    se_ratio: tuple[float, ...]
    repeats_offset: tuple[int, ...]
    width: tuple[float, ...]

    def options(self) -> dict[str, tuple]:
        """The choices per dimension; repeats as block counts (base + offset, at least 1, no duplicates)."""
        repeats = tuple(sorted({max(1, self.repeats + d) for d in self.repeats_offset}))
        return {"block": self.block, "kernel": self.kernel, "se_ratio": self.se_ratio, "repeats": repeats,
                "width": self.width}


@dataclass(frozen=True)
class SearchSpace:
    """A skeleton plus per-stage choices.  `params()` names every choice (`s3_kernel`), `spec(point)` builds one."""

    name: str
    stages: tuple[StageChoices, ...]
    stem: StemSpec = field(default_factory=StemSpec)
    head: HeadSpec = field(default_factory=HeadSpec)
    activation: str = "silu"
    dropout: float = 0.2
    drop_path_rate: float = 0.2
    bn_eps: float = 1e-3
    bn_momentum: float = 0.01
    divisor: int = 8
    description: str = ""
    source: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def params(self) -> dict[str, tuple]:
        """Every parameter of a point, in order, with its choices."""
        return {f"s{i + 1}_{dim}": values for i, stage in enumerate(self.stages)
                for dim, values in stage.options().items()}

    @property
    def size(self) -> int:
        """How many distinct points the space holds (separable stages count their SE choices once)."""
        total = 1
        for stage in self.stages:
            o = stage.options()
            per_kernel = sum(len(o["se_ratio"]) if BLOCKS[b][0] in SE_KINDS else 1 for b in o["block"])
            total *= per_kernel * len(o["kernel"]) * len(o["repeats"]) * len(o["width"])
        return total

    def sample(self, trial: _Suggests) -> dict[str, Any]:
        """One point, each choice drawn through `trial.suggest_categorical` (an Optuna trial)."""
        return {name: trial.suggest_categorical(name, list(values)) for name, values in self.params().items()}

    def extreme(self, largest: bool) -> dict[str, Any]:
        """The cheapest (or dearest) point: cheapest (dearest) block kind, smallest (largest) of every number."""
        pick = max if largest else min
        order = list(BLOCKS)
        return {name: pick(values, key=order.index) if name.endswith("_block") else pick(values)
                for name, values in self.params().items()}

    def check_point(self, point: Mapping[str, Any]) -> None:
        params = self.params()
        for name, values in params.items():
            if name not in point or point[name] not in values:
                raise SpaceError(f"point {name}: got {point.get(name)!r}, expected one of {list(values)}")

    def stage_specs(self, point: Mapping[str, Any]) -> tuple[StageSpec, ...]:
        self.check_point(point)
        stages = []
        for i, stage in enumerate(self.stages):
            p = {dim: point[f"s{i + 1}_{dim}"] for dim in ("block", "kernel", "se_ratio", "repeats", "width")}
            kind, expand = BLOCKS[p["block"]]
            stages.append(StageSpec(kind, int(p["repeats"]), int(p["kernel"]), stage.stride,
                                    round_filters(stage.out_channels, float(p["width"]), self.divisor),
                                    expand_ratio=expand, se_ratio=float(p["se_ratio"]) if kind in SE_KINDS else 0.0,
                                    activation=self.activation))
        return tuple(stages)

    def spec(self, point: Mapping[str, Any], *, resolution: int, num_classes: int, name: str | None = None,
             in_channels: int = 3) -> NetSpec:
        """The `NetSpec` of `point`: the skeleton's stem and head, the chosen stages."""
        return NetSpec(name=name or self.name, stages=self.stage_specs(point), stem=self.stem, head=self.head,
                       resolution=resolution, num_classes=num_classes, in_channels=in_channels,
                       dropout=self.dropout, drop_path_rate=self.drop_path_rate, bn_eps=self.bn_eps,
                       bn_momentum=self.bn_momentum, scaling=ScalingRules(divisor=self.divisor))

    def to_dict(self) -> dict[str, Any]:
        """The file's content as read (what identifies a search's space)."""
        return json.loads(json.dumps(self.source))


def describe_point(space: SearchSpace, point: Mapping[str, Any]) -> str:
    """A short code per stage: `mb6k5se x3 w1.25` → "mb6k5sex3w1.25" (a Fused-MBConv is "fmb4…"); stages separated
    by spaces."""
    parts = []
    codes = {"separable": "sep", "mbconv": "mb", "fused_mbconv": "fmb"}
    for stage in space.stage_specs(point):
        kind = codes[stage.kind] + ("" if stage.kind == "separable" else f"{stage.expand_ratio:g}")
        width = point.get(f"s{len(parts) + 1}_width", 1.0)
        parts.append(f"{kind}k{stage.kernel}{'se' if stage.se_ratio else ''}x{stage.repeats}"
                     + (f"w{width:g}" if width != 1.0 else ""))
    return " ".join(parts)


# -- reading a space file ----------------------------------------------------------------------------------------

def default_space_path() -> Path:
    return Path(str(resources.files("effnet").joinpath("resources", DEFAULT_SPACE)))


def load_space(path: str | Path | None = None) -> SearchSpace:
    """Read and check a space file (default: the shipped MnasNet-on-B0 space); errors name the file and field."""
    path = Path(path) if path is not None else default_space_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SpaceError(f"--space {path}: cannot read the file ({exc.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpaceError(f"--space {path}: not a JSON space file ({exc}); start from the shipped one "
                         "(`effnet search architecture --list-space` prints where it is)") from None
    try:
        return space_from_dict(data)
    except SpaceError as exc:
        raise SpaceError(f"--space {path}: {exc}") from None


def _fail(where: str, value: Any, expected: str) -> None:
    raise SpaceError(f"{where}: got {value!r}, expected {expected}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _choice_list(where: str, values: Any, ok, expected: str) -> tuple:
    if not isinstance(values, list) or not values:
        _fail(where, values, f"a non-empty list of {expected}")
    for v in values:
        if not ok(v):
            _fail(where, values, f"a list of {expected} ({v!r} is not)")
    if len(set(values)) != len(values):
        _fail(where, values, "a list without repeated values")
    return tuple(values)


_CHECKS = {
    "block": (lambda v: v in BLOCKS, "block kinds among " + ", ".join(BLOCKS)),
    "kernel": (lambda v: _is_int(v) and v >= 1 and v % 2 == 1 and v <= 15, "odd kernel sizes from 1 to 15"),
    "se_ratio": (lambda v: _is_number(v) and 0 <= v < 1, "SE ratios in [0, 1), e.g. 0 or 0.25"),
    "repeats_offset": (lambda v: _is_int(v) and -16 <= v <= 16, "integer offsets from the base repeats, e.g. -1, 0, 1"),
    "width": (lambda v: _is_number(v) and 0 < v <= 4, "width multipliers in (0, 4], e.g. 0.75, 1.0, 1.25"),
}


def _choices(where: str, data: Any, inherited: Mapping[str, tuple] | None) -> dict[str, tuple]:
    if not isinstance(data, dict):
        _fail(where, data, "an object with " + ", ".join(DIMENSIONS))
    unknown = sorted(set(data) - set(DIMENSIONS))
    if unknown:
        raise SpaceError(f"{where}: unknown choice(s) {unknown}; allowed: {list(DIMENSIONS)}")
    out = dict(inherited or {})
    for dim in DIMENSIONS:
        if dim in data:
            ok, expected = _CHECKS[dim]
            out[dim] = _choice_list(f"{where}.{dim}", data[dim], ok, expected)
        elif dim not in out:
            raise SpaceError(f"{where}: missing {dim!r} (every dimension needs its choices: {list(DIMENSIONS)})")
    return out


def space_from_dict(data: Any) -> SearchSpace:
    """Check every field of a parsed space file and build the `SearchSpace`."""
    if not isinstance(data, dict):
        _fail("space", type(data).__name__, "a JSON object")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise SpaceError(f"unknown field(s) {unknown}; allowed: {sorted(_TOP_KEYS)}")
    name = data.get("name")
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ "):
        _fail("name", name, "a non-empty name without spaces or slashes")
    common = _choices("choices", data.get("choices"), None)
    raw = data.get("stages")
    if not isinstance(raw, list) or not raw:
        _fail("stages", raw, "a non-empty list of {stride, out_channels, repeats} objects")
    stages = []
    for i, s in enumerate(raw):
        where = f"stages[{i}]"
        if not isinstance(s, dict):
            _fail(where, s, "an object with stride, out_channels, repeats")
        extra = sorted(set(s) - _STAGE_KEYS)
        if extra:
            raise SpaceError(f"{where}: unknown field(s) {extra}; allowed: {sorted(_STAGE_KEYS)}")
        if s.get("stride") not in (1, 2) or isinstance(s.get("stride"), bool):
            _fail(f"{where}.stride", s.get("stride"), "1 or 2")
        for key in ("out_channels", "repeats"):
            if not _is_int(s.get(key)) or s[key] < 1:
                _fail(f"{where}.{key}", s.get(key), "an integer >= 1")
        c = _choices(f"{where}.choices", s.get("choices", {}), common)
        stages.append(StageChoices(s["stride"], s["out_channels"], s["repeats"], *(c[d] for d in DIMENSIONS)))
    try:
        stem = StemSpec(**_object("stem", data.get("stem", {})))
        stem.validate()
        head = HeadSpec(**_object("head", data.get("head", {})))
        head.validate()
    except TypeError as exc:
        raise SpaceError(f"stem/head: {exc}") from None
    except SpecError as exc:
        raise SpaceError(str(exc)) from None
    if not isinstance(data.get("description", ""), str):
        _fail("description", data["description"], "a string")
    kwargs = {k: data[k] for k in ("activation", "dropout", "drop_path_rate", "bn_eps", "bn_momentum", "divisor")
              if k in data}
    space = SearchSpace(name=name, stages=tuple(stages), stem=stem, head=head, description=data.get("description", ""),
                        source=data, **kwargs)
    try:  # the skeleton's own fields (activation, dropout, ...) are checked by building the extreme points
        for largest in (False, True):
            space.spec(space.extreme(largest), resolution=32, num_classes=10)
    except SpecError as exc:
        raise SpaceError(str(exc)) from None
    return space


def _object(where: str, value: Any) -> dict:
    if not isinstance(value, dict):
        _fail(where, value, "a JSON object")
    return value


__all__ = ["BLOCKS", "DEFAULT_SPACE", "DIMENSIONS", "SearchSpace", "SpaceError", "StageChoices",
           "default_space_path", "describe_point", "load_space", "space_from_dict"]

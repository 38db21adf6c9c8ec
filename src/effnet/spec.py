"""A ConvNet as data: stem, stages of repeated blocks, head.

The spec is the single description every other part of effnet consumes: `scaling.scale` maps a spec to a
scaled spec, `network.ConvNet` builds an `nn.Module` from one, and JSON files hold them on disk.  Nothing here
imports torch.

Every field is checked where it enters (`NetSpec.__post_init__`), and a bad value raises `SpecError` naming the
field path (``stages[3].kernel``), the value, and what is allowed.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from effnet.errors import EffnetError

BLOCK_KINDS = ("mbconv", "fused_mbconv", "separable", "bottleneck")
"""Block kinds the builder knows:

- ``mbconv``: inverted residual (MobileNetV2 / EfficientNet): 1x1 expand (skipped when ``expand_ratio`` is 1),
  depthwise kxk, optional squeeze-excitation, linear 1x1 projection; identity skip when the shape is kept.
- ``fused_mbconv``: EfficientNetV2's Fused-MBConv: the 1x1 expansion and the depthwise kxk fused into one full kxk
  conv (carrying the stride), optional squeeze-excitation, linear 1x1 projection; with ``expand_ratio`` 1 a single
  kxk conv + norm + act.  Identity skip when the shape is kept.
- ``separable``: MobileNetV1's depthwise-separable conv: depthwise kxk + norm + act, 1x1 + norm + act; no skip.
- ``bottleneck``: ResNet v1.5 bottleneck: 1x1 reduce to ``out/expand_ratio``, kxk (carries the stride),
  1x1 expand to ``out``; projection shortcut when the shape changes; activation after the sum.
"""

SE_KINDS = ("mbconv", "fused_mbconv")
"""Block kinds that may carry squeeze-excitation (``se_ratio`` > 0)."""

ACTIVATIONS = ("silu", "relu", "relu6", "hardswish", "gelu", "identity")
PADDINGS = ("symmetric", "same")
"""``symmetric`` pads k//2 on every side (PyTorch); ``same`` reproduces TensorFlow's asymmetric SAME padding,
which weights trained in TensorFlow (the official EfficientNet checkpoints, Lite) need."""


class SpecError(EffnetError, ValueError):
    """A spec field holds a value the builder cannot use. The message names the field, value and what is allowed."""


def _fail(path: str, value: Any, allowed: str) -> None:
    raise SpecError(f"{path}: got {value!r}, expected {allowed}")


def _check_int(path: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(path, value, f"an integer >= {minimum}")


def _check_number(path: str, value: Any, low: float, high: float, *, low_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        _fail(path, value, f"a finite number in {bracket}{low}, {high}]")


def _check_kernel(path: str, value: Any) -> None:
    """Odd sizes only: "symmetric" and TF "same" padding agree on the output size only for odd kernels."""
    _check_int(path, value, 1)
    if value % 2 == 0:
        _fail(path, value, "an odd kernel size (1, 3, 5, 7, ...)")


def _check_choice(path: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        _fail(path, value, "one of " + ", ".join(repr(c) for c in choices))


@dataclass(frozen=True)
class StemSpec:
    """The first layer: a strided conv + norm + act, optionally followed by a 3x3/2 max-pool (ResNet)."""

    channels: int = 32
    kernel: int = 3
    stride: int = 2
    activation: str = "silu"
    max_pool: bool = False

    def validate(self, path: str = "stem") -> None:
        _check_int(f"{path}.channels", self.channels, 1)
        _check_kernel(f"{path}.kernel", self.kernel)
        _check_int(f"{path}.stride", self.stride, 1)
        _check_choice(f"{path}.activation", self.activation, ACTIVATIONS)
        if not isinstance(self.max_pool, bool):
            _fail(f"{path}.max_pool", self.max_pool, "true or false")


@dataclass(frozen=True)
class StageSpec:
    """`repeats` blocks of one kind; the first block carries the stride and changes the channel count."""

    kind: str
    repeats: int
    kernel: int
    stride: int
    out_channels: int
    expand_ratio: float = 1.0
    se_ratio: float = 0.0
    activation: str = "silu"

    def validate(self, path: str) -> None:
        _check_choice(f"{path}.kind", self.kind, BLOCK_KINDS)
        _check_int(f"{path}.repeats", self.repeats, 1)
        _check_kernel(f"{path}.kernel", self.kernel)
        _check_int(f"{path}.stride", self.stride, 1)
        if self.stride > 2:
            _fail(f"{path}.stride", self.stride, "1 or 2")
        _check_int(f"{path}.out_channels", self.out_channels, 1)
        _check_number(f"{path}.expand_ratio", self.expand_ratio, 0.0, 64.0, low_open=True)
        _check_number(f"{path}.se_ratio", self.se_ratio, 0.0, 1.0)
        _check_choice(f"{path}.activation", self.activation, ACTIVATIONS)
        if self.kind not in SE_KINDS and self.se_ratio:
            _fail(f"{path}.se_ratio", self.se_ratio,
                  f"0 for a {self.kind!r} stage (only {' and '.join(repr(k) for k in SE_KINDS)} blocks have SE)")


@dataclass(frozen=True)
class HeadSpec:
    """Optional 1x1 conv + norm + act before global pooling (``channels=0``: none, as in ResNet/MobileNetV1)."""

    channels: int = 1280
    activation: str = "silu"

    def validate(self, path: str = "head") -> None:
        _check_int(f"{path}.channels", self.channels, 0)
        _check_choice(f"{path}.activation", self.activation, ACTIVATIONS)


@dataclass(frozen=True)
class ScalingRules:
    """How a spec responds to `scaling.scale`: what stays fixed, the channel divisor and the rounding floor.

    EfficientNet-Lite keeps the stem (32) and head (1280) widths and the repeats of the first and last stage
    fixed when scaled (TF reference, ``efficientnet_lite_builder.py``); everything else scales.

    ``round_limit``: a rounded channel count never falls below this fraction of the scaled one (V1's reference
    ``round_filters`` adds a divisor below 0.9; V2's reference has no such floor: 0).
    """

    divisor: int = 8
    fix_stem: bool = False
    fix_head: bool = False
    fix_first_last_repeats: bool = False
    round_limit: float = 0.9

    def validate(self, path: str = "scaling") -> None:
        _check_int(f"{path}.divisor", self.divisor, 1)
        _check_number(f"{path}.round_limit", self.round_limit, 0.0, 1.0)
        for name in ("fix_stem", "fix_head", "fix_first_last_repeats"):
            if not isinstance(getattr(self, name), bool):
                _fail(f"{path}.{name}", getattr(self, name), "true or false")


@dataclass(frozen=True)
class NetSpec:
    """A whole ConvNet. Immutable: derive variants with `dataclasses.replace` or `scaling.scale`."""

    name: str
    stages: tuple[StageSpec, ...]
    stem: StemSpec = field(default_factory=StemSpec)
    head: HeadSpec = field(default_factory=HeadSpec)
    resolution: int = 224
    num_classes: int = 1000
    in_channels: int = 3
    dropout: float = 0.2
    drop_path_rate: float = 0.0
    bn_eps: float = 1e-5
    bn_momentum: float = 0.1
    padding: str = "symmetric"
    scaling: ScalingRules = field(default_factory=ScalingRules)

    def __post_init__(self) -> None:
        # Accept lists (from JSON or a user's code) and freeze them.
        if isinstance(self.stages, list):
            object.__setattr__(self, "stages", tuple(self.stages))
        self.validate()

    def validate(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            _fail("name", self.name, "a non-empty string")
        if not isinstance(self.stages, tuple) or not self.stages:
            _fail("stages", self.stages, "a non-empty list of stages")
        for part, kind in ((self.stem, StemSpec), (self.head, HeadSpec), (self.scaling, ScalingRules)):
            if not isinstance(part, kind):
                _fail(kind.__name__, part, f"a {kind.__name__}")
        self.stem.validate()
        for i, stage in enumerate(self.stages):
            if not isinstance(stage, StageSpec):
                _fail(f"stages[{i}]", stage, "a StageSpec")
            stage.validate(f"stages[{i}]")
        self.head.validate()
        self.scaling.validate()
        _check_int("resolution", self.resolution, 8)
        _check_int("num_classes", self.num_classes, 0)
        _check_int("in_channels", self.in_channels, 1)
        _check_number("dropout", self.dropout, 0.0, 1.0)
        if self.dropout == 1.0:
            _fail("dropout", self.dropout, "a probability below 1 (1 drops every feature)")
        _check_number("drop_path_rate", self.drop_path_rate, 0.0, 0.99)
        _check_number("bn_eps", self.bn_eps, 0.0, 1.0, low_open=True)
        _check_number("bn_momentum", self.bn_momentum, 0.0, 1.0)
        _check_choice("padding", self.padding, PADDINGS)

    # -- derived facts -------------------------------------------------------------------------------------

    @property
    def num_blocks(self) -> int:
        return sum(s.repeats for s in self.stages)

    @property
    def total_stride(self) -> int:
        stride = self.stem.stride * (2 if self.stem.max_pool else 1)
        for stage in self.stages:
            stride *= stage.stride
        return stride

    @property
    def num_features(self) -> int:
        """Channels entering the classifier."""
        return self.head.channels or self.stages[-1].out_channels

    # -- JSON round trip -----------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["stages"] = [asdict(s) for s in self.stages]
        # A field added after specs were first stored is written only when it differs from its default, so the JSON
        # of every earlier spec (and the run records keyed on it) stays as it was.
        if data["scaling"]["round_limit"] == ScalingRules.round_limit:
            del data["scaling"]["round_limit"]
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any) -> NetSpec:
        if not isinstance(data, dict):
            _fail("spec", type(data).__name__, "a JSON object")
        kwargs = _take_fields(cls, data, "spec")
        stages = kwargs.get("stages")
        if not isinstance(stages, list) or not stages:
            _fail("stages", stages, "a non-empty list of stage objects")
        kwargs["stages"] = tuple(
            StageSpec(**_take_fields(StageSpec, s, f"stages[{i}]")) for i, s in enumerate(stages)
        )
        for key, part in (("stem", StemSpec), ("head", HeadSpec), ("scaling", ScalingRules)):
            if key in kwargs:
                kwargs[key] = part(**_take_fields(part, kwargs[key], key))
        try:
            return cls(**kwargs)
        except TypeError as exc:  # a required field is missing
            raise SpecError(f"spec: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> NetSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"not valid JSON: {exc}") from None
        return cls.from_dict(data)


def _take_fields(cls: type, data: Any, path: str) -> dict[str, Any]:
    """The keys of `data` that are fields of `cls`; unknown keys and missing required ones are errors."""
    if not isinstance(data, dict):
        _fail(path, data, "a JSON object")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SpecError(f"{path}: unknown field(s) {unknown}; allowed: {sorted(known)}")
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    missing = sorted(required - set(data))
    if missing:
        raise SpecError(f"{path}: missing required field(s) {missing}")
    return dict(data)


def load_spec(path: str | Path) -> NetSpec:
    """Read a spec from a JSON file; errors name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"{path}: cannot read spec file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a JSON spec (the file is not UTF-8 text); pass a registered model name "
                        "(see `effnet models`) or a .json spec file") from None
    try:
        return NetSpec.from_json(text)
    except SpecError as exc:
        raise SpecError(f"{path}: {exc}") from None


def save_spec(spec: NetSpec, path: str | Path) -> None:
    Path(path).write_text(spec.to_json() + "\n")


def with_options(spec: NetSpec, **options: Any) -> NetSpec:
    """`spec` with the given top-level fields replaced; `None` values are ignored (keep the spec's own)."""
    changes = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(changes) - {f.name for f in fields(NetSpec)})
    if unknown:
        raise SpecError(f"unknown model option(s) {unknown}")
    return replace(spec, **changes) if changes else spec

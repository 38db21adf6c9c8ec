"""effnet: EfficientNet (Tan & Le, ICML 2019) and compound scaling for any ConvNet described as a spec.

    spec (data) ──► scale(spec, depth, width, resolution) ──► ConvNet(spec) ──► nn.Module
"""

from effnet._version import __version__ as __version__
from effnet.allocator import keep_freed_memory
from effnet.cam import cam
from effnet.errors import EffnetError
from effnet.network import ConvNet
from effnet.optimize import optimize_for_inference
from effnet.profile import count_macs, count_params, profile, profile_stages
from effnet.registry import ModelConfig, create_model, get_config, get_spec, list_models, register_model
from effnet.scaling import Multipliers, compound, round_filters, round_repeats, scale, scale_compound
from effnet.spec import HeadSpec, NetSpec, ScalingRules, SpecError, StageSpec, StemSpec, load_spec, save_spec

__all__ = [
    "ConvNet", "EffnetError", "HeadSpec", "ModelConfig", "Multipliers", "NetSpec", "ScalingRules", "SpecError",
    "StageSpec", "StemSpec", "cam", "compound", "count_macs", "count_params", "create_model", "get_config", "get_spec",
    "keep_freed_memory", "list_models", "load_spec", "optimize_for_inference", "profile", "profile_stages",
    "register_model", "round_filters", "round_repeats", "save_spec", "scale", "scale_compound",
]

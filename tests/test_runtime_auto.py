"""`engine="auto"` (effnet.runtime.auto): the fastest engine by an injected clock, the cache of choices, and the
chosen runtime against eager PyTorch.

Most tests use stand-in engines and a clock the test controls, so no real timing happens; the real-engine ones
prime the cache with a stand-in choice first, so only the chosen engine is built."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from PIL import Image

from effnet.network import ConvNet
from effnet.runtime import EngineChoice, Runtime, RuntimeUnavailable, auto, choose_engine, load_runtime
from tests.conftest import tiny_spec
from tests.test_optimize import _randomize_bn, _rel
from tests.test_runtime import FP32_RTOL, _ref

needs_ort = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="onnxruntime not installed")
needs_ov = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino not installed")


class _Stand(Runtime):
    """A stand-in engine: the right output shape, no work."""

    def __init__(self, backend: str, precision: str = "fp32") -> None:
        self.backend, self.precision = backend, precision

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.zeros((len(x), 10), np.float32)


class _Engines:
    """`build` and `measure` for `choose_engine`: the engines in `speeds` exist and take that many seconds per
    call; the others are not installed.  Counts the builds and the timings."""

    def __init__(self, speeds: dict[str, float]) -> None:
        self.speeds, self.built, self.timed, self.shapes = speeds, [], [], []

    def build(self, engine: str) -> Runtime:
        if engine not in self.speeds:
            raise RuntimeUnavailable(f"the {engine!r} package is not installed")
        self.built.append(engine)
        return _Stand(engine)

    def measure(self, runtime: Runtime, example: np.ndarray) -> float:
        self.timed.append(runtime.backend)
        self.shapes.append(example.shape)
        return self.speeds[runtime.backend]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test on its own, empty cache folder; the real one in the home folder is never touched."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "effnet" / auto.CACHE_FILE


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return _randomize_bn(ConvNet(tiny_spec()))


def _prime(model, engine: str, *, precision: str = "fp32", batch: int = 1) -> EngineChoice:
    """Cache `engine` as the fastest for `model` (stand-in engines, `engine` made fastest), as a real first call
    would; the next real `load_runtime(engine="auto")` with the same settings builds only `engine`."""
    engines = _Engines({e: (1.0 if e == engine else 2.0) for e in ("torch", "onnxruntime", "openvino")})
    return auto.fastest_runtime(model, precision, engines.build, batch=batch, measure=engines.measure).choice


def test_auto_picks_the_engine_the_clock_makes_fastest_and_the_other_when_flipped(tmp_path):
    example = np.zeros((2, 3, 32, 32), np.float32)
    fast_ov = _Engines({"torch": 3e-3, "onnxruntime": 2e-3, "openvino": 1e-3})
    choice, runtime = choose_engine(fast_ov.build, example, {"k": 1}, measure=fast_ov.measure,
                                    cache_file=tmp_path / "a.json")
    assert choice.engine == runtime.backend == "openvino" and not choice.cached
    assert choice.seconds == {"torch": 3e-3, "onnxruntime": 2e-3, "openvino": 1e-3} and choice.batch == 2
    fast_ort = _Engines({"torch": 3e-3, "onnxruntime": 1e-3, "openvino": 2e-3})
    choice, runtime = choose_engine(fast_ort.build, example, {"k": 1}, measure=fast_ort.measure,
                                    cache_file=tmp_path / "b.json")
    assert choice.engine == runtime.backend == "onnxruntime"
    assert "auto chose onnxruntime for fp32 at batch 2: onnxruntime 1 ms, openvino 2 ms, torch 3 ms" in \
        choice.describe()


def test_engines_not_installed_or_failing_are_skipped_with_the_reason(tmp_path):
    example = np.zeros((1, 3, 32, 32), np.float32)
    engines = _Engines({"torch": 2e-3, "openvino": 1e-3})

    def measure(runtime, x):
        if runtime.backend == "openvino":
            raise RuntimeError("cannot compile layer 7")
        return engines.measure(runtime, x)

    choice, _ = choose_engine(engines.build, example, None, measure=measure)
    assert choice.engine == "torch" and list(choice.seconds) == ["torch"]
    assert "not installed" in choice.skipped["onnxruntime"] and "cannot compile" in choice.skipped["openvino"]
    with pytest.raises(RuntimeUnavailable, match="auto found no engine for bf16"):
        choose_engine(_Engines({}).build, example, None, precision="bf16")


def test_second_call_reuses_the_cached_choice_and_batch_or_precision_is_a_new_entry(model, cache):
    engines = _Engines({"torch": 3e-3, "onnxruntime": 1e-3, "openvino": 2e-3})
    first = auto.fastest_runtime(model, "fp32", engines.build, batch=2, measure=engines.measure)
    assert first.choice.engine == "onnxruntime" and not first.choice.cached
    assert len(engines.timed) == 3 and engines.shapes[0] == (2, 3, 32, 32)  # the model's own resolution
    assert cache.is_file()
    engines.built.clear()
    again = auto.fastest_runtime(model, "fp32", engines.build, batch=2, measure=engines.measure)
    assert again.choice.cached and again.choice.engine == "onnxruntime" and again.backend == "onnxruntime"
    assert len(engines.timed) == 3 and engines.built == ["onnxruntime"]  # nothing timed, one engine built
    assert again.choice.seconds == first.choice.seconds  # the measurements travel with the cached choice
    auto.fastest_runtime(model, "fp32", engines.build, batch=4, measure=engines.measure)
    assert len(engines.timed) == 6
    auto.fastest_runtime(model, "bf16", engines.build, batch=2, measure=engines.measure)
    assert len(engines.timed) == 9
    assert len(json.loads(cache.read_text())["choices"]) == 3


def test_other_weights_or_threads_are_a_new_entry(model):
    engines = _Engines({"torch": 1e-3})
    auto.fastest_runtime(model, "fp32", engines.build, measure=engines.measure)
    other = ConvNet(tiny_spec())  # same architecture, other weights
    assert auto.model_identity(other) != auto.model_identity(model)
    twin = ConvNet(tiny_spec())
    twin.load_state_dict(model.state_dict())
    assert auto.model_identity(twin) == auto.model_identity(model)
    auto.fastest_runtime(other, "fp32", engines.build, measure=engines.measure)
    auto.fastest_runtime(model, "fp32", engines.build, threads=7, measure=engines.measure)
    assert len(engines.timed) == 3


def test_a_corrupt_cache_file_is_ignored_and_rewritten(model, cache):
    engines = _Engines({"torch": 2e-3, "openvino": 1e-3})
    junk_entry = {"engine": "torch", "seconds": [1, 2], "skipped": {}}
    for junk in ("{not json", "[]", '{"format": 1, "choices": {"x": 3}}', '{"format": 1, "choices": []}',
                 json.dumps({"format": 1, "choices": {"x": junk_entry}}), "\x00\xff"):
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(junk)
        runtime = auto.fastest_runtime(model, "fp32", engines.build, measure=engines.measure)
        assert runtime.choice.engine == "openvino" and not runtime.choice.cached
        assert [c["engine"] for c in json.loads(cache.read_text())["choices"].values()] == ["openvino"]
    assert not [p for p in cache.parent.iterdir() if p != cache]  # no temporary file left beside it


def test_a_cached_engine_that_is_gone_is_timed_again(model):
    _prime(model, "openvino")
    engines = _Engines({"torch": 1e-3, "onnxruntime": 2e-3})  # openvino uninstalled since
    runtime = auto.fastest_runtime(model, "fp32", engines.build, measure=engines.measure)
    assert runtime.choice.engine == "torch" and not runtime.choice.cached


def test_an_exported_file_is_timed_at_the_input_its_header_declares(tmp_path):
    xml = tmp_path / "m.xml"
    xml.write_text('<net><layers><layer id="0" type="Parameter"><data shape="?,1,48,48" element_type="f32"/>'
                   "</layer></layers></net>")
    engines = _Engines({"openvino": 1e-3})
    runtime = auto.fastest_runtime(xml, "fp32", engines.build, batch=3, measure=engines.measure)
    assert engines.shapes == [(3, 1, 48, 48)] and runtime.choice.engine == "openvino"
    assert auto.model_identity(xml)["files"][0][0] == str(xml.resolve())


def test_engine_and_backend_name_the_same_thing(model):
    assert load_runtime(model, "torch", engine="torch").backend == "torch"
    assert load_runtime(model, engine="torch").backend == "torch"
    with pytest.raises(RuntimeUnavailable, match="got engine='openvino' and backend='torch'; pass one of them"):
        load_runtime(model, "torch", engine="openvino")
    with pytest.raises(RuntimeUnavailable, match="got backend 'tensorrt', expected one of torch, onnxruntime, "
                                                 "openvino, auto"):
        load_runtime(model, engine="tensorrt")
    with pytest.raises(RuntimeUnavailable, match="batch got 0"):
        load_runtime(model, engine="auto", batch=0)


@pytest.mark.parametrize("engine", [
    "torch", pytest.param("openvino", marks=needs_ov),
    pytest.param("onnxruntime", marks=[needs_ort, pytest.mark.slow])])  # slow: the first ONNX export loads dynamo
def test_the_chosen_runtime_matches_eager(model, engine):
    _prime(model, engine, batch=3)
    runtime = load_runtime(model, engine="auto", batch=3)
    assert runtime.backend == engine and runtime.choice.cached and runtime.choice.engine == engine
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    assert _rel(runtime(x), _ref(model, x)) <= FP32_RTOL


@pytest.fixture
def tiny_files(tmp_path):
    """A tiny spec, its weights in effnet's layout, one image: what `effnet predict` reads."""
    from effnet.spec import save_spec
    from effnet.weights import save_file

    torch.manual_seed(0)
    net = ConvNet(tiny_spec())
    save_spec(net.spec, tmp_path / "tiny.json")
    save_file(net, tmp_path / "tiny.safetensors")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    return net, tmp_path


def _predict(files, *extra):
    from effnet.cli import main

    return main(["predict", str(files / "tiny.json"), "--weights", str(files / "tiny.safetensors"),
                 str(files / "a.png"), "--top", "1", "--batch-size", "2", *extra])


def test_predict_runtime_auto_says_what_it_chose(tiny_files, capsys):
    net, files = tiny_files
    _prime(net.eval(), "torch", batch=2)  # the model predict loads: same weights, so the same cache entry
    assert _predict(files, "--runtime", "auto") == 0
    out, err = capsys.readouterr()
    assert "a.png" in out and "class " in out
    assert "effnet predict: auto chose torch for fp32 at batch 2 (cached)" in err and err.count("\n") == 1


def test_predict_unknown_runtime_is_one_line_and_exit_2(tiny_files, capsys):
    with pytest.raises(SystemExit) as exc:
        _predict(tiny_files[1], "--runtime", "tensorrt")
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "'auto'" in err and "tensorrt" in err


@pytest.mark.slow
@needs_ort
@needs_ov
def test_predict_runtime_auto_times_the_engines_then_uses_the_cache(tiny_files, capsys, monkeypatch):
    """End to end with the real engines (a fixed clock, so the choice is known): timed once, cached after."""
    monkeypatch.setattr(auto, "measure_seconds", lambda rt, x: {"openvino": 1e-3}.get(rt.backend, 2e-3))
    files = tiny_files[1]
    assert _predict(files, "--runtime", "auto") == 0
    assert "auto chose openvino for fp32 at batch 2: openvino 1 ms" in capsys.readouterr().err
    assert _predict(files, "--runtime", "auto") == 0
    assert "auto chose openvino for fp32 at batch 2 (cached)" in capsys.readouterr().err


def test_eval_runtime_auto_says_what_it_chose(tmp_path, capsys):
    """`effnet eval --runtime auto` on a tiny run: both weights (raw, EMA) on the engine auto chose."""
    from effnet.cli import main
    from effnet.spec import NetSpec
    from effnet.train.checkpoint import load_checkpoint
    from tests import _train_util as U

    data = U.make_folder(tmp_path / "data", classes=3, per_class=4, val_per_class=2)
    spec = U.write_spec(tmp_path / "tiny.json", num_classes=3)
    out = tmp_path / "run"
    assert main(["train", str(data), "--model", spec, "--resolution", "32", "--batch-size", "4", "--epochs", "1",
                 "--workers", "0", "--threads", "1", "--no-progress", "--warmup-epochs", "0", "--out",
                 str(out)]) == 0
    state = load_checkpoint(sorted((out / "checkpoints").glob("step-*.pt"))[-1])
    for weights in (state["model"], state["ema"]["model"]):
        net = ConvNet(NetSpec.from_dict(state["spec"]))
        net.load_state_dict(weights)
        _prime(net, "torch", batch=4)  # auto times the engines at the eval batch
    capsys.readouterr()
    assert main(["eval", str(out), str(data), "--workers", "0", "--batch-size", "4", "--runtime", "auto"]) == 0
    out_text, err = capsys.readouterr()
    assert "\nraw " in out_text and "\nema " in out_text
    assert err.count("effnet eval: auto chose torch for fp32 at batch 4 (cached)") == 2

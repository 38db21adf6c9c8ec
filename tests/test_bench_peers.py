"""effnet bench's peers on other engines (`effnet.bench.peers`): each runs effnet's own model and agrees with eager
effnet (fp32 within 1e-4 relative at every batch shape, int8 within the bound of tests/test_runtime.py), a peer whose
packages are missing is skipped with a note saying what to install, and `--vs` names them all."""

import importlib.machinery
import importlib.util
import json

import pytest
import torch

from effnet.bench import DEFAULT_PEERS, LOSSY, PEERS, BenchError, infer_candidate
from effnet.bench import peers as engine_peers
from effnet.cli import main
from effnet.data.calibration import photo_batch
from effnet.network import ConvNet
from effnet.spec import save_spec
from tests.conftest import tiny_spec
from tests.test_optimize import _randomize_bn, _rel
from tests.test_runtime import FP32_RTOL, INT8_RTOL, _ref


def _needs(*modules: str):
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"{', '.join(missing)} not installed (effnet[peers])")


@pytest.fixture(scope="module")
def net():
    """The tiny net with non-trivial BN statistics, 3 images, and eager effnet's logits for them."""
    torch.manual_seed(0)
    model = _randomize_bn(ConvNet(tiny_spec()))
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    return model, images, _ref(model, images)


@pytest.fixture
def spec_path(tmp_path):
    path = tmp_path / "tiny.json"
    save_spec(tiny_spec(), path)
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("make", [
    pytest.param(engine_peers.executorch_step, marks=_needs("executorch"), id="executorch"),
    pytest.param(engine_peers.litert_step, marks=_needs("ai_edge_litert", "litert_torch"), id="litert"),
])
def test_fixed_shape_peer_matches_eager_at_each_batch_shape(net, make):
    model, x, ref = net
    step = make(model)
    for batch in (3, 1):  # one program per input shape: the second batch size builds its own
        out = step(x[:batch])
        assert out.shape == ref[:batch].shape
        assert _rel(out, ref[:batch]) <= FP32_RTOL


@pytest.mark.slow
@_needs("openvino")
def test_openvino_throughput_keeps_image_order_with_more_images_than_requests(net):
    model, x, ref = net
    step, requests = engine_peers.openvino_throughput_step(model)
    assert requests >= 1
    images = torch.cat([x, x.flip(0)])  # 6 images through the queue, finished in any order
    out = step(images)
    assert out.shape == (6, 10) and _rel(out, _ref(model, images)) <= FP32_RTOL
    assert _rel(step(x[:1]), ref[:1]) <= FP32_RTOL


@pytest.mark.slow
@_needs("onnxruntime", "onnxscript")
def test_ort_int8_peer_is_lossy_calibrated_on_photos_and_near_eager():
    spec = tiny_spec()
    torch.manual_seed(0)  # the same weights for both: each candidate builds its own model
    eager = infer_candidate(spec.name, "eager", spec=spec)
    torch.manual_seed(0)
    peer = infer_candidate(spec.name, "ort-int8", spec=spec)  # no calibration given: it takes real photos
    assert peer.peer and "ort-int8" in LOSSY and "U8S8" in peer.note
    images = photo_batch(spec, "evaluation", 2)
    assert _rel(peer.step(images), eager.step(images)) <= INT8_RTOL


@pytest.fixture
def without(monkeypatch):
    """Make the named modules look uninstalled to `importlib.util.find_spec`, and those in `present` installed."""
    find_spec = importlib.util.find_spec

    def lookup(name, *args, names, present):
        if name in names:
            return None
        return importlib.machinery.ModuleSpec(name, None) if name in present else find_spec(name, *args)

    def hide(*names: str, present: tuple[str, ...] = ()) -> None:
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *args: lookup(name, *args, names=names, present=present))

    return hide


def test_missing_peer_is_skipped_with_what_to_install(capsys, spec_path, without):
    without("executorch", "litert_torch", present=("ai_edge_litert",))  # the runtime here, its converter not
    code = main(["bench", spec_path, "--batch", "1", "--paths", "eager", "--vs", "executorch,litert", "--repeats",
                 "1", "--iters", "1", "--warmup", "0", "--quiet", "--no-auto"])
    out = capsys.readouterr().out
    assert code == 0
    assert "skipped executorch: executorch is not installed (pip install 'effnet[peers]')" in out
    assert "skipped litert: litert_torch is not installed (no PyTorch→TFLite converter here: pip install " \
           "litert-torch" in out
    assert " executorch " not in out.split("skipped")[0]  # no row, no ratio column


def test_unknown_peer_is_one_line_naming_every_peer(capsys, spec_path):
    code = main(["bench", spec_path, "--vs", "executorch,tensorrt", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--vs got tensorrt" in err and all(p in err for p in PEERS)
    with pytest.raises(BenchError, match="ort-int8"):
        infer_candidate("efficientnet_b0", "tensorrt")


def test_help_names_the_new_peers_and_the_unchanged_default(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "2000")  # one line per option, so names are not broken at hyphens
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = capsys.readouterr().out
    vs = next(line for line in out.splitlines() if line.strip().startswith("--vs"))
    assert all(p in vs for p in engine_peers.NEW_PEERS)
    assert f"(default {','.join(DEFAULT_PEERS)};" in vs
    assert out.rstrip().splitlines()[-3].strip() == "examples:"  # the examples still close the help


def test_default_peers_unchanged_and_int8_peer_gets_photo_calibration(capsys, spec_path, monkeypatch):
    import effnet.cli.bench as cli_bench

    calls = []

    def fake_run_bench(model, **kwargs):
        calls.append(kwargs)
        raise BenchError("bench: stopped by the test")

    monkeypatch.setattr(cli_bench, "run_bench", fake_run_bench)
    assert main(["bench", spec_path, "--paths", "eager", "--quiet", "--no-auto"]) == 2
    assert main(["bench", spec_path, "--paths", "eager", "--vs", "ort-int8", "--quiet", "--no-auto"]) == 2
    capsys.readouterr()
    assert calls[0]["peers"] == list(DEFAULT_PEERS) == ["timm", "torchvision", "onnxruntime", "openvino"]
    assert calls[0]["calibration"] is None
    assert calls[1]["peers"] == ["ort-int8"] and calls[1]["calibration"].shape == (64, 3, 32, 32)


@pytest.mark.slow
@_needs("openvino", "onnxruntime", "onnxscript")
def test_new_peers_get_rows_ratio_columns_and_the_lossy_mark(capsys, spec_path):
    args = ["bench", spec_path, "--batch", "2", "--paths", "eager", "--vs", "openvino-throughput,ort-int8",
            "--repeats", "2", "--iters", "1", "--warmup", "1", "--quiet", "--no-auto"]
    assert main([*args, "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in report["results"]}
    assert set(rows) == {"eager", "openvino-throughput", "ort-int8"}
    assert rows["openvino-throughput"]["peer"] and rows["ort-int8"]["peer"]
    assert set(rows["eager"]["ratios"]) == {"openvino-throughput", "ort-int8"}
    assert "THROUGHPUT hint" in rows["openvino-throughput"]["note"]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "x openvino-throughput" in table and "x ort-int8" in table
    assert "ort-int8 *" in table and "openvino-throughput *" not in table  # the lossy mark, on the lossy peer only

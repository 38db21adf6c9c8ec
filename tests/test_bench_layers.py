"""effnet bench --layers and the measured ceiling: per-layer MACs add up to the model's, the roofline formula, the
ceiling cached per machine (a corrupt cache tolerated), AMX told apart from AVX512-BF16, and the CLI."""

import importlib
import json

import pytest
import torch

import effnet.bench.ceiling as ceiling_module
import effnet.cpu as cpu_module
from effnet.bench import Ceiling, layer_report, machine, machine_ceiling, measure_ceiling, roofline
from effnet.bench.machine import isa_name
from effnet.cli import main
from effnet.cpu import amx_available, bf16_unit, int8_unit
from effnet.profile import count_macs
from effnet.registry import get_spec
from effnet.spec import save_spec
from tests.conftest import tiny_spec

machine_module = importlib.import_module("effnet.bench.machine")  # `effnet.bench.machine` is also the function

FAKE = Ceiling(fp32_gmacs=100.0, bf16_gmacs=400.0, int8_gmacs=None, bandwidth_gbs=20.0, threads=2, gemm_size=64,
               copy_mb=1, repeats=1, measured_at="2000-01-01T00:00:00+00:00")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Every test here caches under tmp_path, never in the real home."""
    monkeypatch.setenv(ceiling_module.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "effnet"


@pytest.fixture
def measured(monkeypatch):
    """measure_ceiling, tiny whatever size is asked, counting its calls."""
    calls = []
    real = ceiling_module.measure_ceiling

    def tiny(size=2048, repeats=3, copy_mb=256):
        calls.append(size)
        return real(64, 1, 1)

    monkeypatch.setattr(ceiling_module, "measure_ceiling", tiny)
    return calls


@pytest.fixture
def spec_path(tmp_path):
    path = tmp_path / "tiny.json"
    save_spec(tiny_spec(), path)
    return str(path)


def _check_macs(report):
    assert abs(report.macs - report.model_macs) <= 0.01 * report.model_macs
    assert report.model_macs == count_macs(tiny_spec() if report.model == "tiny" else get_spec(report.model),
                                           report.resolution) * report.batch


def test_tiny_spec_layers_add_up_to_count_macs_and_are_named_by_their_parameters():
    report = layer_report(tiny_spec(), batch=2, resolution=32, ceiling=FAKE, repeats=1, warmup=0)
    _check_macs(report)
    kinds = {r.name: r.kind for r in report.rows}
    assert kinds["stem.conv"] == "conv 3x3"
    assert kinds["stages.0.0.depthwise.conv"] == "depthwise 3x3"
    assert kinds["stages.2.0.depthwise.conv"] == "depthwise 5x5"
    assert kinds["stages.1.0.expand.conv"] == "conv1x1" and kinds["head.conv"] == "conv1x1"
    assert kinds["stages.0.0.se.reduce"] == "linear" and kinds["classifier"] == "linear"  # SE runs as matmuls
    assert all(r.kind == "other" and r.macs == 0 for r in report.rows if r.name.startswith("other: "))
    stem = next(r for r in report.rows if r.name == "stem.conv")
    assert stem.output_shape == (2, 8, 16, 16)
    # weights 8·3·3·3 + input 2·3·32·32 + output 2·8·16·16 floats (no bias)
    assert stem.bytes == 4 * (8 * 3 * 3 * 3 + 2 * 3 * 32 * 32 + 2 * 8 * 16 * 16)
    assert all(r.time_ms > 0 for r in report.rows) and report.ops_ms > 0 and report.forward_ms > 0


def test_a_one_channel_stem_is_a_conv_not_a_depthwise_conv():
    report = layer_report(tiny_spec(in_channels=1), resolution=32, ceiling=FAKE, repeats=1, warmup=0)
    assert next(r for r in report.rows if r.name == "stem.conv").kind == "conv 3x3"


def test_efficientnet_b0_layers_add_up_to_count_macs():
    report = layer_report(get_spec("efficientnet_b0"), batch=1, resolution=64, ceiling=FAKE, repeats=1, warmup=0)
    _check_macs(report)
    assert sum(r.kind == "linear" for r in report.rows) == 2 * 16 + 1  # two per SE, the classifier


def test_bf16_layers_use_the_bf16_ceiling_and_half_the_bytes():
    fp32 = layer_report(tiny_spec(), resolution=32, path="folded", ceiling=FAKE, repeats=1, warmup=0)
    bf16 = layer_report(tiny_spec(), resolution=32, path="bf16", ceiling=FAKE, repeats=1, warmup=0)
    _check_macs(bf16)
    a, b = (next(r for r in rep.rows if r.name == "head.conv") for rep in (fp32, bf16))
    assert (a.dtype, b.dtype) == ("fp32", "bf16") and b.bytes * 2 == a.bytes
    assert b.limit_gmacs == roofline(b.intensity, 400.0, 20.0)[0]


def test_roofline_is_the_lesser_of_compute_and_intensity_times_bandwidth():
    assert roofline(2.0, 100.0, 20.0) == (40.0, "memory")
    assert roofline(10.0, 100.0, 20.0) == (100.0, "compute")
    assert roofline(5.0, 100.0, 20.0) == (100.0, "compute")  # the ridge point C/B is compute bound
    report = layer_report(tiny_spec(), resolution=32, ceiling=FAKE, repeats=1, warmup=0)
    for r in report.rows:
        if r.macs:
            assert r.limit_gmacs == pytest.approx(min(100.0, r.intensity * 20.0))
            assert r.bound == ("compute" if r.intensity >= 5.0 else "memory")
            assert r.fraction == pytest.approx(r.gmacs_per_s / r.limit_gmacs)
        else:
            assert r.limit_gmacs is None and r.bound == "memory"


def test_ceiling_measures_at_a_tiny_size():
    c = measure_ceiling(size=64, repeats=1, copy_mb=1)
    assert c.fp32_gmacs > 0 and c.bandwidth_gbs > 0 and c.gemm_size == 64 and c.threads == torch.get_num_threads()
    assert c.gmacs(torch.float32) == c.fp32_gmacs and c.gmacs(torch.float16) is None
    assert "GMAC/s" in c.describe()


def test_int8_ceiling_is_none_with_a_note_without_int_mm(monkeypatch):
    monkeypatch.delattr(torch, "_int_mm", raising=False)
    c = measure_ceiling(size=64, repeats=1, copy_mb=1)
    assert c.int8_gmacs is None and any("int8" in n and "unavailable" in n for n in c.notes)


def test_ceiling_is_cached_and_not_measured_again(measured, _cache):
    heard: list[str] = []
    first = machine_ceiling(log=heard.append)
    assert measured == [2048]
    assert len(heard) == 1 and heard[0].startswith("measuring this machine's GEMM and copy ceilings")  # minutes, maybe
    assert machine_ceiling(log=heard.append) == first and measured == [2048] and len(heard) == 1  # cached: silent
    files = list(_cache.glob("ceiling-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["key"]["threads"] == torch.get_num_threads()
    machine_ceiling(refresh=True)
    assert len(measured) == 2


def test_a_corrupt_or_foreign_cache_is_measured_again_and_replaced(measured, _cache):
    machine_ceiling()
    (path,) = _cache.glob("ceiling-*.json")
    for bad in ("{not json", "[]", json.dumps({"key": {"cpu": "other"}, "ceiling": {}}),
                json.dumps({"key": json.loads(path.read_text())["key"], "ceiling": {"fp32_gmacs": 1}})):
        path.write_text(bad)
        calls = len(measured)
        assert machine_ceiling().fp32_gmacs > 0 and len(measured) == calls + 1
        assert json.loads(path.read_text())["ceiling"]["fp32_gmacs"] > 0


def test_the_fp32_ceiling_is_the_best_library_and_names_it(monkeypatch):
    """torch, NumPy's BLAS and ONNX Runtime each time the same product; the fastest one is the fp32 ceiling."""
    numpy_gemm, ort_gemm = (lambda: None), (lambda: None)
    seconds = {numpy_gemm: 0.001, ort_gemm: 0.002}
    monkeypatch.setattr(ceiling_module, "_numpy_fp32", lambda size: numpy_gemm)
    monkeypatch.setattr(ceiling_module, "_onnxruntime_fp32", lambda size: ort_gemm)
    monkeypatch.setattr(ceiling_module, "_best_seconds", lambda fn, repeats: seconds.get(fn, 0.004))
    c = measure_ceiling(size=100, repeats=1, copy_mb=1)
    assert c.fp32_library == "numpy" and c.fp32_gmacs == pytest.approx(100**3 / 0.001 / 1e9)
    assert "fp32 torch 0, numpy 1, onnxruntime 0" in c.notes and "(numpy)" in c.describe()
    seconds[ort_gemm] = 0.0005
    assert measure_ceiling(size=100, repeats=1, copy_mb=1).fp32_library == "onnxruntime"


def test_a_ceiling_measured_under_load_is_measured_again_when_quieter(measured, _cache, monkeypatch):
    import dataclasses

    monkeypatch.setattr(ceiling_module.os, "getloadavg", lambda: (1.9, 1.9, 1.9))
    first = machine_ceiling()
    assert len(measured) == 1 and first.load_average == 1.9
    assert machine_ceiling() == first and len(measured) == 1  # still loaded: the cached one is used
    (path,) = _cache.glob("ceiling-*.json")
    record = json.loads(path.read_text())
    record["ceiling"]["fp32_gmacs"] = 1e-9  # what a badly loaded machine measures
    path.write_text(json.dumps(record))
    monkeypatch.setattr(ceiling_module.os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    quiet = machine_ceiling()
    assert len(measured) == 2 and quiet.load_average == 0.1 and quiet.fp32_gmacs > 1e-9
    assert machine_ceiling() == quiet and len(measured) == 2  # measured quiet: cached for good
    high = dataclasses.replace(quiet, fp32_gmacs=1e12, load_average=1.9)  # loaded, yet higher: it stands
    path.write_text(json.dumps({"key": record["key"], "ceiling": high.to_dict()}))
    assert machine_ceiling() == high and len(measured) == 3


def test_the_cache_key_follows_threads(measured):
    threads = torch.get_num_threads()
    machine_ceiling()
    try:
        torch.set_num_threads(1 if threads > 1 else 2)
        machine_ceiling()
    finally:
        torch.set_num_threads(threads)
    assert len(measured) == 2


def test_cache_dir_follows_xdg_and_ignores_a_relative_one(monkeypatch, tmp_path):
    assert ceiling_module.cache_dir() == tmp_path / "cache" / "effnet"
    monkeypatch.setenv(ceiling_module.CACHE_ENV, "relative/dir")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert ceiling_module.cache_dir() == tmp_path / "home" / ".cache" / "effnet"


ZEN4 = {"avx2", "avx512f", "avx512bw", "avx512_bf16", "avx512_vnni", "avx_vnni"}
SAPPHIRE_RAPIDS = ZEN4 | {"amx_tile", "amx_bf16", "amx_int8"}


@pytest.mark.parametrize("flags,isa,bf16,int8,amx", [
    (ZEN4, "avx512+avx512_bf16+avx512_vnni+avx_vnni", "avx512_bf16", "avx512_vnni", False),
    (SAPPHIRE_RAPIDS, "avx512+avx512_bf16+avx512_vnni+avx_vnni+amx_bf16+amx_int8", "amx_bf16", "amx_int8", True),
    ({"avx2", "avx512f", "amx_bf16"}, "avx512", "none", "none", False),  # AMX flags without tiles are not AMX
    ({"avx2", "avx_vnni"}, "avx2+avx_vnni", "none", "avx_vnni", False),
])
def test_amx_is_told_apart_from_avx512_bf16(monkeypatch, flags, isa, bf16, int8, amx):
    assert (isa_name(flags), bf16_unit(flags), int8_unit(flags)) == (isa, bf16, int8)
    monkeypatch.setattr(machine_module, "cpu_flags", lambda: set(flags))
    m = machine(threads=2)
    assert (m.isa, m.bf16, m.int8, m.amx) == (isa, bf16, int8, amx)
    monkeypatch.setattr(cpu_module, "cpu_flags", lambda: set(flags))
    assert amx_available() == (bf16 == "amx_bf16")


def test_machine_takes_the_measured_ceiling():
    m = machine(threads=2, ceiling=FAKE)
    assert m.fp32_gmacs_ceiling == 100.0 and m.ceiling is FAKE and m.note.startswith("measured")
    assert machine(threads=2).note.startswith("estimate")


def _bench(capsys, *args):
    code = main(["bench", *args, "--repeats", "1", "--warmup", "0", "--quiet"])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_layers_json(capsys, measured, spec_path):
    code, out, _ = _bench(capsys, spec_path, "--layers", "--resolution", "32", "--batch-size", "1", "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["batch"] == 1 and data["resolution"] == 32 and data["path"] == "eager"
    assert abs(sum(r["macs"] for r in data["rows"]) - data["model_macs"]) <= 0.01 * data["model_macs"]
    assert data["macs"] == sum(r["macs"] for r in data["rows"]) and "conv1x1" in data["shares"]
    assert data["ceiling"]["gemm_size"] == 64 and data["machine"]["fp32_gmacs_ceiling"] == data["ceiling"]["fp32_gmacs"]
    assert {"name", "kind", "output_shape", "macs", "bytes", "intensity", "time_ms", "gmacs_per_s", "limit_gmacs",
            "fraction", "bound"} <= set(data["rows"][0])
    assert measured == [2048]


def test_cli_layers_table(capsys, measured, spec_path):
    code, out, _ = _bench(capsys, spec_path, "--layers", "--batch-size", "2", "--paths", "folded")
    assert code == 0
    assert "tiny folded forward at 32px, batch 2" in out and "stages.0.0.se.reduce" in out
    assert "time by kind of layer" in out and "(+0.00%)" in out and "ceiling: measured" in out


@pytest.mark.parametrize("args,match", [
    (["no_such_model", "--layers"], "unknown model"),
    (["SPEC", "--layers", "--batch-size", "0"], "--batch"),
    (["SPEC", "--layers", "--batch-size", "x"], "--batch"),
    (["SPEC", "--layers", "--mode", "train"], "--layers"),
    (["SPEC", "--layers", "--paths", "eager,folded"], "one path"),
    (["SPEC", "--layers", "--paths", "compile"], "--paths"),
    (["SPEC", "--layers", "--batch-size", "2,4"], "--layers times one batch size, got --batch-size 2,4"),
    (["SPEC", "--layers", "--iters", "3", "--no-auto"], "drop --iters and --no-auto"),
])
def test_cli_layers_bad_input_is_one_line_and_exit_2(capsys, measured, spec_path, args, match):
    code, out, err = _bench(capsys, *[spec_path if a == "SPEC" else a for a in args])
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1 and not out
    assert measured == []  # refused before measuring anything

"""effnet bench: smoke tests at tiny size, paired ratios, missing peers skipped with a note, bad input."""

import json
import re

import pytest
import torch

from effnet.bench import Result, machine, peak_memory_mb
from effnet.bench.timing import _add_ratios
from effnet.cli import main
from effnet.runtime import BACKENDS
from effnet.spec import save_spec
from tests.conftest import tiny_spec


@pytest.fixture
def spec_path(tmp_path):
    path = tmp_path / "tiny.json"
    save_spec(tiny_spec(), path)
    return str(path)


def _bench(capsys, *args, auto=False):
    """`effnet bench` quickly; infer mode skips the engine=auto lines unless `auto` (train mode has none)."""
    extra = [] if auto or "train" in args else ["--no-auto"]
    code = main(["bench", *args, "--repeats", "2", "--iters", "1", "--warmup", "1", "--quiet", *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_infer_json_has_every_path_and_a_ratio_per_peer(capsys, spec_path):
    code, out, _ = _bench(capsys, spec_path, "--batch", "1,2", "--paths", "eager,channels_last,folded",
                          "--vs", "onnxruntime", "--format", "json")
    assert code == 0
    report = json.loads(out)
    rows = {(r["name"], r["batch"]): r for r in report["results"]}
    assert set(rows) == {(p, b) for p in ("eager", "channels_last", "folded", "onnxruntime") for b in (1, 2)}
    for (name, _), r in rows.items():
        assert r["images_per_s"] > 0 and r["images_per_s_min"] <= r["images_per_s"] <= r["images_per_s_max"]
        assert r["gmacs_per_s"] > 0 and 0 < r["ceiling_fraction"]
        assert ("onnxruntime" in r["ratios"]) == (name != "onnxruntime")
        assert len(r["rounds"]) == 2


def test_infer_ends_with_the_engine_auto_picks_at_each_batch(capsys, spec_path):
    code, out, _ = _bench(capsys, spec_path, "--batch", "1", "--paths", "eager", "--vs", "none", auto=True)
    assert code == 0
    picks = re.findall(r"^engine=auto: auto chose (\w+) for fp32 at batch (\d+)", out, re.M)
    assert [b for _, b in picks] == ["1"] and all(e in BACKENDS for e, _ in picks), out
    code, out, _ = _bench(capsys, spec_path, "--batch", "1,2", "--paths", "eager", "--vs", "none", "--format", "json",
                          auto=True)
    choices = json.loads(out)["auto"]
    assert [c["batch"] for c in choices] == [1, 2]
    assert all(c["engine"] in BACKENDS and c["engine"] in c["seconds"] for c in choices)


def test_missing_peer_is_skipped_with_a_note(capsys, spec_path):
    code, out, _ = _bench(capsys, spec_path, "--batch", "1", "--paths", "eager", "--vs", "timm,torchvision")
    assert code == 0
    assert "skipped timm: timm has no tiny" in out and "skipped torchvision" in out


@pytest.mark.slow
def test_train_mode_table(capsys, spec_path):
    code, out, _ = _bench(capsys, spec_path, "--mode", "train", "--batch", "4", "--paths", "eager,checkpoint,bf16",
                          "--vs", "none")
    assert code == 0
    assert "train at 32px" in out and "checkpoint" in out and "act MB" in out


@pytest.mark.slow
def test_train_memory_in_own_process_via_json(capsys, spec_path):
    code, out, _ = _bench(capsys, spec_path, "--mode", "train", "--batch", "4", "--paths", "eager,checkpoint",
                          "--vs", "none", "--isolate-memory", "--format", "json", "--repeats", "1")
    assert code == 0
    report = json.loads(out)
    assert report["memory_isolated"] is True
    rows = {r["name"]: r for r in report["results"]}
    assert all(r["peak_tensor_mb"] > 0 for r in rows.values())
    assert rows["checkpoint"]["peak_tensor_mb"] < rows["eager"]["peak_tensor_mb"]
    code, _, err = _bench(capsys, spec_path, "--isolate-memory")
    assert code == 2 and "--mode train" in err


@pytest.mark.parametrize("args,match", [
    (["--batch", "0"], "--batch"), (["--paths", "warp"], "--paths"), (["--vs", "tensorrt"], "--vs")])
def test_bad_arguments_exit_2_with_one_line(capsys, spec_path, args, match):
    code, _, err = _bench(capsys, spec_path, *args)
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1


def test_paired_ratio_is_the_median_of_per_round_ratios():
    def r(name, peer, rounds):
        return Result(name, peer, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, rounds=rounds)

    path, peer = r("eager", False, [10.0, 20.0, 30.0]), r("timm", True, [5.0, 40.0, 10.0])
    _add_ratios([path, peer])
    assert path.ratios == {"timm": 2.0} and path.ratio_ranges["timm"] == (0.5, 3.0)
    assert peer.ratios == {}


def test_machine_ceiling():
    m = machine(threads=2)
    assert m.threads == 2 and m.fp32_gmacs_ceiling > 0 and m.isa


def test_numpys_gemm_in_the_ceiling_runs_on_torchs_thread_count(monkeypatch):
    """NumPy's BLAS would use every core; a one-thread ceiling must not carry a many-thread rate."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from effnet.bench import ceiling

    seen = []

    def gemm(size):
        return lambda: seen.append({p["num_threads"] for p in threadpoolctl.threadpool_info()
                                    if p["user_api"] == "blas"})

    monkeypatch.setattr(ceiling, "_numpy_fp32", gemm)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert ceiling._numpy_gmacs(8, 1) > 0
    finally:
        torch.set_num_threads(before)
    assert seen and all(threads == {1} for threads in seen)


def test_peak_memory_mb_sees_a_large_allocation():
    """A call that writes 64 MiB raises the resident peak by at least that much; one that allocates nothing, by far
    less."""
    try:
        open("/proc/self/clear_refs", "w").close()
    except OSError:
        pytest.skip("the resident high-water mark cannot be reset here (Linux /proc/self/clear_refs)")
    size_mb = 64
    assert peak_memory_mb(lambda: torch.ones(size_mb * 2**20 // 4).sum()) >= 0.95 * size_mb
    assert peak_memory_mb(lambda: None) < size_mb / 4


def test_peak_tensor_mb_counts_live_tensors_not_allocator_memory():
    from effnet.bench import peak_tensor_mb

    keep = torch.ones(2**20)  # 4 MiB live before: not counted

    def step():
        a = torch.ones(2 * 2**20)  # 8 MiB
        b = torch.ones(2**20)  # 4 MiB while a is live: peak 12 MiB
        del a, b
        return torch.ones(2**19)  # 2 MiB after the peak

    peak = peak_tensor_mb(step)
    assert peak is not None and 11.9 < peak < 12.5
    assert keep.numel() == 2**20


def test_a_failing_candidate_gets_its_row_and_the_others_are_measured(capsys, spec_path, monkeypatch):
    import effnet.bench.candidates as candidates

    def broken_compile(model, dtype=None):
        def run(x):  # compiles at the first call, as torch.compile does: fails there
            raise RuntimeError("InductorError: OSError: /tmp/torchinductor/ab/cd.so: file too short\n  (traceback)")
        return run

    def broken_fold(model, fold_bn=True):
        raise RuntimeError("cannot fold this model")

    monkeypatch.setattr(candidates, "compile_for_inference", broken_compile)
    monkeypatch.setattr(candidates, "optimize_for_inference", broken_fold)
    code, out, _ = _bench(capsys, spec_path, "--batch", "1,2", "--paths", "eager,folded,compile", "--vs", "none",
                          "--format", "json")
    assert code == 1  # something failed; bad input stays 2
    report = json.loads(out)
    assert {(r["name"], r["batch"], r["status"]) for r in report["results"]} == {("eager", 1, "measured"),
                                                                                 ("eager", 2, "measured")}
    failed = {f["name"]: f for f in report["failed"]}
    assert failed["folded"] == {"name": "folded", "peer": False, "stage": "build", "batch": None,
                                "reason": "RuntimeError: cannot fold this model", "status": "failed"}
    assert failed["compile"]["stage"] == "warm-up" and failed["compile"]["batch"] == 1
    assert failed["compile"]["reason"] == ("RuntimeError: InductorError: OSError: /tmp/torchinductor/ab/cd.so: file "
                                           "too short")

    code, out, _ = _bench(capsys, spec_path, "--batch", "1", "--paths", "eager,compile", "--vs", "none")
    assert code == 1
    row = next(line for line in out.splitlines() if " compile " in f" {line} ")
    assert "failed at warm-up, batch 1: RuntimeError: InductorError: OSError" in row


def test_train_default_path_is_measured_against_effnet_with_aten_convolutions(capsys, spec_path):
    code, out, _ = _bench(capsys, spec_path, "--mode", "train", "--batch", "4", "--paths", "default",
                          "--vs", "effnet-aten", "--format", "json", "--repeats", "1", auto=True)
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)["results"]}
    assert set(rows) == {"default", "effnet-aten"}
    assert rows["effnet-aten"]["peer"] and "effnet-aten" in rows["default"]["ratios"]
    assert "ATen convolutions" in rows["effnet-aten"]["note"] and "effnet's depthwise" in rows["default"]["note"]

"""`effnet train --recipe`, `effnet train`, `effnet eval`, `effnet plot` end to end on a tiny model."""

import pytest

from effnet.cli import main
from tests import _train_util as U


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = U.make_folder(root / "data", classes=3, per_class=8, val_per_class=3)
    spec = U.write_spec(root / "tiny.json", num_classes=3)
    return root, data, spec


def _train_args(data, spec, out):
    return ["train", str(data), "--model", spec, "--resolution", "32", "--batch-size", "8", "--epochs", "2",
            "--workers", "0", "--threads", "1", "--no-progress", "--warmup-epochs", "1", "--out", str(out)]


def test_recipe_prints_the_effective_paper_settings(setup, capsys):
    root, data, spec = setup
    assert main(_train_args(data, spec, root / "r") + ["--recipe", "--batch-size", "512"]) == 2  # too few images
    assert "--batch-size: got 512" in capsys.readouterr().err
    assert main(_train_args(data, spec, root / "r") + ["--recipe"]) == 0
    out = capsys.readouterr().out
    assert "0.0005 (0.016 x 8/256)" in out
    assert "decay 0.9, momentum 0.9, eps 0.001 inside the sqrt" in out
    assert "x0.97 every 2.4 epochs" in out and "none on norm and bias" in out
    assert "decay 0.9999" in out and "AutoAugment" in out and "label smoothing      0.1" in out
    assert not (root / "r").exists()  # --recipe does no work


def test_resume_into_a_folder_without_a_run_warns_and_starts_one(setup, capsys):
    root, data, spec = setup
    assert main(_train_args(data, spec, root / "typo") + ["--resume", "--recipe"]) == 0
    assert f"effnet train: warning: --resume: {root / 'typo'} does not exist yet; starting a new run there" in \
        capsys.readouterr().err


def test_train_eval_plot(setup, capsys):
    root, data, spec = setup
    out = root / "run"
    assert main(_train_args(data, spec, out)) == 0
    assert "done: 6 steps (2.00 epochs)" in capsys.readouterr().out
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert main(["eval", str(out), str(data), "--workers", "0"]) == 0
    text = capsys.readouterr().out
    assert "step 6" in text and "\nraw " in text and "\nema " in text
    assert main(["eval", str(out), str(data), "--workers", "0", "--subset", "1000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "subset: got 1000, expected at most the" in err
    assert main(["plot", str(out)]) == 0
    png = out / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (out / "steps.jsonl").unlink(missing_ok=True)  # no step log: the epochs' training loss is drawn instead
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 3, "step": 9, "epo')  # killed while writing a line
    assert main(["plot", str(out), "-o", str(root / "again.png")]) == 0
    assert "metrics.jsonl:3: an unfinished last line" in capsys.readouterr().err
    from effnet.train.plot import read_jsonl

    with pytest.warns(UserWarning):
        assert len(read_jsonl(out / "metrics.jsonl")) == 2


def test_eval_reports_images_read_for_each_weights(setup, capsys, monkeypatch):
    """A long evaluation says how far it is: a line per weights, at the end at least, with the images read."""
    import effnet.cli._args as args_module

    root, data, spec = setup
    out = root / "run-progress"
    assert main(_train_args(data, spec, out)) == 0
    capsys.readouterr()
    clock = iter(range(0, 10_000, 5))  # every call 5 s later: every batch gets its line
    monkeypatch.setattr(args_module, "_now", lambda: next(clock))
    assert main(["eval", str(out), str(data), "--workers", "0", "--batch-size", "4"]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    for kind in ("raw", "ema"):
        ours = [line for line in lines if line.startswith(f"effnet eval: {kind} weights: ")]
        assert ours and ours[-1].startswith(f"effnet eval: {kind} weights: 9 of 9 images, ")  # 9 val images
        assert "(0s left)" in ours[-1]


def test_a_progress_line_is_printed_at_most_every_few_seconds_and_at_the_end(capsys, monkeypatch):
    import effnet.cli._args as args_module

    clock = iter([0, 1, 2, 3, 4, 5, 6])  # created at 0, then one call a second
    monkeypatch.setattr(args_module, "_now", lambda: next(clock))
    show = args_module.progress_line("work", "items", every_s=2)
    for done in range(0, 6):  # 0 (starting) is never printed
        show(done, 5)
    assert capsys.readouterr().err.splitlines() == ["work: 1 of 5 items, 2s (8s left)",
                                                    "work: 3 of 5 items, 4s (3s left)",
                                                    "work: 5 of 5 items, 6s (0s left)"]
    quick = iter([0.0, 0.1, 0.2, 0.3])
    monkeypatch.setattr(args_module, "_now", lambda: next(quick))
    show = args_module.progress_line("work", "items", every_s=2)
    for done in (0, 1, 2):
        show(done, 2)
    assert capsys.readouterr().err == ""  # done before a line was due: nothing to say, not even the end


def test_bad_input_is_one_line_and_exit_2(setup, capsys):
    root, data, spec = setup
    assert main(_train_args(root / "nowhere", spec, root / "x")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data folder not found" in err
    assert main(["eval", str(root / "nothing.pt"), str(data)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_fashion_mnist_has_no_other_split():
    from effnet.data import DataError
    from effnet.data.sources import open_source

    with pytest.raises(DataError, match="fashion-mnist: split 'bogus'; expected train, val or test"):
        open_source("fashion-mnist", "bogus")


@pytest.mark.slow
def test_eval_on_other_runtimes(setup, capsys):
    """fp32 engines reproduce eager's accuracy; int8 calibrates on the train split (24 images here, fewer than the
    64 asked for) and reports it."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    from effnet.train import evaluate_checkpoint

    root, data, spec = setup
    out = root / "run_rt"
    assert main(_train_args(data, spec, out)) == 0
    capsys.readouterr()
    eager = evaluate_checkpoint(str(out), str(data), workers=0)
    onnx = evaluate_checkpoint(str(out), str(data), workers=0, runtime="onnxruntime")
    for kind in ("raw", "ema"):
        assert onnx[kind].top1 == eager[kind].top1
        assert onnx[kind].loss == pytest.approx(eager[kind].loss, rel=1e-4, abs=1e-5)
    assert main(["eval", str(out), str(data), "--workers", "0", "--runtime", "openvino", "--precision", "int8"]) == 0
    text = capsys.readouterr().out
    assert "runtime: openvino int8, calibrated on 24 train-split images" in text and "\nema " in text
    assert main(["eval", str(out), str(data), "--runtime", "torch", "--precision", "int8"]) == 2
    assert "int8 runs on onnxruntime or openvino" in capsys.readouterr().err
    assert main(["eval", str(out), str(data), "--runtime", "onnxruntime", "--precision", "int8", "--split",
                 "train"]) == 2
    assert "int8 calibrates on the train split" in capsys.readouterr().err

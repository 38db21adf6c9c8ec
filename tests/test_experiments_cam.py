"""`effnet experiments cam`: reads the compound-vs-single results and checkpoints (a clear error when they are
missing), compares the models of one budget on the same Fashion-MNIST test images, and reports the maps' mass on
the object per method over seeds."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("torchcam")

from effnet.experiments.cam import Options, chosen_runs, object_masks  # noqa: E402
from effnet.network import ConvNet  # noqa: E402
from effnet.registry import ModelConfig  # noqa: E402
from tests._cam_util import one_thread, run_cli  # noqa: E402, F401
from tests.conftest import tiny_spec  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


METHODS = {"baseline": 16, "depth": 16, "width": 16, "resolution": 24, "compound (paper)": 20}


def _fake_experiment(root, budgets=(2.0, 3.0, 8.0), seeds=2, checkpoints=True):
    """results.json of a compound-vs-single run and, for every run, a training checkpoint of a tiny model."""
    source, runs_dir = root / "cvs", root / "runs"
    source.mkdir(parents=True)
    rows = []
    for seed in range(seeds):
        for method, resolution in METHODS.items():
            for budget in (1.0,) if method == "baseline" else budgets:
                key = f"{method.split()[0]}-{budget:g}-{seed}"
                spec = tiny_spec(name=f"tiny_{method.split()[0]}", resolution=resolution)
                rows.append({"key": key, "method": method, "budget": budget, "seed": seed, "model": spec.name,
                             "spec": spec.to_dict(), "resolution": resolution, "test_top1": 10.0})
                if checkpoints:
                    torch.manual_seed(seed)
                    model = ConvNet(spec)
                    folder = runs_dir / key / "checkpoints"
                    folder.mkdir(parents=True)
                    torch.save({"spec": spec.to_dict(), "model": model.state_dict(),
                                "ema": {"model": model.state_dict()}, "classes": [f"c{i}" for i in range(10)],
                                "preprocess": {"resolution": resolution, "crop_fraction": 1.0,
                                               "interpolation": "bicubic", "mean": [0.485, 0.456, 0.406],
                                               "std": [0.229, 0.224, 0.225]}}, folder / "best.pt")
    (source / "results.json").write_text(json.dumps({"experiment": "compound-vs-single", "runs": rows}))
    return source, runs_dir


def test_missing_results_name_the_command_to_run_first(tmp_path, capsys):
    code, _, err = run_cli(capsys, "experiments", "cam", "--part", "fashion-mnist", "--source", str(tmp_path / "none"),
                        "--out", str(tmp_path / "out"))
    assert code == 2 and err.count("\n") == 1
    assert "results.json: not found; run `effnet experiments compound-vs-single` first" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv, message", [
    (("--part", "photos", "--retrain"), "--retrain applies only to the Fashion-MNIST part (--part fashion-mnist or "
                                        "all), not --part photos; drop it or change --part"),
    (("--jobs", "2"), "--jobs applies only to --retrain (the runs trained again in parallel); add --retrain"),
])
def test_a_flag_that_would_do_nothing_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    code, _, err = run_cli(capsys, "experiments", "cam", *argv, "--out", str(tmp_path / "out"))
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_missing_checkpoint_names_the_command_to_run_first(tmp_path, capsys):
    source, runs = _fake_experiment(tmp_path, checkpoints=False)
    code, _, err = run_cli(capsys, "experiments", "cam", "--source", str(source), "--runs", str(runs),
                        "--out", str(tmp_path / "out"))
    assert code == 2 and err.count("\n") == 1
    assert "best.pt: checkpoint of the baseline run (seed 0) not found; pass --retrain to train it again" in err


@pytest.mark.slow
def test_retrain_trains_a_missing_checkpoint_again(tmp_path):
    """The checkpoint of a recorded run is made again from its record (same key: same spec, settings, seed), with
    a progress line and an ETA per run."""
    from effnet.experiments.cam import Options, _checkpoint, retrain_missing
    from effnet.experiments.runner import Run, train_run

    settings = {"steps": 2, "batch_size": 8, "train_subset": 32, "val_subset": 16, "warmup_epochs": 0.0}
    runs = [Run.make(tiny_spec(resolution=16), seed, settings) for seed in (0, 1)]
    first = [train_run(run, tmp_path / "first") for run in runs]  # the recorded runs; their folders "not committed"
    rows = [{**record, "method": "baseline", "budget": 1.0} for record in first]
    options = Options(out=tmp_path / "out", runs_dir=tmp_path / "again", retrain=True)
    lines: list[str] = []
    again = retrain_missing(options, rows, log=lines.append)
    assert all(_checkpoint(options, row).is_file() for row in rows)
    assert again == [{"key": run.key, "method": "baseline", "seed": run.seed, "recorded_test_top1": record["test_top1"],
                      "retrained_test_top1": record["test_top1"], "machine": record["machine"]["cpu"]}
                     for run, record in zip(runs, first)]
    assert lines[0].startswith("cam: training again, 1 at a time, the runs whose checkpoints are missing: baseline "
                               "seed 0, baseline seed 1")
    assert lines[1].startswith("cam: [1/2 retrained, ETA ") and "] baseline seed 0: test " in lines[1]
    assert lines[2].startswith("cam: [2/2 retrained] baseline seed 1: test "), lines
    assert retrain_missing(options, rows, log=lambda m: None) == []  # present now: nothing trained


def test_the_middle_budget_is_compared(tmp_path):
    source, runs = _fake_experiment(tmp_path / "a", seeds=1)
    budget, chosen = chosen_runs(Options(out=tmp_path, source=source, runs_dir=runs))
    assert budget == 3.0
    assert [r["method"] for r in chosen] == list(METHODS)
    assert {r["budget"] for r in chosen} == {1.0, 3.0}
    source, runs = _fake_experiment(tmp_path / "b", (2.0, 4.0, 8.0), seeds=1)
    assert chosen_runs(Options(out=tmp_path, source=source, runs_dir=runs))[0] == 4.0
    with pytest.raises(Exception, match=r"--budget: got 5, expected one of \['2', '4', '8'\]"):
        chosen_runs(Options(out=tmp_path, source=source, runs_dir=runs, budget=5.0))


def test_object_masks_follow_the_pixels():
    config = ModelConfig(4, 1.0, "bilinear", (0.5,) * 3, (0.25,) * 3)
    grey = torch.zeros(1, 3, 4, 4)
    grey[..., :2] = 1.0
    mask = object_masks((grey - 0.5) / 0.25, config)
    assert mask.shape == (1, 4, 4) and mask[0, :, :2].all() and not mask[0, :, 2:].any()


def test_fashion_mnist_part_end_to_end(tmp_path, capsys):
    pytest.importorskip("effnet.data").FashionMNISTSource("test")  # skips with a clear error if not installed
    source, runs = _fake_experiment(tmp_path)
    out = tmp_path / "out"
    code, printed, _ = run_cli(capsys, "experiments", "cam", "--part", "fashion-mnist", "--quick", "--source",
                            str(source), "--runs", str(runs), "--out", str(out))
    assert code == 0 and "on object" in printed
    results = json.loads((out / "results.json").read_text())
    section = results["fashion_mnist"]
    assert section["budget"] == 3.0 and section["images"] == 64 and len(section["runs"]) == 10
    for row in section["runs"]:
        assert row["on_object"] is None or 0 <= row["on_object"] <= 100
        assert 0 < row["object_area"] < 100
    areas = {r["resolution"]: r["object_area"] for r in section["runs"]}
    assert len(areas) == 3  # each model sees the images at its own resolution
    report = (out / "report.md").read_text()
    assert "| compound (paper) | 20 |" in report and " ± " in report and "compound (paper) (on-object mass)" in report
    assert (out / "fashion_mnist.png").stat().st_size > 10_000
    assert "photos" not in results
    (out / "report.md").write_text("stale")
    code, printed, _ = run_cli(capsys, "experiments", "cam", "--report-only", "--out", str(out))
    assert code == 0 and (out / "report.md").read_text() == report  # from results.json alone
    code, _, err = run_cli(capsys, "experiments", "cam", "--report-only", "--out", str(source))
    assert code == 2 and err.count("\n") == 1 and "not a results file of `effnet experiments cam`" in err


@pytest.mark.slow
def test_photos_part_labels_each_photo_and_keeps_the_fashion_mnist_section(tmp_path, capsys):
    pytest.importorskip("skimage")
    pytest.importorskip("effnet.data").FashionMNISTSource("test")
    source, runs = _fake_experiment(tmp_path, seeds=1)
    out = tmp_path / "out"
    args = ["--quick", "--out", str(out)]
    assert run_cli(capsys, "experiments", "cam", "--part", "fashion-mnist", "--source", str(source), "--runs",
                   str(runs), *args)[0] == 0
    before = json.loads((out / "results.json").read_text())["fashion_mnist"]
    assert run_cli(capsys, "experiments", "cam", "--part", "photos", *args)[0] == 0  # --source, --runs: not used
    results = json.loads((out / "results.json").read_text())
    assert results["fashion_mnist"] == before
    models = results["photos"]["models"]
    assert [m["model"] for m in models] == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert [m["resolution"] for m in models] == [224, 240, 260]
    for model in models:  # quick: the coffee cup and the cat, each named beside its own map
        cup, cat = (next(p for p in model["photos"] if p["photo"] == name) for name in ("coffee", "chelsea"))
        assert any(w in cup["top1"] for w in ("espresso", "cup")), cup
        assert any(w in cat["top1"] for w in ("cat", "tabby")), cat
    assert (out / "photos_lite.png").is_file()
    report = (out / "report.md").read_text()
    assert report.index("## Pretrained Lite0") < report.index("## Fashion-MNIST")

"""Bad input across every subcommand: one line naming the flag or file, exit status 2, no traceback, nothing
written or changed on disk.

Each case runs `effnet.cli.main` in-process in a folder of prepared files; the folder's whole tree (names, sizes,
modification times) must be the same afterwards.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch

from effnet.cli import main

# (argv with {placeholders}, text the message must contain: the flag or file it names)
CASES: list[tuple[str, str]] = [
    # models, info
    ("models --filter zzz", "zzz"),
    ("models --format xml", "--format"),
    ("info no_such_model", "no_such_model"),
    ("info {text}", "notes.txt"),
    ("info {bad_spec}", "bad_spec.json"),
    ("info efficientnet_b0 --resolution 0", "--resolution"),
    ("info efficientnet_b0 --resolution 3", "--resolution"),
    ("info {folder}", "'folder' is a folder"),
    # scale
    ("scale efficientnet_b0 --phi 1 -o missing_dir/x.json", "missing_dir"),
    ("scale efficientnet_b0 --phi 1 -o {folder}", "folder"),
    ("scale efficientnet_b0 --phi nan", "--phi"),
    ("scale efficientnet_b0 --target-macs abc", "--target-macs"),
    ("scale efficientnet_b0 --target-macs -1G", "--target-macs"),
    ("scale efficientnet_b0 --strategy dollar --scale-by 2", "--dollar-a"),
    ("scale efficientnet_b0 --scale-by 0", "--scale-by"),
    ("scale no_such_model --phi 1", "no_such_model"),
    ("scale {bad_spec} --phi 1", "bad_spec.json"),
    ("scale efficientnet_b0 --phi 1 -o /proc/effnet/x.json", "/proc/effnet/x.json"),
    ("scale efficientnet_b0 --phi 1 -o x.txt", "x.txt"),
    ("scale efficientnet_b0 --phi 1 -o {text}/x.json", "notes.txt"),
    ("scale efficientnet_b0 --target-macs 1T", "1.000 TMACs"),
    ("scale efficientnet_b0 --phi 1 --tolerance 0.1", "--tolerance"),
    ("scale efficientnet_b0 --target-macs 1G --tolerance nan", "--tolerance"),
    ("scale efficientnet_b0 --phi 1 --threads 1", "--threads applies only to --target-latency"),
    ("scale efficientnet_b0 --target-macs 1G --batch-size 8 --threads 1",
     "--batch-size and --threads apply only to --target-latency (how its time is measured); add --target-latency or "
     "drop them"),
    ("scale efficientnet_b0 --phi 1 --name ''", "argument --name: got an empty value"),
    # an empty value is a shell variable that was not set: never a fallback to a default
    ("predict efficientnet_lite0 --weights '' {image}", "argument --weights: got an empty value"),
    ("train fashion-mnist --model {tiny_spec} --out ''", "argument --out: got an empty value"),
    ("bench {tiny_spec} --paths ''", "argument --paths: got an empty value"),
    ("runs ''", "got an empty value"),
    ("scale efficientnet_b0 --resolution 0.001", "below the smallest input effnet builds (8 px)"),
    ("train fashion-mnist --model {tiny_spec} --decay-rate 1.5", "--decay-rate: got 1.5, expected a number in (0, 1]"),
    ("eval {empty_pt} fashion-mnist --split val", "--split val: fashion-mnist has no validation split"),
    ("experiments single-dims --report-only --out nowhere", "--report-only: nowhere holds no results.json"),
    ("experiments single-dims --report-only --jobs 2", "--jobs applies only to training"),
    ("search coefficients --base efficientnet_b0 --seeds-within-noise 3 --list-grid", "takes --seeds 2 or more"),
    ("search coefficients --base efficientnet_b0 --heartbeat 30 --grace 10 --storage s.journal",
     "--grace 10 must be more than twice --heartbeat 30"),
    ("search architecture --target-macs 8M --heartbeat 5 --grace 10", "--grace 10 must be more than twice"),
    ("predict efficientnet_lite0 --pretrained {image} missing.png", "missing.png: no such file or directory"),
    ("cam efficientnet_lite0 --pretrained {image} -o c.png --top 6", "a figure has room for 5 labels"),
    ("experiments single-dims --until +0m", "a duration of zero"),
    ("bench {tiny_spec} --vs none,timm", "give --vs none on its own"),
    ("bench {tiny_spec} --paths eager,eager", "--paths names eager twice"),
    ("bench {tiny_spec} --iters 0", "argument --iters"),
    ("info efficientnet_b0 --spec --format table", "--format table chooses the cost tables' output"),
    ("train fashion-mnist --model {tiny_spec} --resume --overwrite --out {folder}", "--resume and --overwrite"),
    ("plot {text}", "notes.txt: not a folder"),
    ("eval {truncated} fashion-mnist", "truncated.safetensors"),
    ("search architecture --target-macs 8M --trials 1 -o out.txt", "-o/--output out.txt: got suffix '.txt'"),
    ("search coefficients --base efficientnet_b0 --plot x.txt", "--plot x.txt: got suffix '.txt'"),
    ("scale efficientnet_b0 --depth 1.5 --alpha 1.3 --beta 1.5",
     "--alpha and --beta apply only to compound scaling"),
    ("info efficientnet_b0 --spec --resolution 64", "--resolution 64 applies only to the cost tables"),
    ("export efficientnet_lite0 -o m.pt --format openvino --resolution 32", "got suffix '.pt', expected a .xml file"),
    ("cam efficientnet_lite0 --pretrained {image} --layer classifier --format json",
     "layer: 'classifier' outputs shape"),
    ("experiments cam --jobs 2", "--jobs applies only to --retrain"),
    ("search coefficients --base efficientnet_b0 --report-only --no-report", "--report-only and --no-report"),
    ("search coefficients --base efficientnet_b0 --list-grid --epochs 2 --steps 3", "give one budget"),
    ("search coefficients --base efficientnet_b0 --list-grid --seed 3 --set seed=7", "--set seed=... and --seed"),
    ("search architecture --target-macs 8M --report-only --no-report", "--report-only and --no-report"),
    ("search coefficients --base efficientnet_b0 --list-grid --lr 0.1 --set lr_base=0.2",
     "--lr sets the peak learning rate, so --set lr_base=... (per 256 images"),
    ("search coefficients --base efficientnet_b0 --list-grid --optimizer sgd --set eps=0.1",
     "--set eps=... applies only to --optimizer rmsproptf, not sgd"),
    ("search coefficients --base efficientnet_b0 --list-grid --set optimizer=sgd --set rmsprop_decay=0.8",
     "--set rmsprop_decay=... applies only to --optimizer rmsproptf, not sgd"),
    ("search coefficients --base efficientnet_b0 --list-grid --set randaugment_m=3",
     "--set randaugment_m=... applies only to --augment randaugment, not none"),
    ("search architecture --target-macs 8M --trials 1 --augment autoaugment --set randaugment_n=1",
     "--set randaugment_n=... applies only to --augment randaugment, not autoaugment"),
    ("search coefficients --base efficientnet_b0 --list-grid --set ema_decay=0 --set ema_warmup=false",
     "--set ema_warmup=... applies only to the EMA weights"),
    ("search coefficients --base efficientnet_b0 --list-grid --set freeze_backbone=true --set bn_momentum=0.1",
     "--set bn_momentum=..."),
    ("search coefficients --base efficientnet_b0 --list-grid --set test_subset=100", "--set test_subset=...: trials"),
    ("search coefficients --base efficientnet_b0 --list-grid --set test=true", "--set test=...: trials"),
    ("search architecture --target-macs 8M --trials 1 --set keep_last=2", "--set keep_last=...: trials write no"),
    ("search coefficients --base efficientnet_b0 --list-grid --set tensorboard=true", "--set tensorboard=..."),
    ("search coefficients --base efficientnet_b0 --list-grid --set strict=true", "--set strict=... applies only"),
    ("search coefficients --base efficientnet_b0 --list-grid --epochs -1", "--epochs: got -1"),
    ("search coefficients --base efficientnet_b0 --train-subset 100000 --report-only",
     "--train-subset: got 100000, expected at most the 55000 training images"),
    ("search coefficients --base efficientnet_b0 --set holdout=60000 --report-only", "--set holdout=...: got 60000"),
    ("search coefficients --base efficientnet_b0 --list-grid --set epochs=-1", "--set epochs=...: got -1"),
    ("search architecture --target-macs 8M --trials 1 --set warmup_epochs=-1", "--set warmup_epochs=...: got -1"),
    ("search coefficients --base efficientnet_b0 --list-grid --lr 0.1",
     "--lr applies only to a search that runs, not to --list-grid"),
    ("search coefficients --base efficientnet_b0 --list-grid --jobs 2 --plot x.png --storage s.journal",
     "--storage, --jobs and --plot apply only to a search that runs, not to --list-grid"),
    ("search coefficients fashion-mnist --base efficientnet_b0 --list-grid", "DATA applies only"),
    ("search architecture --list-space --target-macs 8M --epochs 2",
     "--target-macs and --epochs apply only to a search that runs, not to --list-space"),
    ("search architecture --list-space --trials 3 --set dropout=0.1", "--trials and --set apply only"),
    # experiments
    ("experiments no_such_experiment", "no_such_experiment"),
    ("experiments compound-vs-single --seeds 0", "--seeds"),
    ("experiments compound-vs-single --jobs -1", "--jobs"),
    ("experiments compound-vs-single --report-only --out {text}", "notes.txt"),
    ("experiments table3 --format xml", "--format"),
    ("experiments cam --budget 0", "--budget"),
    ("experiments transfer --report-only --storage {text}", "notes.txt"),
    ("experiments transfer --report-only --storage {folder}", "folder"),
    ("experiments transfer --report-only --storage missing.journal", "missing.journal"),
    ("experiments single-dims --quick --storage {empty_pt} --out out", "empty.pt"),
    ("experiments single-dims --quick --storage sqlite:x.db --out out", "sqlite:x.db"),
    ("experiments cam --part fashion-mnist --source missing_dir", "missing_dir"),
    # search
    ("search coefficients --base no_such_model --report-only", "no_such_model"),
    ("search coefficients --base efficientnet_b0 --dataset missing_dir --report-only", "missing_dir"),
    ("search coefficients --base efficientnet_b0 --step 0 --list-grid", "--step"),
    ("search coefficients --base efficientnet_b0 --set foo=1 --list-grid", "--set"),
    ("search coefficients --base efficientnet_b0 --jobs 0", "--jobs"),
    ("search no_such_search", "no_such_search"),
    ("search coefficients --base efficientnet_b0 --phi 0 --list-grid", "--phi"),
    ("search coefficients --base efficientnet_b0 --storage {text} --report-only", "notes.txt"),
    ("search coefficients --base efficientnet_b0 --storage {empty_pt} --report-only", "empty.pt"),
    ("search coefficients --base efficientnet_b0 --storage missing.journal --report-only", "missing.journal"),
    ("search coefficients --base efficientnet_b0 --storage sqlite:x.db --report-only", "sqlite:x.db"),
    # convert
    ("convert {text} --from timm --model efficientnet_b0 -o x.safetensors", "notes.txt"),
    ("convert missing.pth --from timm --model efficientnet_b0 -o x.safetensors", "missing.pth"),
    ("convert {empty_pt} --from torchvision --model efficientnet_b0 -o x.safetensors", "empty.pt"),
    ("convert {text} --from no_such_source --model efficientnet_b0 -o x.safetensors", "--from"),
    ("convert {text} --from keras --model efficientnet_b0 -o x.safetensors", "notes.txt"),
    ("convert {no_weights_h5} --from keras --model efficientnet_b0 -o x.safetensors", "no_weights.h5"),
    ("convert {other_weights} --from torchvision --model efficientnet_b0 -o x.safetensors", "other.pth"),
    ("convert {other_weights} --from torchvision --model efficientnet_b0 -o missing_dir/x.safetensors",
     "missing_dir"),
    ("convert {other_weights} --from torchvision --model no_such_model -o x.safetensors", "no_such_model"),
    ("convert {other_weights} --from torchvision --model efficientnet_b0 -o x.safetensors --mean 128 128 128",
     "--mean"),
    # predict
    ("predict efficientnet_lite0 --weights {text} {image}", "notes.txt"),
    ("predict efficientnet_lite0 --weights {folder} {image}", "folder: is a folder"),
    ("predict efficientnet_lite0 --weights {truncated} {image}", "truncated.safetensors"),
    ("predict efficientnet_lite0 --weights {tiny_weights} {image}", "tiny.safetensors"),
    ("predict efficientnet_lite0 --pretrained missing.png", "missing.png"),
    ("predict efficientnet_lite0 --pretrained {text}", "notes.txt"),
    ("predict efficientnet_lite0 --pretrained {image} --top 0", "--top"),
    ("predict efficientnet_lite0 --pretrained {image} --batch-size 0", "--batch-size"),
    ("predict efficientnet_b0 --pretrained {image}", "efficientnet_b0"),
    ("predict efficientnet_lite0 --pretrained {image} --precision fp8", "--precision"),
    # cam
    ("cam efficientnet_lite0 --pretrained {image} --layer no_such_stage -o x.png", "no_such_stage"),
    ("cam efficientnet_lite0 --pretrained {image} --target 5000 -o x.png", "5000"),
    ("cam efficientnet_lite0 --pretrained {text} -o x.png", "notes.txt"),
    ("cam efficientnet_lite0 --pretrained {image} -o {folder}", "folder"),
    ("cam efficientnet_lite0 --pretrained {image} -o /proc/effnet/x.png", "/proc/effnet/x.png"),
    ("cam efficientnet_lite0 --pretrained {folder} -o x.png", "folder: is a folder"),
    ("cam efficientnet_lite0 --pretrained {image} --method no_such_method -o x.png", "--method"),
    # bench
    ("bench efficientnet_b0 --resolution 0", "--resolution"),
    ("bench efficientnet_b0 --batch 0", "--batch"),
    ("bench efficientnet_b0 --batch-size 0", "--batch-size: got '0'"),
    ("bench efficientnet_b0 --resolution 4", "--resolution"),
    ("bench efficientnet_b0 --threads 0", "--threads"),
    ("bench efficientnet_b0 --vs no_such_peer", "no_such_peer"),
    ("bench no_such_model", "no_such_model"),
    ("bench efficientnet_b0 --mode sleep", "--mode"),
    ("bench efficientnet_b0 --isolate-memory", "--isolate-memory applies only to --mode train, not infer"),
    ("bench efficientnet_b0 --mode train --no-auto", "--no-auto applies only to --mode infer, not train"),
    # export
    ("export efficientnet_b0 --format onnx -o missing_dir/x.onnx", "missing_dir"),
    ("export efficientnet_b0 --format onnx -o x.onnx --resolution 0", "--resolution"),
    ("export efficientnet_b0 --format onnx -o x.onnx --resolution 4000", "--resolution"),
    ("export efficientnet_b0 --format no_such_format -o x.onnx", "--format"),
    ("export efficientnet_lite0 --weights {text} --format onnx -o x.onnx", "notes.txt"),
    ("export efficientnet_b0 --format onnx -o x.onnx --tolerance -1", "--tolerance"),
    ("export efficientnet_b0 -o x.bin", "x.bin"),
    ("export efficientnet_b0 --format onnx --format torchscript -o x.onnx", "--format"),
    ("export no_such_model --format onnx -o {existing}", "no_such_model"),
    # train
    ("train missing_dir --model {tiny_spec}", "missing_dir"),
    ("train {text} --model {tiny_spec}", "notes.txt: is a file"),
    ("train fashion-mnst --model {tiny_spec}", "did you mean fashion-mnist?"),
    ("train --model {tiny_spec}", "DATA"),
    ("train fashion-mnist --dataset missing_dir --model {tiny_spec}", "--dataset"),
    ("train fashion-mnist --model no_such_model", "no_such_model"),
    ("train fashion-mnist --model {bad_spec}", "bad_spec.json"),
    ("train fashion-mnist --model {tiny_spec} --batch-size 0", "--batch-size"),
    ("train fashion-mnist --model {tiny_spec} --lr -1", "--lr"),
    ("train fashion-mnist --model {tiny_spec} --epochs 0", "--epochs"),
    ("train fashion-mnist --model {tiny_spec} --resolution 0", "--resolution"),
    ("train fashion-mnist --model {tiny_spec} --out {text}", "--out notes.txt: is a file"),
    ("train fashion-mnist --model {tiny_spec} --device gpu", "--device"),
    ("train fashion-mnist --model {tiny_spec} --workers -1", "--workers"),
    ("train fashion-mnist --model {tiny_spec} --augment randaugment --randaugment-m 31", "--randaugment-m"),
    ("train fashion-mnist --model {tiny_spec} --steps 3 --epochs 2", "--steps 3"),
    ("train fashion-mnist --model {tiny_spec} --lr 0.1 --lr-base 0.016", "--lr-base"),
    ("train fashion-mnist --model {tiny_spec} --optimizer sgd --eps 0.01", "--eps"),
    ("train fashion-mnist --model {tiny_spec} --randaugment-n 3", "--randaugment-n"),
    ("train fashion-mnist --model {tiny_spec} --out run --train-subset 60000", "--train-subset"),
    ("train fashion-mnist --model {tiny_spec} --compile --no-compile",
     "--no-compile: not allowed with argument --compile"),
    # found after the run folder is claimed: the folder is left as it was (no run.lock, no new folder)
    ("train fashion-mnist --model {tiny_spec} --out run --pretrained missing.safetensors", "missing.safetensors"),
    ("train fashion-mnist --model {tiny_spec} --out run --resume missing.pt", "missing.pt"),
    ("train fashion-mnist --model {tiny_spec} --out {folder} --train-subset 8 --batch-size 16", "--batch-size"),
    ("train fashion-mnist --model {tiny_spec} --out {kept} --pretrained missing.safetensors", "missing.safetensors"),
    ("train fashion-mnist --model {tiny_spec} --out deep/a/b --pretrained missing.safetensors", "missing.safetensors"),
    ("train fashion-mnist --model {tiny_spec} --train-subset 100000 --recipe", "--train-subset"),
    ("train {folder} --model {tiny_spec} --no-test", "--no-test applies only to the test split's evaluation"),
    ("train {folder} --model {tiny_spec} --test-subset 10", "--test-subset applies only to the test split's"),
    ("train fashion-mnist --model {tiny_spec} --no-test --test-subset 100",
     "--test-subset applies only to the test split's evaluation, which --no-test turns off"),
    ("train fashion-mnist --model {tiny_spec} --holdout 0 --no-test", "--no-test applies only"),
    ("train fashion-mnist --model {tiny_spec} --holdout 0 --no-test --test-subset 9",
     "--no-test and --test-subset apply only"),
    ("train fashion-mnist --model {tiny_spec} --ema-decay 0 --no-ema-warmup",
     "--no-ema-warmup applies only to the EMA weights, which an EMA decay of 0 (--ema-decay) turns off"),
    ("train fashion-mnist --model efficientnet_lite0 --pretrained --freeze-backbone --bn-momentum 0.1",
     "--bn-momentum sets how BatchNorm's running statistics follow the batches, but --freeze-backbone"),
    ("train fashion-mnist --model {tiny_spec} --freeze-backbone --bn-momentum 0.1", "--bn-momentum"),
    ("train fashion-mnist --model efficientnet_b0 --pretrained", "--pretrained: no bundled weights"),
    ("train fashion-mnist --model efficientnet_b0 --pretrained --recipe", "--pretrained FILE"),
    ("train fashion-mnist --model {tiny_spec} --strict", "--strict applies only to an image folder"),
    ("train fashion-mnist --model efficientnet_lite0 --no-fused-bn-silu",
     "--no-fused-bn-silu applies only to a model with SiLU after BatchNorm; efficientnet_lite0 uses relu6"),
    ("train fashion-mnist --model {tiny_spec} --optimizer sgd --rmsprop-decay 0.8 --eps 0.1",
     "--eps and --rmsprop-decay apply only to --optimizer rmsproptf"),
    ("train fashion-mnist --model {tiny_spec} --progressive 0", "--progressive: got 0"),
    ("train fashion-mnist --model {tiny_spec} --resolution 32 --progressive 4 --progressive-size 40",
     "--progressive-size: got 40 px, expected at most the final size 32 px"),
    ("train fashion-mnist --model {tiny_spec} --resolution 32 --progressive 4 --progressive-size 40 --recipe",
     "--progressive-size: got 40 px"),
    ("train fashion-mnist --model {tiny_spec} --progressive 4 --progressive-mixup 0 1.5",
     "--progressive-mixup: got 1.5"),
    ("train fashion-mnist --model {tiny_spec} --progressive 4 --progressive-mixup -0.1 0", "--progressive-mixup"),
    ("train fashion-mnist --model {tiny_spec} --progressive 4 --steps 3", "--progressive: got 4 stages"),
    ("train fashion-mnist --model {tiny_spec} --progressive-size 8", "--progressive-size applies only to progressive"),
    ("train fashion-mnist --model {tiny_spec} --progressive 4 --dropout 0.2", "--dropout: got 0.2"),
    ("train fashion-mnist --model {tiny_spec} --progressive 4 --progressive-randaugment 3 9",
     "--progressive-randaugment applies only to --augment randaugment"),
    ("train fashion-mnist --model {tiny_spec} --progressive 4 --progressive-dropout 0.1 1", "--progressive-dropout"),
    ("train fashion-mnist --model {tiny_spec} --progressive 4 --augment randaugment --progressive-randaugment 5 31",
     "--progressive-randaugment: got 31"),
    # eval
    ("eval missing.pt fashion-mnist", "missing.pt"),
    ("eval {text} fashion-mnist", "notes.txt"),
    ("eval {empty_pt} fashion-mnist", "empty.pt"),
    ("eval {text} fashion-mnist --batch-size 0", "--batch-size"),
    ("eval {text} fashion-mnist --workers -1", "--workers"),
    ("eval {text} fashion-mnist --device gpu", "--device"),
    ("eval {text} fashion-mnist --subset 0", "--subset"),
    ("eval {text} fashion-mnist --crop-fraction 0", "--crop-fraction"),
    ("eval {text} fashion-mnist --calibration 32", "--calibration 32"),
    ("eval {text} fashion-mnist --crop-fraction nan", "--crop-fraction"),
    ("eval {text} fashion-mnist --crop-fraction 2", "--crop-fraction"),
    ("eval {text} fashion-mnist --strict", "--strict applies only to an image folder"),
    # plot, runs
    ("plot missing_dir -o x.png", "missing_dir"),
    ("plot missing_dir", "missing_dir: no such folder"),
    ("plot {folder}", "folder: no metrics.jsonl"),
    ("plot {folder} -o /proc/effnet/x.png", "/proc/effnet/x.png"),
    ("plot {folder} -o curves.txt", "curves.txt"),
    ("plot {folder} -o {folder}", "folder"),
    ("plot {folder} {folder} --labels a", "--labels"),
    ("plot {folder} --labels ''", "argument --labels: got an empty value"),
    ("plot {folder} {folder} --labels a,", "--labels 'a,': got an empty label"),
    ("runs missing_dir", "missing_dir"),
    ("runs {folder} --format xml", "--format"),
]

NO_GPU_CASES: list[tuple[str, str]] = [
    ("train fashion-mnist --model {tiny_spec} --device cuda", "--device"),
    ("eval {text} fashion-mnist --device cuda", "--device"),
    ("bench efficientnet_b0 --device cuda", "--device"),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """The prepared inputs, in one folder: the working directory of every case."""
    from PIL import Image
    from safetensors.torch import save_file

    import effnet
    from tests.conftest import tiny_spec

    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "notes.txt").write_text("not a model, an image or a checkpoint\n")
    (root / "bad_spec.json").write_text(json.dumps({"name": "bad", "stages": "not a list"}))
    (root / "folder").mkdir()
    (root / "kept").mkdir()  # files with the names effnet writes, not from a run: a failed run must leave them
    for name in ("curves.png", "record.json", "notes.md"):
        (root / "kept" / name).write_text("a user's file\n")
    (root / "empty.pt").write_bytes(b"")
    (root / "existing.onnx").write_bytes(b"an existing output that must survive")
    Image.new("RGB", (40, 40), (200, 30, 30)).save(root / "red.png")
    spec = tiny_spec()
    (root / "tiny_spec.json").write_text(json.dumps(spec.to_dict()))
    tiny_state = effnet.ConvNet(spec).state_dict()
    save_file({k: v.contiguous() for k, v in tiny_state.items()}, str(root / "tiny.safetensors"))
    torch.save(tiny_state, root / "other.pth")
    full = (root / "tiny.safetensors").read_bytes()
    (root / "truncated.safetensors").write_bytes(full[: len(full) // 2])
    try:
        import h5py

        with h5py.File(root / "no_weights.h5", "w") as f:
            f.attrs["note"] = "an HDF5 file without layer weights"
    except ImportError:
        (root / "no_weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    names = {"text": "notes.txt", "bad_spec": "bad_spec.json", "folder": "folder", "kept": "kept",
             "empty_pt": "empty.pt", "existing": "existing.onnx", "image": "red.png", "tiny_spec": "tiny_spec.json",
             "tiny_weights": "tiny.safetensors", "other_weights": "other.pth", "truncated": "truncated.safetensors",
             "no_weights_h5": "no_weights.h5"}
    return {"root": str(root), **names}


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def _check(files, monkeypatch, capsys, template: str, names: str) -> None:
    root = Path(files["root"])
    argv = shlex.split(template.format(**files))
    monkeypatch.chdir(root)
    before = _tree(root)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"{template}: exit {code}\n{err[-2000:]}"
    assert "Traceback" not in out + err
    assert len(lines) == 1, f"{template}: expected one line, got {len(lines)}:\n{err[-2000:]}"
    assert names in lines[0], f"{template}: the message does not name {names!r}: {lines[0]}"
    assert lines[0].startswith(f"effnet {argv[0]}"), lines[0]
    assert _tree(root) == before, f"{template}: files were written or changed"


@pytest.mark.parametrize(("template", "names"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(files, monkeypatch, capsys, template, names):
    _check(files, monkeypatch, capsys, template, names)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: --device cuda is valid here")
@pytest.mark.parametrize(("template", "names"), NO_GPU_CASES, ids=[c[0] for c in NO_GPU_CASES])
def test_an_unavailable_device_is_one_line_and_exit_2(files, monkeypatch, capsys, template, names):
    _check(files, monkeypatch, capsys, template, names)


def test_there_are_at_least_60_cases_spanning_every_subcommand():
    from effnet.cli import build_parser

    commands = {c.split()[0] for c, _ in CASES + NO_GPU_CASES}
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert len(CASES) + len(NO_GPU_CASES) >= 60
    assert set(sub.choices) - {"demo"} <= commands, set(sub.choices) - commands


def test_an_internal_error_still_shows_its_traceback(monkeypatch):
    """Bugs are not bad input: they propagate (and get reported) instead of being turned into one line."""
    import effnet.cli.models as models

    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(models, "run_models", broken)
    with pytest.raises(ZeroDivisionError):
        main(["models"])


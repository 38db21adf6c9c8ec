"""Export to ONNX (run in onnxruntime) and TorchScript, with parity against eager PyTorch."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import effnet
from effnet.cli import main
from effnet.export import EXPORTERS, ExportError, export, get_exporter, parity


@pytest.mark.slow
@pytest.mark.parametrize("name, pretrained", [("efficientnet_b0", False), ("efficientnet_lite0", True)])
def test_onnx_export_matches_eager_in_onnxruntime_with_a_dynamic_batch(tmp_path, name, pretrained):
    from effnet.runtime import onnx_session

    model = effnet.create_model(name, pretrained=pretrained)
    report = export(model, tmp_path / f"{name}.onnx", "onnx", resolution=128, check_batch=3)
    assert report.ok and report.runtime == "onnxruntime" and report.batch_checked == 3
    assert report.relative_error < 1e-4 and report.max_abs_error < 1e-3
    assert not (tmp_path / f"{name}.onnx.data").exists()  # weights inside the one file
    session = onnx_session(report.path)
    assert session.get_inputs()[0].shape[0] == "batch"
    # the one ONNX naming, whoever exports: `effnet export` and effnet.runtime write the same file
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["logits"]


@pytest.mark.slow
def test_torchscript_export_matches_eager(tmp_path):
    model = effnet.create_model("efficientnet_lite0", pretrained=True)
    report = export(model, tmp_path / "lite0.pt", "torchscript", resolution=96)
    assert report.ok and report.max_abs_error < 1e-4


def test_parity_measures_abs_and_scale_relative_error():
    eager = np.array([[10.0, -20.0]], dtype=np.float32)
    assert parity(eager, eager + np.float32(0.002)) == pytest.approx((0.002, 0.0001), rel=1e-3)
    with pytest.raises(ExportError, match="shape"):
        parity(eager, eager[:, :1])


def test_unknown_format_lists_the_known_ones():
    with pytest.raises(ExportError, match="expected one of onnx, torchscript"):
        get_exporter("tflite")
    assert set(EXPORTERS) >= {"onnx", "torchscript"}


def test_disagreeing_export_is_reported(tmp_path, monkeypatch):
    fmt = EXPORTERS["torchscript"]
    broken = dataclasses.replace(fmt, runner=lambda path: (lambda x: fmt.runner(path)(x) + 1))
    monkeypatch.setitem(EXPORTERS, "torchscript", broken)
    spec = effnet.get_spec("efficientnet_b0")
    tiny = effnet.ConvNet(effnet.spec.with_options(spec, stages=spec.stages[:2], num_classes=5, resolution=32))
    with pytest.raises(ExportError, match="differs from eager PyTorch: max abs error 1.*the file was removed "
                                          r"\(--tolerance [0-9.]+ keeps it\)") as caught:
        export(tiny, tmp_path / "tiny.pt", "torchscript")
    assert not (tmp_path / "tiny.pt").exists()
    kept = float(str(caught.value).rsplit("--tolerance ", 1)[1].split()[0])
    assert export(tiny, tmp_path / "tiny.pt", "torchscript", tolerance=kept).ok and (tmp_path / "tiny.pt").is_file()


@pytest.mark.slow
def test_export_cli_prints_the_parity_report(tmp_path, capsys):
    out = tmp_path / "lite0.onnx"
    code = main(["export", "efficientnet_lite0", "--pretrained", "--format", "onnx", "-o", str(out),
                 "--resolution", "96"])
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert "parity vs eager PyTorch in onnxruntime" in printed and "relative error" in printed


def _tiny():
    spec = effnet.get_spec("efficientnet_b0")
    return effnet.ConvNet(effnet.spec.with_options(spec, stages=spec.stages[:2], num_classes=5, resolution=32))


def test_export_cli_missing_output_directory_is_one_line(tmp_path, capsys):
    out = tmp_path / "nonexist" / "x.pt"
    code = main(["export", "efficientnet_b0", "--format", "torchscript", "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"the folder {out.parent} does not exist" in err and "Traceback" not in err


@pytest.mark.parametrize("flag, value", [("--resolution", "-3"), ("--resolution", "0"), ("--resolution", "x"),
                                         ("--tolerance", "-1"), ("--tolerance", "nan"), ("--tolerance", "0"),
                                         ("--tolerance", "inf")])
def test_export_cli_rejects_bad_numbers(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_:
        main(["export", "efficientnet_b0", "--format", "torchscript", "-o", str(tmp_path / "x.pt"), flag, value])
    assert exit_.value.code == 2
    assert f"argument {flag}: expected a" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("kwargs, match", [({"resolution": 0}, "resolution: got 0"),
                                           ({"resolution": -3}, "resolution: got -3"),
                                           ({"tolerance": float("nan")}, "tolerance: got nan"),
                                           ({"tolerance": -1.0}, "tolerance: got -1")])
def test_export_library_rejects_bad_numbers(tmp_path, kwargs, match):
    with pytest.raises(ExportError, match=match):
        export(_tiny(), tmp_path / "tiny.pt", "torchscript", **kwargs)
    assert not (tmp_path / "tiny.pt").exists()


def test_export_save_errors_become_export_errors(tmp_path, monkeypatch):
    def failing_save(model, example, path):
        raise RuntimeError("File tiny.pt cannot be opened.\nmore detail")

    monkeypatch.setitem(EXPORTERS, "torchscript", dataclasses.replace(EXPORTERS["torchscript"], save=failing_save))
    with pytest.raises(ExportError, match=r"tiny.pt: torchscript export failed: RuntimeError: File tiny.pt cannot be "
                                          r"opened.$"):
        export(_tiny(), tmp_path / "tiny.pt", "torchscript")


def test_export_into_a_directory_path_is_refused(tmp_path):
    with pytest.raises(ExportError, match="is a folder; expected a file name"):
        export(_tiny(), tmp_path, "torchscript")


def test_export_cli_format_json_prints_the_report_and_infers_the_file_format(tmp_path, capsys):
    out = tmp_path / "b0.pt"
    code = main(["export", "efficientnet_b0", "--format", "json", "-o", str(out), "--resolution", "32"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == 0 and out.is_file()
    assert report["format"] == "torchscript" and report["ok"] is True and report["resolution"] == 32
    assert "neither --pretrained nor --weights given" in captured.err and "randomly initialised" in captured.err


@pytest.mark.parametrize("name, fmt, expected", [("m.pt", "openvino", ".xml"), ("m.onnx", "torchscript", ".pt")])
def test_a_format_its_suffix_does_not_say_is_one_line_and_writes_nothing(tmp_path, capsys, name, fmt, expected):
    code = main(["export", "efficientnet_lite0", "-o", str(tmp_path / name), "--format", fmt, "--resolution", "32"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"(format {fmt}): got suffix '{Path(name).suffix}', expected a {expected} file" in err
    assert not list(tmp_path.iterdir())

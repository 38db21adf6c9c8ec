import json

import pytest

import effnet
from effnet.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_models_json_is_machine_readable(capsys):
    code, out, _ = run(capsys, "models", "--format", "json", "--filter", "lite")
    rows = json.loads(out)
    assert code == 0
    assert [r["name"] for r in rows] == effnet.list_models("lite")
    lite0 = rows[0]
    assert lite0["params"] == 4_652_008 and lite0["resolution"] == 224 and 0.38e9 < lite0["macs"] < 0.39e9


def test_models_table_shows_paper_figures(capsys):
    code, out, _ = run(capsys, "models", "--filter", "efficientnet_b0")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("efficientnet_b0 "))
    assert row.split() == ["efficientnet_b0", "224", "5.29", "5.3", "0.386", "0.39", "-1.1%", "6.75", "77.1", "V1",
                           "Table", "2"]


def test_models_table_shows_v2_beside_the_v2_papers_table7(capsys):
    code, out, _ = run(capsys, "models", "--filter", "efficientnetv2")
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert list(rows) == effnet.list_models("efficientnetv2")
    assert rows["efficientnetv2_s"] == ["efficientnetv2_s", "384", "21.5", "22", "8.37", "8.8", "-4.9%", "35.8",
                                        "83.9", "V2", "Table", "7"]
    assert rows["efficientnetv2_xl"][8:10] == ["87.3", "(21k)"]  # XL is published only after ImageNet-21k
    # B0-B3 are not in the paper: the reference release's table
    assert rows["efficientnetv2_b0"][3:] == ["7.1", "0.718", "0.72", "-0.3%", "4.77", "78.7", "V2", "ref.", "README"]
    code, out, _ = run(capsys, "models", "--filter", "efficientnetv2_m", "--format", "json")
    (m,) = json.loads(out)
    assert (m["paper_params_m"], m["paper_macs_b"], m["paper_top1"], m["paper_top1_21k"], m["paper_table"]) == (
        54, 24, 85.1, 86.2, "V2 Table 7")
    assert m["params"] == 54_139_356


def test_info_prints_per_stage_table(capsys):
    code, out, _ = run(capsys, "info", "efficientnet_b0", "--resolution", "256")
    assert code == 0
    assert "at 256x256" in out and "mbconv6+se0.25" in out and "8x8" in out


def test_scale_phi_reports_ratio_next_to_two_pow_phi(capsys, tmp_path):
    path = tmp_path / "b0_phi1.json"
    code, out, _ = run(capsys, "scale", "efficientnet_b0", "--phi", "1", "-o", str(path))
    assert code == 0
    assert "MACs ratio vs base: 2.57" in out and "2^phi = 2.000" in out
    spec = effnet.load_spec(path)
    assert spec.resolution == 258 and spec.name == "efficientnet_b0_phi1"


def test_scale_explicit_multipliers_json(capsys):
    code, out, _ = run(capsys, "scale", "efficientnet_b0", "--depth", "2", "--width", "1", "--resolution", "1",
                       "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["depth"] == 2 and data["two_pow_phi"] is None
    assert [s["repeats"] for s in data["spec"]["stages"]] == [2, 4, 4, 6, 6, 8, 2]


@pytest.mark.parametrize(("typed", "first"), [
    ("efficientnet_bo", "efficientnet_b0"), ("b0", "efficientnet_b0"), ("lite0", "efficientnet_lite0"),
    ("efficientnet_lite", "efficientnet_lite0"), ("v2_s", "efficientnetv2_s"), ("efficientnet-b3", "efficientnet_b3"),
])
def test_an_unknown_model_suggests_the_one_meant_first(capsys, typed, first):
    code, _, err = run(capsys, "info", typed)
    assert code == 2 and f"did you mean {first}" in err, err


def test_scale_errors_are_one_line(capsys):
    code, _, err = run(capsys, "scale", "efficientnet_b0", "--depth", "-1")
    assert code == 2 and err.strip() == "effnet scale: error: depth multiplier: got -1.0, expected a finite number > 0"
    code, _, err = run(capsys, "info", "efficientnet_b9")
    assert code == 2 and "unknown model 'efficientnet_b9'" in err and "did you mean" in err
    code, _, err = run(capsys, "scale", "efficientnet_b0", "--phi", "1", "--depth", "2")
    assert code == 2 and "give either --phi" in err and "not both" in err
    code, _, err = run(capsys, "scale", "efficientnet_b0")
    assert code == 2 and "nothing to scale" in err
    code, _, err = run(capsys, "scale", "efficientnet_b0", "--phi", "5000")
    assert code == 2 and "multipliers out of range" in err
    with pytest.raises(SystemExit) as exit_:
        main(["info", "efficientnet_b0", "--resolution", "0"])
    assert exit_.value.code == 2
    assert "expected an integer number of pixels in [8, 2048], got 0" in capsys.readouterr().err


def test_constraint_warning_is_one_line(capsys):
    code, _, err = run(capsys, "scale", "efficientnet_b0", "--phi", "1", "--alpha", "2")
    assert code == 0
    assert err.strip() == ("effnet scale: warning: alpha*beta^2*gamma^2 = 3.200, far from the paper's constraint of 2: "
                           "phi=1.0 will not mean 2^phi times the MACs")


def test_models_filter_without_match_is_an_error(capsys):
    code, out, err = run(capsys, "models", "--filter", "zzz")
    assert code == 2 and out == "" and "no registered model name contains 'zzz'" in err


@pytest.mark.parametrize(("only", "message"), [("x", "expected comma-separated section numbers"),
                                                ("1,99", "no section [99]")])
def test_demo_rejects_unknown_sections(capsys, only, message):
    with pytest.raises(SystemExit) as exit_:
        main(["demo", "--only", only])
    assert exit_.value.code == 2 and message in capsys.readouterr().err

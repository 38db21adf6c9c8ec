"""`effnet experiments latency --part fused`: V2's Table 3 on this CPU, measured in interleaved rounds, its records
kept beside Table 4's (each with its own CPU), the report section and its answer generated from the numbers."""

from __future__ import annotations

import json
import statistics

import pytest

from effnet.cli import main
from effnet.cpu import cpu_flag_list
from effnet.experiments import fused
from tests._cam_util import run_cli

OTHER_CPU = {"cpu": "Another CPU", "isa": ["avx2"], "cores": 64}
TABLE4_RECORD = {"model": "efficientnet_b0", "engine": "torch-eager", "threads": 1, "batch": 1, "resolution": 224,
                 "mean_s": 0.02, "std_s": 0.001, "min_s": 0.019, "max_s": 0.021, "times_s": [0.02]}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """A quick fused run into a folder whose Table 4 records were measured on another CPU."""
    out = tmp_path_factory.mktemp("fused") / "out"
    out.mkdir()
    table4 = {"experiment": "latency", "quick": True, "sitting": OTHER_CPU, "machine": dict(OTHER_CPU, torch="x"),
              "models": {}, "records": [TABLE4_RECORD], "training": [], "passes": [], "earlier": []}
    (out / "results.json").write_text(json.dumps(table4))
    assert main(["experiments", "latency", "--quick", "--part", "fused", "--out", str(out)]) == 0
    return out


def _results(out):
    return json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_every_model_measure_and_round_is_recorded_once(quick):
    section = _results(quick)["fused"]
    names = [m.name for m in fused.models(quick=True)]
    assert names == ["efficientnet_b0", "efficientnet_b0_fused3", "efficientnetv2_b0"]
    assert set(section["models"]) == set(names)
    keys = [(r["model"], r["measure"], r["round"]) for r in section["records"]]
    measures = {r["measure"] for r in section["records"]}
    assert measures >= {fused.EAGER, fused.TRAIN_OWN, fused.TRAIN_ATEN}
    assert sorted(keys) == sorted((n, w, r) for n in names for w in measures
                                  for r in range(section["settings"]["rounds"]))
    assert all(r["mean_s"] > 0 and r["load_average"] for r in section["records"])
    models = section["models"]
    assert models["efficientnet_b0_fused3"]["params"] != models["efficientnet_b0"]["params"]
    assert models["efficientnet_b0_fused3"]["fused"] == 3 and models["efficientnetv2_b0"]["fused"] is None
    assert section["passes"][0]["measured"] == len(section["records"])
    assert section["machine"]["flags"] == cpu_flag_list()


@pytest.mark.slow
def test_table4_of_another_cpu_is_kept(quick):
    results = _results(quick)
    assert results["records"] == [TABLE4_RECORD] and results["sitting"] == OTHER_CPU
    assert results["earlier"] == [] and results["fused"]["sitting"]["cpu"] != OTHER_CPU["cpu"]


@pytest.mark.slow
def test_report_has_the_section_and_the_answer(quick):
    report = (quick / "report.md").read_text()
    section = _results(quick)["fused"]
    assert "## EfficientNetV2's Table 3 on this CPU" in report and "(quick: a smoke test, not a result)" in report
    assert "paper: TPU images/s/core" in report and "| 362 |" not in report  # the paper's rows are B4's only
    own = fused.ratios(section, "efficientnet_b0_fused3", "efficientnet_b0", fused.TRAIN_OWN)
    assert len(own) == section["settings"]["rounds"]
    line = next(s for s in report.splitlines() if s.startswith("- Fused-MBConv in stages 1–3 against"))
    assert f"training images/s {statistics.median(own):.2f}x" in line and f"({fused.verdict(own)}: faster in" in line
    assert "Loaded machine" in report or all(r["load_average"][0] <= 0.5 for r in section["records"])


@pytest.mark.slow
def test_rerun_measures_nothing(quick, capsys):
    before = _results(quick)["fused"]
    code, stdout, _ = run_cli(capsys, "experiments", "latency", "--quick", "--part", "fused", "--out", str(quick))
    after = _results(quick)["fused"]
    assert code == 0 and after["records"] == before["records"] and "round" not in stdout
    assert len(after["passes"]) == len(before["passes"]) + 1 and after["passes"][-1]["measured"] == 0


def _section(times):
    """A section of two models over rounds: times[model][measure] is a list of per-round seconds."""
    records = [{"model": n, "measure": w, "round": r, "mean_s": t} for n, by in times.items()
               for w, ts in by.items() for r, t in enumerate(ts)]
    return {"settings": {"train_batch": 8}, "records": records,
            "models": {"b": {"fused": 0}, "f": {"fused": 3}}}


def test_ratios_speed_and_verdict_by_hand():
    section = _section({"b": {fused.EAGER: [0.10, 0.20, 0.10], fused.TRAIN_OWN: [2.0, 4.0, 2.0]},
                        "f": {fused.EAGER: [0.05, 0.25, 0.20], fused.TRAIN_OWN: [1.0, 2.0, 1.6]}})
    assert fused.ratios(section, "f", "b", fused.EAGER) == pytest.approx([2.0, 0.8, 0.5])
    assert fused.ratios(section, "f", "b", fused.TRAIN_OWN) == pytest.approx([2.0, 2.0, 1.25])
    assert fused.speed(section, "b", fused.EAGER) == pytest.approx(100.0)  # ms, median over rounds
    assert fused.speed(section, "f", fused.TRAIN_OWN) == pytest.approx(8 / 1.6)  # images/s at the median step
    assert fused.verdict([2.0, 2.0, 1.25]) == "faster"
    assert fused.verdict([0.9, 0.7]) == "slower"
    assert fused.verdict([2.0, 0.8, 0.5]) == "no clear difference"
    assert fused.speed(section, "f", fused.ORT) is None and fused.ratios(section, "f", "b", fused.ORT) == []


def test_answer_names_each_model_with_its_ratios():
    section = _section({"b": {fused.TRAIN_OWN: [2.0, 2.0], fused.TRAIN_ATEN: [3.0, 3.0]},
                        "f": {fused.TRAIN_OWN: [1.0, 1.0], fused.TRAIN_ATEN: [4.0, 6.0]}})
    lines = fused.answer_lines(section)
    line = next(s for s in lines if "stages 1–3" in s)
    assert "2.00x (2.00–2.00) with effnet's kernels (faster: faster in 2 of 2 rounds)" in line
    assert "0.62x (0.50–0.75) with ATen's (slower: faster in 0 of 2 rounds)" in line


def test_models_of_the_full_table():
    ms = fused.models(quick=False)
    assert [m.name for m in ms] == ["efficientnet_b4", "efficientnet_b4_fused3", "efficientnet_b4_fused5",
                                    "efficientnet_b4_fused7", "efficientnetv2_s", "efficientnet_b5",
                                    "efficientnet_b4_fused3_k3"]
    assert [m.fused for m in ms] == [0, 3, 5, 7, None, None, 3]
    assert [m.spec.resolution for m in ms] == [380] * 4 + [384, 456, 380]
    assert [m.train_resolution for m in ms] == [192] * 4 + [152, 232, 192]  # half the training size, to 8 px
    assert [sum(s.kind == "fused_mbconv" for s in m.spec.stages) for m in ms[:4]] == [0, 3, 5, 7]
    k3, kept = ms[-1].spec.stages, ms[1].spec.stages
    assert [s.kernel for s in k3] == [3, 3, 3] + [s.kernel for s in kept[3:]] and kept[2].kernel == 5
    assert [(s.kind, s.out_channels, s.stride, s.repeats) for s in k3] == \
        [(s.kind, s.out_channels, s.stride, s.repeats) for s in kept]


def test_more_rounds_continue_and_other_settings_start_anew(monkeypatch):
    info = {"cpu": "This CPU", "isa": ["avx2"], "cores": 2, "torch": "x"}
    said = []
    results = {}
    first = fused.start(results, info, False, said.append)
    first["records"].append({"model": "m", "measure": fused.EAGER, "round": 0, "mean_s": 1.0})
    monkeypatch.setattr(fused, "ROUNDS", fused.ROUNDS + 3)
    again = fused.start(results, info, False, said.append)
    assert again is first and again["settings"]["rounds"] == fused.ROUNDS and said == []
    monkeypatch.setattr(fused, "TRAIN_BATCH", fused.TRAIN_BATCH * 2)
    anew = fused.start(results, info, False, said.append)
    assert anew["records"] == [] and anew["earlier"][0]["records"] == first["records"]
    assert len(said) == 1 and "\n" not in said[0] and results["fused"] is anew
    other = fused.start(results, dict(info, cpu="Another CPU"), False, said.append)
    assert other["sitting"]["cpu"] == "Another CPU" and len(other["earlier"]) == 2


@pytest.mark.slow
def test_discussion_comes_from_results(quick, tmp_path, capsys):
    assert "Not discussed yet" in (quick / "report.md").read_text()
    copy = tmp_path / "out"
    copy.mkdir()
    results = _results(quick)
    results["fused"]["discussion"] = ["Fused stages 1-3 measured here."]
    (copy / "results.json").write_text(json.dumps(results))
    code, _, _ = run_cli(capsys, "experiments", "latency", "--report-only", "--out", str(copy))
    report = (copy / "report.md").read_text()
    assert code == 0 and "### What this says\n\nFused stages 1-3 measured here." in report
    assert "Not discussed yet" not in report and report.index("## Discussion") < report.index("### What this says")

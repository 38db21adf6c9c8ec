"""`effnet experiments latency`: Table 4's measurements, one record per (model, threads, batch, engine), resumable,
one CPU per table; the report rendered from results.json only; and the correlations of the costs part."""

from __future__ import annotations

import json
import math
import re

import pytest

from effnet.cli import main
from effnet.experiments import costs, latency
from tests._cam_util import run_cli
from tests.conftest import tiny_spec

RESOLUTIONS = (16, 24, 32, 40)


def _fake_source(root):
    """results.json of a compound-vs-single run: four tiny specs, two seeds each (the same spec twice)."""
    source = root / "cvs"
    source.mkdir()
    rows = [{"key": f"{r}-{seed}", "model": f"tiny_{r}", "seed": seed, "macs": r * r,
             "spec": tiny_spec(name=f"tiny_{r}", resolution=r).to_dict()} for r in RESOLUTIONS for seed in (0, 1)]
    (source / "results.json").write_text(json.dumps({"experiment": "compound-vs-single", "runs": rows}))
    return source


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp("latency")
    source, out = _fake_source(root), root / "out"
    assert main(["experiments", "latency", "--quick", "--out", str(out), "--source", str(source)]) == 0
    return out, source


def _results(out):
    return json.loads((out / "results.json").read_text())


@pytest.mark.slow
def test_quick_run_has_one_record_per_model_threads_batch_engine(quick):
    out, _ = quick
    results = _results(out)
    engines = [latency.EAGER, *([e] if (e := latency.fast_engine()) else [])]
    keys = [(r["model"], r["threads"], r["batch"], r["engine"]) for r in results["records"]]
    assert len(keys) == len(set(keys))
    wanted = {(m, t, b, e) for m in latency.QUICK_MODELS for t in latency.thread_counts()
              for b in latency.QUICK_BATCHES for e in engines}
    fashion = [n for n, m in results["models"].items() if m["group"] == costs.GROUPS[1]]
    assert len(fashion) == costs.QUICK_SOURCE_MODELS  # four distinct specs in eight runs, three chosen
    assert set(keys) == wanted | {(n, 1, 1, latency.EAGER) for n in fashion}
    assert {t["model"] for t in results["training"]} == set(latency.QUICK_MODELS) | set(fashion)
    for r in results["records"]:
        assert len(r["times_s"]) == latency.QUICK_RUNS and r["min_s"] <= r["mean_s"] <= r["max_s"]
        assert r["sitting"] == results["sitting"] and r["load_average"]
    for m in results["models"].values():
        assert m["params"] > 0 and m["macs"] > 0 and m["activations"] > 0
    assert results["models"]["efficientnet_b0"]["resolution"] == latency.QUICK_RESOLUTION
    assert results["machine"]["cpu"] and isinstance(results["machine"]["isa"], list)
    assert results["passes"][-1]["load_average_start"] and results["passes"][-1]["load_average_end"]
    assert {"report.md", "latency_vs_macs.png", "costs.png"} <= {p.name for p in out.iterdir()}


def _table_cells(markdown: str, heading: str) -> list[list[str]]:
    """The cells of the body rows of the first table after `heading`."""
    lines = markdown.split(heading + "\n", 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    body = []
    for line in lines[start + 2:]:  # past the header and its rule
        if not line.startswith("|"):
            break
        body.append([c.strip() for c in line.strip("|").split("|")])
    assert body, heading
    return body


def test_report_is_generated_from_results(quick, tmp_path):
    """report.md is what results.json renders to, and every number of its latency tables is a record's."""
    out, _ = quick
    results = _results(out)
    markdown = (out / "report.md").read_text()
    assert latency.write_report(tmp_path, results) == markdown
    assert "do not edit by hand" in markdown and "Discussion: not written yet" in markdown
    for engine in dict.fromkeys(r["engine"] for r in results["records"]):
        for row in _table_cells(markdown, f"## {engine}"):
            model = results["models"][row[0]]
            assert row[1:5] == [str(model["resolution"]), f"{model['params'] / 1e6:.2f}",
                                f"{model['macs'] / 1e9:.3f}", f"{model['activations'] / 1e6:.2f}"]
            shown = {float(x) for cell in row[5:] for x in re.findall(r"\d+(?:\.\d+)?", cell)}
            recorded = {float(latency.fmt_ms(r[k])) for r in results["records"]
                        if r["model"] == row[0] and r["engine"] == engine
                        for k in ("mean_s", "std_s", "min_s", "max_s")}
            assert shown == recorded, (row, recorded)
    tampered = json.loads(json.dumps(results))
    tampered["records"][0]["mean_s"] = 1.2344
    changed = latency.report(tampered, {})
    assert "1234 ±" in changed and changed != latency.report(results, {})


def test_rerun_measures_nothing(quick, capsys):
    out, source = quick
    before = _results(out)
    code, stdout, _ = run_cli(capsys, "experiments", "latency", "--quick", "--out", str(out), "--source",
                              str(source))
    assert code == 0
    after = _results(out)
    assert after["records"] == before["records"] and after["training"] == before["training"]
    assert " ms (" not in stdout and "images/s" not in stdout
    assert len(after["passes"]) == len(before["passes"]) + 1 and after["passes"][-1]["measured"] == 0
    assert before["passes"][0]["measured"] == len(before["records"]) + len(before["training"])


def test_report_only_writes_the_same_report(quick, capsys):
    out, _ = quick
    before = (out / "report.md").read_text()
    results = _results(out)
    code, stdout, _ = run_cli(capsys, "experiments", "latency", "--report-only", "--out", str(out))
    assert code == 0 and _results(out) == results and (out / "report.md").read_text() == before


def test_another_cpu_starts_a_new_table(quick, tmp_path):
    out, _ = quick
    copy = tmp_path / "out"
    copy.mkdir()
    (copy / "results.json").write_text((out / "results.json").read_text())
    info = dict(_results(out)["machine"], cpu="Another CPU", isa=["avx2", "amx_bf16"])
    said = []
    fresh = latency.start(latency.Options(out=copy, quick=True), info, said.append)
    assert len(said) == 1 and "new table" in said[0] and "\n" not in said[0]
    assert fresh["records"] == [] and fresh["sitting"]["cpu"] == "Another CPU"
    assert fresh["earlier"][0]["records"] == _results(out)["records"]
    same = latency.start(latency.Options(out=copy, quick=True), _results(out)["machine"], said.append)
    assert same["records"] == _results(out)["records"] and len(said) == 1


@pytest.mark.parametrize("argv, message", [
    (["--out", "{file}"], "--out: got"),
    (["--out", "{file}/below"], "--out: got"),
    (["--source", "{missing}", "--out", "{dir}"], "--source: got"),
    (["--report-only", "--out", "{missing}"], "results.json: not found"),
    (["--out", "{bad}"], "not a results file of `effnet experiments latency`"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    file, bad = tmp_path / "file.txt", tmp_path / "bad"
    file.write_text("x")
    bad.mkdir()
    (bad / "results.json").write_text("{not json")
    paths = {"file": file, "missing": tmp_path / "missing", "dir": tmp_path / "out", "bad": bad}
    code, _, err = run_cli(capsys, "experiments", "latency", "--quick", *(a.format(**paths) for a in argv))
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_correlations_match_hand_examples():
    assert costs.spearman([1, 2, 3, 4], [10, 20, 25, 1000]) == pytest.approx(1.0)
    assert costs.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert costs.ranks([10, 20, 20, 5]) == [2.0, 3.5, 3.5, 1.0]
    assert costs.log_pearson([1, 10, 100], [2, 20, 200]) == pytest.approx(1.0)  # a power law is a line in logs
    assert costs.pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)  # by hand: sxy 1, sxx 2, syy 2
    assert math.isnan(costs.pearson([1, 1, 1], [1, 2, 3]))
    scipy = pytest.importorskip("scipy.stats")
    x, y = [3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.6], [2.0, 7.0, 1.0, 8.0, 2.8, 1.8, 2.8]
    assert costs.spearman(x, y) == pytest.approx(scipy.spearmanr(x, y).statistic)
    assert costs.pearson(x, y) == pytest.approx(scipy.pearsonr(x, y).statistic)


def test_the_best_cost_is_named_from_the_numbers():
    models = {f"m{i}": {"group": costs.GROUPS[1], "family": "f", "resolution": 16, "macs": macs, "params": params,
                        "activations": act}
              for i, (macs, params, act) in enumerate([(1, 40, 1), (2, 10, 2), (3, 30, 4), (4, 20, 3)])}
    results = {"models": models,
               "records": [{"model": f"m{i}", "engine": "torch-eager", "threads": 1, "batch": 1, "mean_s": t}
                           for i, t in enumerate([0.1, 0.2, 0.4, 0.3])],
               "training": [{"model": f"m{i}", "batch": 4, "seconds_per_image": t, "images_per_s": 1 / t}
                            for i, t in enumerate([0.1, 0.2, 0.3, 0.4])]}
    sentences = costs.best_sentences(costs.correlations(results))
    assert sentences[2].startswith("Fashion-MNIST-size models (4), inference latency (batch 1): activations "
                                   "correlates best (Spearman 1.00")
    assert "MACs correlates best (Spearman 1.00" in sentences[3]
    assert "too few" in sentences[0]


def test_table4_ratio_is_set_beside_the_papers():
    models = {n: {"group": costs.GROUPS[0], "family": "f", "resolution": 224, "params": 1, "macs": 1,
                  "activations": 1} for n in ("efficientnet_b1", "resnet152")}
    records = [{"model": n, "engine": e, "threads": 1, "batch": 1, "mean_s": t, "std_s": 0.001, "min_s": t,
                "max_s": t} for e, scale in (("torch-eager", 1.0), ("onnxruntime-fp32", 0.5))
               for n, t in (("efficientnet_b1", 0.1 * scale), ("resnet152", 0.5 * scale))]
    markdown = latency.report({"models": models, "records": records}, {})
    table = _table_cells(markdown, "## Table 4: EfficientNet-B1 against ResNet-152")
    assert table[0] == ["ResNet-152 (s)", "0.554", "0.5000", "0.2500"]
    assert table[2] == ["ResNet-152 / B1", "5.7x", "5.00x", "5.00x"]
    assert "GPipe 19.0 s against B7 3.1 s (6.1x), is not measurable here" in markdown
    assert latency.summary_lines({"models": models, "records": records})[0].startswith(
        "torch-eager: ResNet-152 / B1 = 5.00x")

"""Sec. 4.2's two steps from our own data: search a baseline in MnasNet's space (`effnet search architecture`,
reward ACC × (MACs/T)^w scored on the validation split), then compound-scale the searched baseline and the
hand-made ones by the paper's α, β, γ to φ = 0, 1, 2 and train them all with the same recipe and seeds: does the
searched baseline stay ahead after scaling, as the paper argues?

Two hand-made baselines: the experiments' B0-like one, whose MACs are the search's target T, and the same network
compound-scaled (φ < 0 when the search lands below T, as the soft constraint w = −0.07 lets it) to the searched
spec's MACs — the comparison at similar cost.  Both are set against the searched one.

The search runs first, in the parent process (its own study in `OUT/search.journal`, resumable, with `--jobs`
workers); its best-reward spec is kept in `OUT/found.json`, which plans the runs of every worker and every rerun."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from effnet.budget import solve_for_macs
from effnet.experiments import design, tables
from effnet.experiments.runner import ExperimentError, Options, Run, StoppedBeforePlanning
from effnet.files import atomic_write_text
from effnet.profile import count_macs, profile, profile_stages
from effnet.report import format_local_time, format_table
from effnet.scaling import scale
from effnet.search.leases import until_argv
from effnet.spec import NetSpec

NAME = "nas"
SPACE_FILE = "nas_space.json"
FOUND = "found.json"
SEARCH = "search.json"
PHIS = (0, 1, 2)
QUICK_PHIS = (0, 1)
SEARCH_TRIALS = 30
QUICK_SEARCH_TRIALS = 2
PROXY_STEPS = 150
"""Proxy training per candidate: the experiments' recipe cut to 150 steps of 128 images (a third of an epoch), scored
on the 5,000 held-out training images (the validation split every experiment chooses on)."""
BASELINE, MATCHED, SEARCHED = "B0-like", "B0-like, matched", "searched"
ARCHS = (BASELINE, MATCHED, SEARCHED)
"""The B0-like baseline (MACs = T), the B0-like baseline compound-scaled to the searched spec's MACs, and the
searched spec."""
_FLAGS = {"steps": "--steps", "batch_size": "--batch-size", "lr": "--lr", "optimizer": "--optimizer",
          "augment": "--augment", "train_subset": "--train-subset", "val_subset": "--val-subset"}


def space_path() -> Path:
    return Path(str(resources.files("effnet.experiments").joinpath(SPACE_FILE)))


def proxy_recipe(quick: bool) -> dict[str, Any]:
    settings = design.recipe(quick)
    settings.pop("test_subset", None)  # the search never reads the test split
    if not quick:
        settings["steps"] = PROXY_STEPS
    return settings


def search_argv(out: Path, quick: bool, jobs: int | None = None, threads: int | None = None,
                space: str | None = None) -> list[str]:
    """`effnet search architecture` as this experiment runs it (the budget, the space, T = the baseline's MACs);
    without `jobs` and `threads` (speed only), as the report states it."""
    base = design.baseline()
    argv = ["search", "architecture", "--dataset", "fashion-mnist", "--space", space or str(space_path()),
            "--target-macs", str(count_macs(base)), "--resolution", str(base.resolution),
            "--trials", str(QUICK_SEARCH_TRIALS if quick else SEARCH_TRIALS), "--seed", "0",
            "--storage", str(out / "search.journal"), "-o", str(out / FOUND), "--plot", str(out / "search.png")]
    if jobs is not None and threads is not None:
        argv += ["--jobs", str(jobs), "--threads", str(threads)]
    for key, value in sorted(proxy_recipe(quick).items()):
        if key in _FLAGS:
            argv += [_FLAGS[key], str(value)]
        else:
            text = json.dumps(list(value) if isinstance(value, tuple) else value, separators=(",", ":"))
            argv += ["--set", f"{key}={text}"]
    return argv


def prepare(options: Options, log=print) -> None:
    """Run (or resume) the search, then record its report (`search.json`) and best spec (`found.json`)."""
    argv = search_argv(options.out, options.quick, options.jobs, options.threads)
    log("nas: searching a baseline first: effnet " + " ".join(argv[:2]) + " ... (resumes a search begun before)")
    effnet = [sys.executable, "-m", "effnet"]
    done = subprocess.run([*effnet, *argv, "--no-report", *until_argv(options.until)])
    if done.returncode:
        raise ExperimentError(f"the architecture search stopped with exit status {done.returncode}; rerun the same "
                              "command to continue it")
    report = subprocess.run([*effnet, *argv, "--report-only", "--format", "json"], capture_output=True, text=True)
    if report.returncode:
        raise ExperimentError(f"the architecture search's report failed: {report.stderr.strip()[-300:]}")
    atomic_write_text(report.stdout, options.out / SEARCH)
    trials = QUICK_SEARCH_TRIALS if options.quick else SEARCH_TRIALS
    counts = json.loads(report.stdout)["counts"]
    searched = counts.get("complete", 0) + counts.get("fail (error)", 0)
    if options.until is not None and searched < trials:  # stopped by --until short of its budget
        best = f" (its best so far in {options.out / FOUND})" if (options.out / FOUND).is_file() else ""
        raise StoppedBeforePlanning(f"nas: --until {format_local_time(options.until)}: the architecture search "
                                    f"has {searched} of {trials} trials{best}; the same command continues it, then "
                                    "trains the runs")


def found_spec(out: Path) -> NetSpec:
    path = out / FOUND
    if not path.is_file():
        raise ExperimentError(f"{path}: no searched baseline yet; run `effnet experiments nas` (without "
                              "--report-only) to search one first")
    return NetSpec.from_json(path.read_text())


def matched_spec(base: NetSpec, found: NetSpec) -> tuple[NetSpec, float]:
    """`base` compound-scaled by the paper's α, β, γ to the MACs of `found` (±5%, or the nearest cost the rounding
    allows), and its φ."""
    target = count_macs(found)
    if abs(target / count_macs(base) - 1) <= design.BUDGET_TOLERANCE:
        return base, 0.0
    c = design.PAPER_COMPOUND
    sol = solve_for_macs(base, target, alpha=c.alpha, beta=c.beta, gamma=c.gamma, tolerance=design.BUDGET_TOLERANCE)
    if sol.within_tolerance:
        phi = sol.phi
    else:  # a gap in the rounded models: the nearer side
        phi = min((side for side in (sol.below, sol.above) if side is not None), key=lambda s: abs(s[1] - target))[0]
    name = f"{base.name}_matched"
    return _scaled(base, phi, name), phi


def _scaled(spec: NetSpec, phi: float, name: str | None = None) -> NetSpec:
    if phi == 0:
        return spec
    m = design.PAPER_COMPOUND.multipliers(phi)
    return scale(spec, m.depth, m.width, m.resolution, name=name or f"{spec.name}_phi{phi}")


def plan(out: Path, quick: bool, seeds: int, log=print) -> tuple[list[Run], dict[str, Any]]:
    base, found = design.baseline(), found_spec(out)
    matched, matched_phi = matched_spec(base, found)
    train = design.recipe(quick)
    points = []
    for phi in QUICK_PHIS if quick else PHIS:
        for arch, spec in ((BASELINE, base), (MATCHED, matched), (SEARCHED, found)):
            s = _scaled(spec, phi)
            cost = profile(s)
            points.append({"arch": arch, "phi": phi, "spec": s.to_dict(), "macs": cost.macs, "params": cost.params,
                           "blocks": sum(st.repeats for st in s.stages), "resolution": s.resolution})
    runs = [Run.make(NetSpec.from_dict(p["spec"]), seed, train, arch=p["arch"], phi=p["phi"])
            for seed in range(seeds) for p in points]
    search = json.loads((out / SEARCH).read_text()) if (out / SEARCH).is_file() else None
    meta = {"baseline": base.to_dict(), "found": found.to_dict(), "matched": matched.to_dict(),
            "matched_phi": matched_phi, "points": points, "search": search,
            "search_command": "effnet " + " ".join(search_argv(Path("OUT"), quick, space="SPACE")),
            "coefficients": {"alpha": design.PAPER_COMPOUND.alpha, "beta": design.PAPER_COMPOUND.beta,
                             "gamma": design.PAPER_COMPOUND.gamma},
            "seeds": seeds, "recipe": design.recipe_text(train)}
    return runs, meta


def _point(results: dict[str, Any], arch: str, phi: int) -> dict[str, Any]:
    return next(p for p in results["points"] if p["arch"] == arch and p["phi"] == phi)


def _phis(results: dict[str, Any]) -> list[int]:
    return sorted({p["phi"] for p in results["points"]})


def _search_lines(results: dict[str, Any]) -> list[str]:
    search = results.get("search")
    if not search or not search.get("best"):
        return ["The search has not finished a trial yet."]
    best, counts = search["best"], search.get("counts", {})
    base = _point(results, BASELINE, 0)
    return [
        f"Search: `{results['search_command']}` (OUT: this folder; SPACE: `effnet/experiments/{SPACE_FILE}` in the "
        "installed package, MnasNet's space over the B0-like baseline's skeleton, which holds that baseline). "
        "Optuna TPE on the reward ACC x (MACs/T)^w, "
        f"T = {search['target_macs'] / 1e6:.2f}M MACs (the B0-like baseline's), w = {search['w']:g}; trials by "
        f"state: {', '.join(f'{v} {k}' for k, v in sorted(counts.items())) or 'none'}; "
        f"{search.get('trial_wall_s', 0.0) / 3600:.2f} h of trial time summed.",
        "",
        f"Best reward: trial {best['trial']}, {best['reward']:.4f} (validation top-1 {best['top1']:.2f}% after the "
        f"proxy training, {best['macs'] / 1e6:.2f}M MACs = {best['macs'] / base['macs']:.2f}x the B0-like "
        f"baseline's): `{best['architecture']}`. Every trial, the Pareto front joined:",
        "",
        "![search](search.png)",
    ]


def _stage_rows(spec: NetSpec) -> list[tuple]:
    return [(r.name, r.operator, r.kernel, f"{r.output_size[0]}x{r.output_size[1]}", r.out_channels, r.repeats,
             r.params, f"{r.macs / 1e6:.3f}") for r in profile_stages(spec)]


def _pairs(phi: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [({"arch": SEARCHED, "phi": phi}, {"arch": hand, "phi": phi}) for hand in (MATCHED, BASELINE)]


def comparisons(results: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The report's paired comparisons: at each phi, the searched baseline scaled against each hand-made one."""
    return [pair for phi in _phis(results) for pair in _pairs(phi)]


def _archs(results: dict[str, Any]) -> list[str]:
    return [arch for arch in ARCHS if any(p["arch"] == arch for p in results["points"])]


def report(results: dict[str, Any]) -> tuple[str, str]:
    rows = results["runs"]
    md = [*_search_lines(results), ""]
    stage_headers = ["stage", "operator", "k", "output", "out", "layers", "params", "MMACs"]
    matched = (f"The B0-like baseline compound-scaled to the searched MACs, phi = {results['matched_phi']:.3f}",
               "matched")
    for title, key in (("The searched baseline", "found"), matched, ("The B0-like baseline", "baseline")):
        md += [f"**{title}** (`{results[key]['name']}`, per stage, as `effnet info` prints it):", "",
               tables.markdown_table(stage_headers, _stage_rows(NetSpec.from_dict(results[key]))), ""]
    table, text, verdicts = [], [], []
    for phi in _phis(results):
        t = _point(results, BASELINE, phi)["macs"]
        for arch in _archs(results):
            p = _point(results, arch, phi)
            val = tables.summary(rows, "val_top1", arch=arch, phi=phi)
            test = tables.summary(rows, arch=arch, phi=phi)
            table.append((phi, arch, p["blocks"], p["resolution"], f"{p['macs'] / 1e6:.2f}M", f"{p['macs'] / t:.2f}x",
                          p["params"], tables.pct(val), tables.pct(test), test.n))
            text.append((phi, arch, p["macs"] / 1e6, tables.pct(val), tables.pct(test), test.n))
        for what, against in _pairs(phi):
            diff = tables.compare(rows, what, against)
            if diff.n:
                cost = _point(results, SEARCHED, phi)["macs"] / _point(results, against["arch"], phi)["macs"]
                at = "" if abs(cost - 1) <= design.BUDGET_TOLERANCE else f" (at {cost:.2f}x its MACs)"
                verdicts.append(f"phi = {phi}: " + tables.verdict(diff, f"the searched baseline{at}",
                                                                  f"the {against['arch']} one"))
    md += ["**The baselines compound-scaled** (the paper's alpha = 1.2, beta = 1.1, gamma = 1.15) and trained with "
           "the recipe above; B0-like, matched: the B0-like baseline scaled to the searched spec's MACs, the hand-made "
           "baseline of similar cost. MACs also as a multiple of the B0-like model's at the same phi; top-1 as mean "
           "± 95% interval over seeds:", "",
           tables.markdown_table(["phi", "baseline", "blocks", "res", "MACs", "/ B0-like", "params", "val top-1",
                                  "test top-1", "seeds"], table), "",
           "The searched baseline against each hand-made one, test top-1 paired by seed:", ""]
    md += [f"- {v}" for v in verdicts] or ["- No paired runs yet."]
    terminal = format_table(["phi", "baseline", "MMACs", "val top-1", "test top-1", "seeds"], text,
                            formats={"MMACs": ".2f"})
    return "\n".join(md), terminal


def plots(results: dict[str, Any], out: Path) -> list[Path]:
    rows = results["runs"]
    curves = {arch: [(_point(results, arch, phi)["macs"] / 1e6, tables.summary(rows, arch=arch, phi=phi), False)
                     for phi in _phis(results)] for arch in _archs(results)}
    phi_of = {(p["arch"], p["macs"] / 1e6): p["phi"] for p in results["points"]}
    return [tables.plot_curves(out / "nas.png", curves, xlabel="MMACs per image",
                               title="The searched and the hand-made baselines, compound-scaled (alpha 1.2, beta "
                                     "1.1, gamma 1.15) to phi = 0, 1, 2; Fashion-MNIST, mean and 95% CI over seeds",
                               annotate=lambda arch, x, _iv: f"phi={phi_of[(arch, x)]}")]


__all__ = ["ARCHS", "NAME", "PHIS", "comparisons", "found_spec", "matched_spec", "plan", "plots", "prepare",
           "proxy_recipe", "report", "search_argv", "space_path"]

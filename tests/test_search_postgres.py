"""The α/β/γ search across processes on a real PostgreSQL server: a throw-away cluster (initdb + pg_ctl in a
temporary folder, on a free port, run as the `postgres` system user when the tests run as root), two worker
processes on one study given by its database URL, every grid point trained exactly once, the report complete.

Debian's `postgresql` package provides the server (`make setup` installs it); psycopg is the driver
(`effnet[postgres]`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from effnet.search.study import PARAM
from effnet.spec import save_spec
from tests.conftest import tiny_spec

ROOT = Path(__file__).resolve().parents[1]


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb")) if Path("/usr/lib/postgresql").is_dir() else []
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL cluster of its own, on 127.0.0.1; yields its URL and stops it afterwards."""
    import psycopg  # noqa: F401 - the driver SQLAlchemy uses for postgresql:// URLs (effnet[postgres])

    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.fail("PostgreSQL's server is not installed (Debian's postgresql package; `make setup` installs it)")
    root = Path(tempfile.mkdtemp(prefix="effnet-pg-"))  # under /tmp, which the server's user can reach
    data, port = root / "data", _free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E",
                    "UTF8"], check=True, capture_output=True, timeout=120)
    log = root / "server.log"
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
                    f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True,
                   timeout=120)
    try:
        subprocess.run([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "effnet"],
                       check=True, capture_output=True, timeout=60)
        yield f"postgresql://postgres@127.0.0.1:{port}/effnet"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def _argv(spec_path: Path, storage: str) -> list[str]:
    return ["search", "coefficients", "--base", str(spec_path), "--dataset", "fashion-mnist", "--step", "0.2",
            "--tolerance", "0.2", "--steps", "4", "--batch-size", "16", "--train-subset", "64", "--val-subset", "32",
            "--storage", storage, "--study", "pg", "--threads", "1", "--heartbeat", "0.5", "--grace", "30",
            "--poll", "0.5"]


@pytest.mark.slow
def test_two_workers_share_one_study_on_postgresql(postgres, tmp_path):
    import optuna
    from optuna.trial import TrialState

    spec_path = tmp_path / "tiny16.json"
    save_spec(tiny_spec(resolution=16, name="tiny16"), spec_path)
    argv = _argv(spec_path, postgres)
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    workers = [subprocess.Popen([sys.executable, "-m", "effnet", *argv, "--no-report"], cwd=tmp_path, env=env,
                                stdout=(tmp_path / f"w{i}.log").open("w"), stderr=subprocess.STDOUT)
               for i in range(2)]
    start = time.time()
    for i, w in enumerate(workers):
        assert w.wait(timeout=600) == 0, (tmp_path / f"w{i}.log").read_text()[-3000:]
    study = optuna.load_study(study_name="pg", storage=postgres)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    points = [t.params[PARAM] for t in complete]
    assert len(points) == len(set(points)) == 8, points  # every grid point trained exactly once
    assert len({t.user_attrs["pid"] for t in complete}) == 2  # both processes trained
    assert time.time() - start < 600

    report = subprocess.run([sys.executable, "-m", "effnet", *argv, "--report-only", "--format", "json"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    rows = json.loads(report.stdout)["rows"]
    assert len(rows) == 8

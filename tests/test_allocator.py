"""effnet.allocator: a training process reuses freed memory instead of faulting it in again."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from effnet.allocator import ENV

pytestmark = pytest.mark.skipif(platform.system() != "Linux", reason="glibc's malloc on Linux only")

# allocate, touch and free a 64 MB block, then count the page faults of doing it again
PROBE = """
import resource, sys
from effnet.allocator import keep_freed_memory
print(keep_freed_memory())
def block():
    b = bytearray(64 << 20)
    b[::4096] = b"x" * len(b[::4096])
    del b
block()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _probe(env_value: str | None) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if env_value is not None:
        env[ENV] = env_value
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    why_not, faults = done.stdout.split()
    return why_not, int(faults)


GLIBC = platform.libc_ver()[0] == "glibc"


def _huge_pages_always() -> bool:
    """Transparent huge pages for every mapping: a 64 MB block then faults in 2 MB pages, a few dozen faults."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[always]" in f.read()
    except OSError:
        return False


@pytest.mark.skipif(not GLIBC, reason="the setting is glibc's")
def test_freed_memory_is_reused_without_page_faults():
    why_not, faults = _probe(None)
    assert why_not == "None"
    assert faults < 100  # 64 MB is 16384 pages


@pytest.mark.skipif(_huge_pages_always(), reason="huge pages: a fresh 64 MB block faults in a few dozen pages")
def test_the_environment_turns_it_off_and_then_every_page_faults_again():
    why_not, faults = _probe("0")
    assert why_not == f"{ENV}=0"
    assert faults > 10000  # glibc maps a block this large afresh and unmaps it on free


def test_the_recipe_says_what_the_allocator_does(monkeypatch):
    from effnet import allocator

    monkeypatch.setattr(allocator, "_outcome", None)  # as before any keep_freed_memory() in this process
    monkeypatch.setenv(ENV, "0")
    assert allocator.describe() == f"as the C library has it ({ENV}=0)"
    monkeypatch.delenv(ENV)
    line = allocator.describe()
    if platform.libc_ver()[0] == "glibc":
        assert line.startswith("glibc's malloc keeps freed memory")
    else:
        assert line.startswith("as the C library has it (not")
    monkeypatch.setattr(allocator, "_outcome", "glibc's mallopt refused the settings")  # after a refusal
    assert allocator.describe() == "as the C library has it (glibc's mallopt refused the settings)"


def test_every_effnet_command_runs_with_freed_memory_kept():
    code = ("import contextlib, io\nfrom effnet import allocator\nfrom effnet.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n    main(['models'])\nprint(allocator.state())")
    env = {k: v for k, v in os.environ.items() if k != ENV}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    expected = "glibc keeps freed memory" if platform.libc_ver()[0] == "glibc" else "the C library's default"
    assert done.stdout.strip().splitlines()[-1] == expected


def test_a_value_other_than_0_or_1_is_one_line_and_exit_2():
    env = dict(os.environ, **{ENV: "false"})
    done = subprocess.run([sys.executable, "-m", "effnet", "models"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"effnet models: error: {ENV}: got 'false', expected 0 (leave the allocator as it "
                                   "is) or 1 (keep freed memory)")

"""The nightly with nobody watching: it stops at its deadline, and a SIGKILL of `styleforge
nightly` takes dvc, the stage and the temporary Prefect server down with it; either way the
workspace is free again at once. A real project, a real Prefect server, real kills."""

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from styleforge.flows.release import git
from tests.test_procs import alive, wait_until

pytestmark = pytest.mark.slow
BIN = str(Path(sys.executable).parent)
SLOW_STAGE = """\
import os, pathlib, subprocess, time
child = subprocess.Popen(["sleep", "600"])
pathlib.Path("stage.pids").write_text(f"{os.getpid()} {child.pid}")
time.sleep(600)
"""


def slow_project(root: Path, deadline_h: float) -> Path:
    """A git + DVC project whose scrape stage hangs (with a child of its own)."""
    root.mkdir()
    (root / "slow.py").write_text(SLOW_STAGE)
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "scrape": {"cmd": f"{sys.executable} slow.py", "deps": ["slow.py"]},
        "evaluate": {"cmd": f"{sys.executable} -c pass", "deps": ["slow.py"]}}}))
    (root / "params.yaml").write_text(yaml.safe_dump({"nightly": {"deadline_h": deadline_h, "lock_timeout_s": 1}}))
    env = environment()
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=root, env=env, check=True)
    git(root, "add", ".")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "pipeline")
    return root


def environment() -> dict:
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"]}
    env.pop("PREFECT_API_URL", None)  # no server up: the command starts the project's temporary one
    env.pop("PREFECT_HOME", None)
    return env


def processes_of(root: Path) -> list[int]:
    """Living processes working in root, or serving its Prefect home."""
    home = f"PREFECT_HOME={root / '.prefect'}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if (cwd == str(root) or home in environ.split(b"\0")) and alive(int(entry)):
            found.append(int(entry))
    return found


def workspace_is_free(root: Path) -> bool:
    fd = os.open(root / ".dvc/tmp/nightly.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_a_sigkilled_nightly_leaves_no_process_and_a_free_workspace(tmp_path):
    root = slow_project(tmp_path / "project", deadline_h=1)
    nightly = subprocess.Popen([f"{BIN}/styleforge", "nightly", "--root", str(root)], cwd=root, env=environment(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_until(lambda: (root / "stage.pids").exists(), 180), "the slow stage never started"
        stage_pids = [int(p) for p in (root / "stage.pids").read_text().split()]
        assert len(processes_of(root)) >= 3  # dvc, its stage (and child), the temporary Prefect server
        os.kill(nightly.pid, signal.SIGKILL)
        nightly.wait()
        assert wait_until(lambda: not processes_of(root), 30), f"left running: {processes_of(root)}"
        assert not any(alive(pid) for pid in stage_pids)
        assert workspace_is_free(root)
    finally:
        nightly.kill()


def test_the_nightly_stops_at_its_deadline_and_frees_the_workspace(tmp_path):
    root = slow_project(tmp_path / "project", deadline_h=20 / 3600)
    started = time.monotonic()
    proc = subprocess.run([f"{BIN}/styleforge", "nightly", "--root", str(root)], cwd=root, env=environment(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "deadline" in proc.stderr.splitlines()[-1], proc.stderr[-2000:]
    assert time.monotonic() - started < 150
    stage_pids = [int(p) for p in (root / "stage.pids").read_text().split()]
    assert wait_until(lambda: not any(alive(pid) for pid in stage_pids), 20)
    assert wait_until(lambda: not processes_of(root), 30) and workspace_is_free(root)

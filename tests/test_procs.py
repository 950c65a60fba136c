"""No orphans: whatever a supervised command starts ends with it, with a timed-out flow stage, and
with the process that started it even when that process is SIGKILLed."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from styleforge.core import procs
from styleforge.flows.repro import StageTimedOut, repro
from tests.conftest import REPO

BIN = str(Path(sys.executable).parent)


def alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()  # a zombie is dead, only unreaped
    except FileNotFoundError:
        return False


def wait_until(check, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def spawn_tree(pidfile: Path) -> list[str]:
    """A shell that starts a child, a grandchild in a session of its own, and waits."""
    return ["bash", "-c", f"sleep 300 & echo $! >> {pidfile}; setsid sleep 301 & echo $! >> {pidfile}; wait"]


def test_stop_ends_the_whole_tree_and_removes_cleanup_folders(tmp_path):
    pidfile, scratch = tmp_path / "pids", tmp_path / "profile"
    scratch.mkdir()
    proc = procs.start(spawn_tree(pidfile), cleanup=[scratch], grace_s=1)
    assert wait_until(lambda: pidfile.exists() and len(pidfile.read_text().split()) == 2)
    pids = [int(p) for p in pidfile.read_text().split()]
    assert procs.stop(proc, timeout_s=15) == 128 + signal.SIGTERM
    assert not any(alive(pid) for pid in pids) and not scratch.exists()


def test_a_sigkilled_parent_takes_the_tree_with_it(tmp_path):
    pidfile = tmp_path / "pids"
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from styleforge.core import procs
        procs.start({spawn_tree(pidfile)!r}, grace_s=1)
        time.sleep(300)
    """)])
    try:
        assert wait_until(lambda: pidfile.exists() and len(pidfile.read_text().split()) == 2)
        pids = [int(p) for p in pidfile.read_text().split()]
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert wait_until(lambda: not any(alive(pid) for pid in pids)), "orphans outlived their SIGKILLed parent"
    finally:
        parent.kill()


@pytest.mark.slow
def test_a_stage_past_its_deadline_is_ended_with_everything_it_started(tmp_path):
    (tmp_path / "slow.py").write_text("import os, pathlib, subprocess, time\n"
                                      "child = subprocess.Popen(['sleep', '300'])\n"
                                      "pathlib.Path('pids').write_text(f'{os.getpid()} {child.pid}')\n"
                                      "time.sleep(300)\n")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"slow": {"cmd": f"{sys.executable} slow.py",
                                                                           "deps": ["slow.py"]}}}))
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"]}
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, env=env, check=True)
    started = time.monotonic()
    with pytest.raises(StageTimedOut, match="deadline"):
        repro("slow", tmp_path, timeout_s=8)
    assert time.monotonic() - started < 60
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    assert wait_until(lambda: not any(alive(pid) for pid in pids)), "the stage's processes outlived the flow"

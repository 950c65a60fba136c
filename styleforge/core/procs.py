"""The one way to run a command whose whole process tree must end with us, even on SIGKILL.

`start(cmd)` runs cmd under a supervisor: a small Python process (this module run as a script)
that
- is a child subreaper (PR_SET_CHILD_SUBREAPER), so whatever the command starts and abandons
  (Chromium under chromedriver, the stage under `dvc repro`'s shell) is re-parented to it rather
  than to init, and stays findable;
- receives SIGTERM when the thread that started it dies (PR_SET_PDEATHSIG), SIGKILL included;
- runs the command in a new session (its own process group);
- when the command exits, or on SIGTERM, SIGINT or SIGHUP, ends every process below it (SIGTERM,
  `grace_s`, then SIGKILL), removes the `cleanup` paths, and exits with the command's code.

`stop(proc)` asks a supervisor to do that now. Linux only: the prctl calls are Linux's.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
DEFAULT_GRACE_S = 10.0
POLL_S = 0.05


def start(
    cmd: Sequence[str],
    *,
    grace_s: float = DEFAULT_GRACE_S,
    cleanup: Sequence[str | Path] = (),
    **popen_kwargs,
) -> subprocess.Popen:
    """Popen of a supervisor running cmd; stdin/stdout/stderr/cwd/env pass through popen_kwargs.

    The returned process's exit code is cmd's (128 + N when a signal N ended it).
    """
    supervisor = [sys.executable, "-m", "styleforge.core.procs", "--parent", str(os.getpid()),
                  "--grace", str(grace_s)]
    for path in cleanup:
        supervisor += ["--cleanup", str(path)]
    return subprocess.Popen([*supervisor, "--", *cmd], **popen_kwargs)


def stop(proc: subprocess.Popen, timeout_s: float | None = None) -> int | None:
    """Ask the supervisor to end its command's tree; wait for it (at most timeout_s) and return its
    exit code, or None if it has not finished by then."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        return None


def descendants(pid: int) -> list[int]:
    """Every living process below pid, parents before children (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # ended while we looked
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name in (...) may hold spaces
        children.setdefault(ppid, []).append(int(entry))
    found, frontier = [], [pid]
    while frontier:
        below = children.get(frontier.pop(), [])
        found += below
        frontier += below
    return found


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _end_tree(grace_s: float) -> None:
    """SIGTERM everything below us, give it grace_s, SIGKILL what is left, reap it all."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 2.0)):
        for pid in descendants(os.getpid()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            _reap()
            if not descendants(os.getpid()):
                return
            time.sleep(POLL_S)


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


class _Ending(Exception):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def supervise(parent: int, cmd: list[str], grace_s: float, cleanup: list[str]) -> int:
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the death signal was armed
        return 128 + signal.SIGTERM

    def ending(signum, _frame):
        raise _Ending(signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, ending)
    code = 128 + signal.SIGTERM
    try:
        child = subprocess.Popen(cmd, start_new_session=True)
        code = child.wait()
        code = 128 - code if code < 0 else code
    except _Ending as stop_signal:
        code = 128 + stop_signal.signum
    except FileNotFoundError as exc:
        print(f"supervisor: cannot run {cmd[0]}: {exc}", file=sys.stderr)
        code = 127
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not cut the clean-up short
        _end_tree(grace_s)
        for path in cleanup:
            shutil.rmtree(path, ignore_errors=True)
    return code


def _main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m styleforge.core.procs", description=__doc__.splitlines()[0])
    parser.add_argument("--parent", type=int, required=True, help="pid whose death ends the command")
    parser.add_argument("--grace", type=float, default=DEFAULT_GRACE_S, help="seconds between SIGTERM and SIGKILL")
    parser.add_argument("--cleanup", action="append", default=[], help="a folder removed once all has ended")
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command given")
    return supervise(args.parent, cmd, args.grace, args.cleanup)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

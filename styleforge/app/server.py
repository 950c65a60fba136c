"""The project's Prefect server on 127.0.0.1: one home (`.prefect/`, git-ignored, SQLite, analytics
off) for every command that runs a flow, so `styleforge server` shows every run of the dataset,
finetune, demo and nightly flows with their logs and artifacts.

When the project's server is up, flows report to it. When it is not, `project_server` starts a
temporary one on the same database for the command's lifetime (under the supervisor, so it ends
with the command even on SIGKILL), instead of Prefect's own temporary server, which keeps its
database in the user's home and outlives a killed parent: the runs appear in the project's
server afterwards. Schedules need the long-running `styleforge server`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from styleforge.core import procs

HOST = "127.0.0.1"
DEFAULT_PORT = 4200
STARTUP_TIMEOUT_S = 90.0  # a cold start with migrations took 17 s on 2 busy cores


def project_home(root: Path) -> Path:
    return Path(root).resolve() / ".prefect"


def api_url(port: int = DEFAULT_PORT) -> str:
    return f"http://{HOST}:{port}/api"


def server_env(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }


def server_command(port: int) -> list[str]:
    return [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(port), "--analytics-off"]


def is_up(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout_s) as response:
            return response.status == 200
    except OSError:
        return False


def exec_server(home: Path, port: int) -> None:
    """Become the server (Ctrl-C then reaches it directly and it shuts down cleanly)."""
    home.mkdir(parents=True, exist_ok=True)
    command = server_command(port)
    os.execve(command[0], command, server_env(home))


@contextlib.contextmanager
def running_server(home: Path, port: int, log_path: Path | None = None) -> Iterator[str]:
    """Start a server under the supervisor, yield its API URL once healthy, stop it after."""
    home.mkdir(parents=True, exist_ok=True)
    log = open(log_path or home / "server.log", "ab")
    proc = procs.start(server_command(port), env=server_env(home), stdout=log, stderr=subprocess.STDOUT)
    url = api_url(port)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not is_up(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Prefect server did not start on {url}; see {log.name}")
            time.sleep(0.5)
        yield url
    finally:
        procs.stop(proc)
        log.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def project_server(root: Path) -> Iterator[str]:
    """Point this process's flows at the project's Prefect server (PREFECT_API_URL, else port 4200),
    starting a temporary one on the project's database when none is up; yields the API URL."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    home = project_home(root)
    url = os.environ.get("PREFECT_API_URL") or api_url(DEFAULT_PORT)
    with contextlib.ExitStack() as stack:
        if not is_up(url):
            url = stack.enter_context(running_server(home, free_port()))
        stack.enter_context(temporary_settings({PREFECT_HOME: str(home), PREFECT_API_URL: url}))
        stack.callback(_flush_logs)  # runs first on the way out: while the server still listens
        yield url


def _flush_logs() -> None:
    """Send the log lines Prefect still holds to the server before it stops."""
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)

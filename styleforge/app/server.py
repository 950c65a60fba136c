"""A Prefect server on 127.0.0.1 for the project, and the nightly deployment served against it.

Schedules need a real server: the temporary one Prefect starts when PREFECT_API_URL is unset
runs no scheduler. The server keeps its SQLite database in the project's PREFECT_HOME
(`.prefect/`, git-ignored), with analytics off.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from styleforge.core.config import NightlyParams

HOST = "127.0.0.1"
DEFAULT_PORT = 4200
DEPLOYMENT_NAME = "nightly"  # read back as "nightly/nightly": flow name / deployment name
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
    """Start a server in its own process group, yield its API URL once healthy, stop it after."""
    home.mkdir(parents=True, exist_ok=True)
    log = open(log_path or home / "server.log", "ab")
    proc = subprocess.Popen(server_command(port), env=server_env(home), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = api_url(port)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not is_up(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Prefect server did not start on {url}; see {log.name}")
            time.sleep(0.5)
        yield url
    finally:
        for sig, wait_s in ((signal.SIGTERM, 20.0), (signal.SIGKILL, None)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(wait_s)
        log.close()


def nightly_deployment(root: Path, nightly: NightlyParams):
    """The nightly flow on nightly.cron in nightly.timezone, for root, one run at a time."""
    from prefect.client.schemas.objects import (
        ConcurrencyLimitConfig,
        ConcurrencyLimitStrategy,
    )
    from prefect.flows import EntrypointType
    from prefect.schedules import Cron

    from styleforge.flows.nightly import nightly_flow

    return nightly_flow.to_deployment(
        name=DEPLOYMENT_NAME,
        schedule=Cron(nightly.cron, timezone=nightly.timezone),
        # a run due while the last one still works is cancelled rather than queued behind it:
        # two nights' runs must not pile up, and the next night picks up whatever was missed
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        parameters={"root": str(Path(root).resolve())},
        description=f"scrape, rebuild, gate and publish {Path(root).resolve()}",
        entrypoint_type=EntrypointType.MODULE_PATH,  # importable wherever the runner starts
    )

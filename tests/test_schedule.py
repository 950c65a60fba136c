"""`styleforge schedule` against a real `prefect server start` on a free loopback port: the
deployment as the Prefect API reads it back, and a cancelled run taking its stage processes down."""

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from styleforge.app.server import running_server
from styleforge.flows.nightly import workspace_lock
from styleforge.flows.release import dvc

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent  # dvc and styleforge live beside this python
SLOW_STAGE = """\
import os, pathlib, time
pathlib.Path("stage.pid").write_text(str(os.getpid()))
time.sleep(300)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.5)
    return result


def alive(pid: int) -> bool:
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def api(coro_fn):
    """Run one call against the Prefect API (PREFECT_API_URL) with a fresh client."""
    from prefect import get_client

    async def call():
        async with get_client() as client:
            return await coro_fn(client)

    return asyncio.run(call())


@contextlib.contextmanager
def prefect_server(home: Path) -> Iterator[str]:
    """A real server on a free port; this process's Prefect client points at it (settings are read at import)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with running_server(home, free_port()) as url, temporary_settings({PREFECT_API_URL: url}):
        yield url


@contextlib.contextmanager
def scheduled(root: Path, url: str) -> Iterator:
    """`styleforge schedule --root root` against the server at url; yields the deployment the API reads back."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PREFECT_API_URL": url,
           "PREFECT_RUNNER_POLL_FREQUENCY": "1"}  # pick up a triggered run within a second
    log = open(root / "schedule.log", "wb")
    proc = subprocess.Popen([BIN / "styleforge", "schedule", "--root", str(root)], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)

    def deployment():
        if proc.poll() is not None:
            pytest.fail(f"styleforge schedule exited: {(root / 'schedule.log').read_text()[-3000:]}")
        try:
            return api(lambda client: client.read_deployment_by_name("nightly/nightly"))
        except Exception:  # not registered yet
            return None

    try:
        yield wait_for(deployment, 90, "the nightly deployment")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A project whose scrape stage sleeps (so a run can be cancelled), served on a fresh server."""
    root = tmp_path_factory.mktemp("scheduled")
    (root / "slow.py").write_text(SLOW_STAGE)
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "scrape": {"cmd": f"{sys.executable} slow.py", "outs": ["stage.out"]},
        "evaluate": {"cmd": "echo evaluated", "deps": ["stage.out"]}}}))
    (root / "params.yaml").write_text(yaml.safe_dump({"nightly": {"cron": "15 4 * * 1-5", "timezone": "Europe/Paris"}}))
    dvc(root, "init", "--no-scm", "--quiet")
    with prefect_server(tmp_path_factory.mktemp("prefect-server")) as url, scheduled(root, url) as deployment:
        yield root, deployment


def test_deployment_has_the_cron_time_zone_and_one_run_at_a_time(served):
    root, deployment = served
    [schedule] = deployment.schedules
    assert schedule.active and schedule.schedule.cron == "15 4 * * 1-5"
    assert schedule.schedule.timezone == "Europe/Paris"
    assert deployment.global_concurrency_limit.limit == 1
    assert deployment.concurrency_options.collision_strategy.value == "CANCEL_NEW"
    assert deployment.parameters == {"root": str(root.resolve())}


def test_cancelling_a_run_stops_its_stage_processes_and_frees_the_workspace(served):
    from prefect.deployments import run_deployment
    from prefect.states import Cancelling

    root, deployment = served
    flow_run = run_deployment(deployment.id, timeout=0)
    stage_pid = int(wait_for(lambda: (root / "stage.pid").exists() and (root / "stage.pid").read_text(), 120,
                             "the scrape stage to start"))
    assert alive(stage_pid)

    api(lambda client: client.set_flow_run_state(flow_run.id, Cancelling(), force=True))
    state = wait_for(lambda: (s := api(lambda c: c.read_flow_run(flow_run.id)).state).is_final() and s, 90,
                     "the run to be cancelled")
    assert state.is_cancelled(), state
    wait_for(lambda: not alive(stage_pid), 15, "the stage process (dvc's grandchild) to end")
    with workspace_lock(root, timeout_s=5):  # and the run let go of the workspace
        pass

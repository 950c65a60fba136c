"""The dataset stages through real `dvc repro` and a real Prefect flow, in a temp project."""

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from styleforge.app.samplesite import serve
from tests.conftest import REPO, copy_project

pytestmark = pytest.mark.slow
BIN = str(Path(sys.executable).parent)  # dvc and styleforge live beside this python


def dvc(project: Path, *args: str) -> str:
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"]}
    proc = subprocess.run(["dvc", *args], cwd=project, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def stages_run(output: str) -> set[str]:
    return {name for name in ("scrape", "faces", "augment") if f"Running stage '{name}'" in output}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    copy_project(root)
    with serve(0) as base_url:
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["scrape"]["sources"][0]["url"] = f"{base_url}/index.html"
        params["scrape"]["sources"][1]["url"] = f"{base_url}/scroll.html"
        params["scrape"]["allow_private"] = [base_url.removeprefix("http://")]
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        dvc(root, "init", "--no-scm", "-q")
        dvc(root, "config", "core.analytics", "false")
        yield root


def test_repro_builds_then_is_a_noop_then_reruns_only_downstream(project):
    assert stages_run(dvc(project, "repro", "augment")) == {"scrape", "faces", "augment"}
    faces = sorted((project / "data/faces").glob("*.png"))
    assert len(faces) >= 20, "the sample site's faces should come through"
    assert (project / "data/train/dataset.json").exists()
    for stage in ("scrape", "faces", "augment"):
        assert (project / f"reports/{stage}.json").exists()

    assert stages_run(dvc(project, "repro", "augment")) == set()

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["faces"]["margin"] = 0.6
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert stages_run(dvc(project, "repro", "augment")) == {"faces", "augment"}


def test_prefect_flow_skips_when_up_to_date_and_force_rebuilds(project, monkeypatch):
    from prefect import get_client

    from styleforge.flows.dataset import dataset_flow

    monkeypatch.setenv("PATH", BIN + os.pathsep + os.environ["PATH"])
    dvc(project, "repro", "augment")  # whatever the other test left, start up to date
    assert dataset_flow(root=str(project)) == {"scrape": False, "faces": False, "augment": False}
    assert dataset_flow(root=str(project), force=True) == {"scrape": True, "faces": True, "augment": True}

    async def artifact_keys():
        async with get_client() as client:
            return {a.key for a in await client.read_artifacts()}

    assert {"scrape-report", "faces-report", "augment-report"} <= asyncio.run(artifact_keys())


def test_flows_report_to_the_project_server_with_stage_logs_even_when_it_was_down(project, tmp_path):
    """`styleforge dataset` with no server up still runs (a temporary server on the project's
    database); the project's server started afterwards shows that run, its stage logs (level and
    time kept) and its artifacts."""
    from styleforge.app.server import free_port, project_home, running_server
    from tests.test_schedule import api

    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"],
           "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api",  # nothing listens there
           "PREFECT_LOGGING_LEVEL": "INFO"}  # the suite quiets Prefect; a user's run logs at INFO
    env.pop("PREFECT_HOME")
    dvc(project, "repro", "augment")  # whatever the other tests left, start up to date ...
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["augment"]["seed"] += 1  # ... then change what only the last stage reads
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run(["styleforge", "dataset", "--root", str(project)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "ran: augment" in proc.stdout
    assert (project / "logs/augment.log").read_text().count("stage augment: done") >= 1

    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, LogFilter, LogFilterTaskRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with running_server(project_home(project), free_port()) as url, temporary_settings({PREFECT_API_URL: url}):
        runs = api(lambda c: c.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["dataset"]))))
        assert runs and runs[0].state.is_completed()
        tasks = {t.name: t for t in api(lambda c: c.read_task_runs())}
        augment_run = tasks["repro-augment"]
        lines = api(lambda c: c.read_logs(log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[augment_run.id]))))
        messages = [line.message for line in lines]
        assert any("Running stage 'augment'" in m for m in messages), messages
        stage_lines = [line for line in lines if "stage augment: done" in line.message]
        assert stage_lines and stage_lines[0].level == 20 and " INFO styleforge." in stage_lines[0].message
        assert "augment-report" in {a.key for a in api(lambda c: c.read_artifacts())}

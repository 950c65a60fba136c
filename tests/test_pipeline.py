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

"""Releases with real git and a real DVC remote (a local folder), the gate's rules, the workspace lock,
and the nightly deployment end to end on the tiny config against a real Prefect server."""

import fcntl
import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml

from styleforge.app.demo import sample_photos
from styleforge.core.config import GateParams, NightlyParams
from styleforge.flows.nightly import WorkspaceBusy, workspace_lock
from styleforge.flows.release import Release, dvc, git, judge, release
from tests.conftest import REPO, copy_project
from tests.test_evaluate import detector_path, pinned  # noqa: F401 (detector_path: a fixture)
from tests.test_schedule import prefect_server, scheduled

DAY = date(2026, 11, 23)
MAKE_STAGE = """\
import json, pathlib, time, yaml
params = yaml.safe_load(open("params.yaml"))["make"]
pathlib.Path("data").mkdir(exist_ok=True)
pathlib.Path("data/model.bin").write_bytes(params["content"].encode() * 4096)
pathlib.Path("reports").mkdir(exist_ok=True)
pathlib.Path("reports/evaluate.json").write_text(json.dumps({"fid": params["fid"]}))
pathlib.Path("reports/run.json").write_text(json.dumps({"seconds": time.time()}))  # changes every run
"""


def init_repo(root: Path, message: str) -> Path:
    """git + DVC in root, with everything in it committed."""
    git(root, "init", "--quiet")
    dvc(root, "init", "--quiet")
    dvc(root, "config", "core.analytics", "false")
    git(root, "add", ".")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", message)
    return root


def make(project: Path, content: str, fid: float | None) -> None:
    """Change the one-stage pipeline's params and reproduce it, as a night's `dvc repro` would."""
    (project / "params.yaml").write_text(yaml.safe_dump({"make": {"content": content, "fid": fid}}))
    dvc(project, "repro")


@pytest.fixture
def project(tmp_path):
    """A git + DVC project with one stage (model + metrics from params) and a folder remote beside it."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "make.py").write_text(MAKE_STAGE)
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"make": {
        "cmd": f"{sys.executable} make.py", "deps": ["make.py"], "params": ["make"],
        "outs": ["data/model.bin"],
        "metrics": [{"reports/evaluate.json": {"cache": False}}, {"reports/run.json": {"cache": False}}]}}}))
    (root / "params.yaml").write_text(yaml.safe_dump({"make": {"content": "v0", "fid": None}}))
    return init_repo(root, "pipeline")


def nightly(**gate) -> NightlyParams:
    return NightlyParams(remote="../remote", gate=GateParams(**gate))


def tags(project: Path) -> list[str]:
    return git(project, "tag", "--list").split()


def remote_files(project: Path) -> set[Path]:
    return {p.relative_to(project.parent / "remote") for p in (project.parent / "remote").rglob("*") if p.is_file()}


def test_a_worse_model_keeps_the_previous_release(project):
    make(project, "v1", 10.0)
    first = release(project, nightly(metric="fid", margin=0.5), DAY)
    assert first.published and first.release.tag == "nightly-20261123" and tags(project) == ["nightly-20261123"]
    head, pushed = git(project, "rev-parse", "HEAD"), remote_files(project)
    assert pushed  # the model's bytes went to the folder remote

    make(project, "v2", 10.6)
    held = release(project, nightly(metric="fid", margin=0.5), DAY)
    assert not held.published and held.release == first.release
    assert "10.6 vs 10 in nightly-20261123" in held.reason and "worse" in held.reason
    assert tags(project) == ["nightly-20261123"] and git(project, "rev-parse", "HEAD") == head
    assert remote_files(project) == pushed  # nothing of the rejected model was pushed

    make(project, "v3", 10.4)  # within the margin: published, same day, next suffix
    assert release(project, nightly(metric="fid", margin=0.5), DAY).release.tag == "nightly-20261123-2"
    dvc(project, "repro", "--force")  # a rerun that changes only an uncached report (and so dvc.lock)
    assert release(project, nightly(), DAY).reason == "nothing changed since nightly-20261123-2"


def test_checkout_of_a_tag_and_dvc_pull_restore_the_model_byte_for_byte(project, tmp_path):
    make(project, "v1", 10.0)
    tag = release(project, nightly(), DAY).release.tag
    published = (project / "data/model.bin").read_bytes()
    make(project, "v2", 5.0)
    assert release(project, nightly(), DAY).published

    clone = tmp_path / "clone"  # elsewhere, with an empty DVC cache: only the remote has the bytes
    subprocess.run(["git", "clone", "--quiet", str(project), str(clone)], check=True)
    git(clone, "checkout", "--quiet", tag)
    dvc(clone, "pull")
    assert (clone / "data/model.bin").read_bytes() == published
    assert json.loads((clone / "reports/evaluate.json").read_text()) == {"fid": 10.0}


@pytest.mark.parametrize(
    ("new", "old", "gate", "publish", "says"),
    [
        ({"fid": 3.0}, None, {}, True, "first release"),
        ({"fid": 3.0}, {"fid": 2.0}, {}, False, "worse"),
        ({"fid": 2.0}, {"fid": 2.0}, {}, True, "not worse"),
        ({"kid": 0.02}, {"kid": 0.01}, {"metric": "kid", "margin": 0.01}, True, "not worse"),
        ({"fid": 0.7}, {"fid": 0.8}, {"higher_is_better": True}, False, "higher is better"),
        ({"fid": None, "skipped": "no Inception weights"}, {"fid": None}, {}, True, "without a metric gate"),
        ({"fid": None, "skipped": "no Inception weights"}, {"fid": 2.0}, {}, False, "no Inception weights"),
        ({"fid": 2.0}, {"fid": None}, {}, True, "first measured release"),
    ],
)
def test_gate_rules(new, old, gate, publish, says):
    last = None if old is None else Release("nightly-20261122", "abc", old)
    verdict = judge(new, last, GateParams(**gate))
    assert verdict.publish is publish and says in verdict.reason


def test_a_held_workspace_makes_a_run_wait_then_fail(tmp_path):
    for lock_name in ("nightly.lock", "lock"):  # another nightly run; any dvc command
        (tmp_path / ".dvc/tmp").mkdir(parents=True, exist_ok=True)
        held = os.open(tmp_path / ".dvc/tmp" / lock_name, os.O_RDWR | os.O_CREAT)
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            with pytest.raises(WorkspaceBusy, match="nothing was run"), workspace_lock(tmp_path, timeout_s=0.3):
                pytest.fail("the lock was taken while held")
        finally:
            os.close(held)
    with workspace_lock(tmp_path, timeout_s=0):
        pass


def tiny_project(root: Path, site: str, remote: Path, detector: Path, served_base: bool = False) -> Path:
    """The repo's pipeline (dvc.yaml, its in-repo deps, params.yaml) shrunk to seconds, in git + DVC.
    served_base: the base params.yaml names (the demo's, by URL and sha256), from site; else a
    tiny one trained from scratch."""
    copy_project(root)
    sample_photos(root / "photos")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["scrape"]["sources"][0]["url"] = f"{site}/index.html"
    params["scrape"]["sources"][1]["url"] = f"{site}/scroll.html"
    params["scrape"]["allow_private"] = [site.removeprefix("http://")]
    if served_base:
        params["base"]["checkpoint"] = f"{site}/models/{PurePosixPath(urlsplit(params['base']['checkpoint']).path).name}"
    else:  # its curves are part of what releases compare
        params["base"].update(checkpoint=None, sha256=None)
    for section, values in tiny_params(remote, detector).items():
        params[section] = {**params.get(section, {}), **values}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return init_repo(root, "the pipeline")


def tiny_params(remote: Path, detector: Path) -> dict:
    train = {"kimg": 0.016, "batch": 4, "workers": 0, "checkpoint_every": 2, "sample_every": 2, "samples": 4}
    return {
        "base": {**train, "model": {"size": 32, "style_dim": 32, "n_mlp": 1, "channel_max": 32, "channel_base": 256}},
        "finetune": train,
        "evaluate": {**pinned(detector), "num_generated": 16, "batch_size": 8,
                     "kid_subsets": 4, "kid_subset_size": 8},
        "portraits": {"projection": {"steps": 4, "n_mean_latent": 64}},
        "nightly": {"remote": str(remote), "timezone": "Europe/Paris", "lock_timeout_s": 2},
    }


def nightly_summary(project: Path, deployment) -> dict:
    """Trigger one run of the served deployment, wait for it, return its reports/nightly.json."""
    from prefect.deployments import run_deployment

    state = run_deployment(deployment.id, timeout=900).state
    assert state.is_completed(), f"{state}: see {project / 'schedule.log'}"
    return json.loads((project / "reports/nightly.json").read_text())


@pytest.mark.slow
def test_nightly_deployment_publishes_then_rebuilds_nothing_then_refuses_a_held_workspace(tmp_path, detector_path):  # noqa: F811 (a fixture)
    from prefect.deployments import run_deployment

    from styleforge.app.samplesite import serve

    remote = tmp_path / "remote"
    with serve(0) as site:
        # as a user's nightly runs: fine-tuning the pretrained base params.yaml names, by URL
        project = tiny_project(tmp_path / "project", site, remote, detector_path, served_base=True)
        with prefect_server(tmp_path / "prefect") as url, scheduled(project, url) as deployment:
            first = nightly_summary(project, deployment)
            assert first["published"] and first["release"] == tags(project)[0], first
            assert json.loads((project / "reports/base.json").read_text())["source"].startswith(f"{site}/models/")
            assert {"scrape", "faces", "augment", "evaluate"} <= set(first["stages_ran"])
            assert first["metrics"]["fid"] is not None and any(remote.rglob("*"))
            assert git(project, "status", "--porcelain", "--", "dvc.lock", "params.yaml") == ""  # all committed

            second = nightly_summary(project, deployment)
            assert second["stages_ran"] == ["scrape"], second  # forced, found nothing new: nothing else reran
            assert not second["published"] and second["reason"] == f"nothing changed since {first['release']}"

            held = os.open(project / ".dvc/tmp/nightly.lock", os.O_RDWR)
            fcntl.flock(held, fcntl.LOCK_EX)  # as if another nightly run were working here
            try:
                before = (project / "reports/scrape.json").stat().st_mtime_ns
                state = run_deployment(deployment.id, timeout=300).state
            finally:
                os.close(held)
            assert state.is_failed() and "WorkspaceBusy" in state.message
            assert (project / "reports/scrape.json").stat().st_mtime_ns == before and tags(project) == [first["release"]]

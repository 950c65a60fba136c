"""Releases: the metric gate, then DVC data to the remote and a git commit + tag that point at it.

A release is an annotated tag `nightly-YYYYMMDD` (`-2`, `-3` for more in a day) on a commit of
RELEASE_FILES, every metric dvc.yaml keeps out of the DVC cache (committed_metrics) and the
night's page (reports/releases/<tag>/: flows/gallery.py says why in git); cached outputs, the
DVCLive curves among them, are what `dvc push` sends. So `dvc metrics diff TAG1 TAG2` and
`dvc plots diff TAG1 TAG2` compare every stage's figures and the training curves of two nights.
The data is pushed before the tag exists, so `git checkout TAG && dvc pull` always finds it; the
remote itself is in the committed .dvc/config.

The gate compares `nightly.gate.metric` with the last release (the newest nightly tag in HEAD's
history). When the metric was not measured (evaluate skipped it) the rule is:
- no release yet: publish (nothing to compare with);
- measured in neither: publish, saying no metric gated it (else a project without Inception
  weights could never release again);
- measured in the last release only: hold (nothing shows this model is not worse);
- measured in this run only: publish as the first measured release.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from styleforge.core.config import GateParams, NightlyParams
from styleforge.core.reports import report_path

METRICS_FILE = str(report_path("evaluate"))  # reports/evaluate.json: FID, KID
RELEASE_FILES = ("dvc.yaml", "dvc.lock", "params.yaml", ".dvc/config", METRICS_FILE)
COMPARED_FILES = ("dvc.yaml", "params.yaml", METRICS_FILE)  # and the cached data, by `dvc diff`
TAG_PREFIX = "nightly-"
REMOTE_NAME = "nightly"
# used only where git has no identity configured, so a fresh machine can still commit
FALLBACK_IDENTITY = ("-c", "user.name=styleforge nightly", "-c", "user.email=nightly@styleforge.invalid")


class ReleaseError(RuntimeError):
    """git or DVC refused; the message carries their output."""


@dataclass(frozen=True)
class Release:
    tag: str
    commit: str
    metrics: dict


@dataclass(frozen=True)
class Verdict:
    publish: bool
    reason: str


@dataclass(frozen=True)
class Outcome:
    published: bool
    reason: str
    release: Release | None  # the release in force now: the new one, or the one kept
    previous: Release | None  # the release before this run (None: there was none)


def _run(cmd: list[str], root: Path) -> str:
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ReleaseError(f"{' '.join(cmd[:3])} ... failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout.strip()


def git(root: Path, *args: str) -> str:
    return _run(["git", *args], root)


def dvc(root: Path, *args: str) -> str:
    return _run([sys.executable, "-m", "dvc", *args], root)  # the DVC installed beside styleforge


def _git_output(root: Path, *args: str) -> bytes | None:
    """git's stdout, or None where git says no (a missing tag, file or identity)."""
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True)
    return proc.stdout if proc.returncode == 0 else None


def _git_ok(root: Path, *args: str) -> bool:
    return _git_output(root, *args) is not None


def file_at(root: Path, rev: str, name: str) -> bytes | None:
    """The file `name` as committed at rev (a tag or a commit); None where it was not."""
    return _git_output(root, "show", f"{rev}:{name}")


def last_release(root: Path) -> Release | None:
    found = _git_output(root, "describe", "--tags", "--abbrev=0", "--match", f"{TAG_PREFIX}*")
    if found is None:
        return None
    tag = found.decode().strip()
    metrics = file_at(root, tag, METRICS_FILE)
    return Release(tag, git(root, "rev-list", "-n", "1", tag), json.loads(metrics) if metrics else {})


def judge(metrics: dict, last: Release | None, gate: GateParams) -> Verdict:
    """Publish unless the new model is worse than the last release by more than the margin."""
    name = gate.metric
    new = metrics.get(name)
    if last is None:
        return Verdict(True, f"first release ({name}: {_fmt(new)})")
    old, why = last.metrics.get(name), metrics.get("skipped", "not measured")
    if new is None and old is None:
        return Verdict(True, f"{name} not measured here nor in {last.tag} ({why}): published without a metric gate")
    if new is None:
        return Verdict(False, f"{name} not measured in this run ({why}) but {last.tag} has {_fmt(old)}: "
                              "nothing shows this model is not worse")
    if old is None:
        return Verdict(True, f"{name} {_fmt(new)}: the first measured release ({last.tag} has none)")
    worse = new < old - gate.margin if gate.higher_is_better else new > old + gate.margin
    direction = "higher" if gate.higher_is_better else "lower"
    return Verdict(not worse, f"{name} {_fmt(new)} vs {_fmt(old)} in {last.tag} ({direction} is better, "
                              f"margin {gate.margin}): {'worse' if worse else 'not worse'}")


def _fmt(value: float | None) -> str:
    return "null" if value is None else f"{value:.4g}"


def changed_since(root: Path, release: Release) -> bool:
    """Whether the pipeline, its params, its metrics or any data DVC caches differ from the release.

    dvc.lock is not compared as bytes: it also hashes uncached reports (the run time and counts
    of the nightly's forced scrape) that change every night while the model does not.
    """
    for name in COMPARED_FILES:
        path = root / name
        if file_at(root, release.commit, name) != (path.read_bytes() if path.exists() else None):
            return True
    return any(json.loads(dvc(root, "diff", "--json", "--targets", *pipeline_outputs(root), "--", release.commit)
                          or "{}").values())


def free_tag(root: Path, day: date) -> str:
    """nightly-YYYYMMDD, or the first free nightly-YYYYMMDD-N (N = 2, 3, ...) on a busy day."""
    base = tag = f"{TAG_PREFIX}{day:%Y%m%d}"
    suffix = 1
    while _git_ok(root, "rev-parse", "-q", "--verify", f"refs/tags/{tag}"):
        suffix += 1
        tag = f"{base}-{suffix}"
    return tag


def read_metrics(root: Path) -> dict:
    path = root / METRICS_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _pipeline_outs(root: Path) -> list:
    """The outputs of the project's own dvc.yaml (not of recipes/ or any other dvc.yaml)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return [out for out in repo.index.outs if Path(out.stage.path) == root / "dvc.yaml"]


def pipeline_outputs(root: Path) -> list[str]:
    """The cached outputs of the project's pipeline: what `dvc diff` compares between releases (a
    recipe's data, absent from a nightly workspace, must not make every night look changed)."""
    return sorted({Path(out.fs_path).relative_to(root).as_posix() for out in _pipeline_outs(root) if out.use_cache})


def committed_metrics(root: Path) -> list[str]:
    """Every metrics file the pipeline's dvc.yaml declares with `cache: false` (each stage's
    reports/<stage>.json, DVCLive's metrics.json): only git can carry them to a tag. Read from DVC's
    own index, which resolves the stages as `dvc repro` does (no dvc command lists outputs with
    their cache flag); other dvc.yaml files (recipes/) are not the nightly's and stay out."""
    return sorted(Path(out.fs_path).relative_to(root).as_posix() for out in _pipeline_outs(root)
                  if out.metric and not out.use_cache)


def publish(root: Path, remote: str, day: date, message: str) -> Release:
    """dvc push to `remote` (made the default remote), then commit RELEASE_FILES and the night's
    page and tag (the nightly flow then rewrites reports/history.html, kept or published)."""
    from styleforge.flows import gallery  # here: the gallery reads releases through this module

    dvc(root, "remote", "add", "--default", "--force", REMOTE_NAME, remote)
    dvc(root, "push", "--remote", REMOTE_NAME)
    identity = () if _git_ok(root, "config", "user.email") else FALLBACK_IDENTITY
    tag = free_tag(root, day)
    page = gallery.keep_release_page(root, tag, message)
    committed = dict.fromkeys((*RELEASE_FILES, *committed_metrics(root)))
    paths = [name for name in committed if (root / name).exists()] + [page.relative_to(root).as_posix()]
    git(root, "add", "--force", "--", *paths)  # --force: reports/ is git-ignored, its metrics are not
    if not _git_ok(root, "diff", "--cached", "--quiet", "HEAD", "--", *paths):
        # only these paths: whatever else an engineer has staged stays out of the release
        git(root, *identity, "commit", "--quiet", "-m", f"{tag}: {message}", "--", *paths)
    git(root, *identity, "tag", "--annotate", tag, "-m", message)
    return Release(tag, git(root, "rev-parse", "HEAD"), read_metrics(root))


def release(root: Path, nightly: NightlyParams, day: date) -> Outcome:
    """Gate this workspace's model against the last release; publish it or keep the last one."""
    root = Path(root).resolve()
    if not _git_ok(root, "rev-parse", "--verify", "HEAD"):
        raise ReleaseError(f"{root} is not a git repository with a commit: releases are git tags")
    last = last_release(root)
    if last is not None and not changed_since(root, last):
        return Outcome(False, f"nothing changed since {last.tag}", last, last)
    verdict = judge(read_metrics(root), last, nightly.gate)
    if not verdict.publish:
        return Outcome(False, f"{verdict.reason}; {last.tag} stays the release", last, last)
    return Outcome(True, verdict.reason, publish(root, nightly.remote, day, verdict.reason), last)

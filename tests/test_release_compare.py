"""Two nightly releases of the real pipeline (the repo's dvc.yaml, tiny params, real git and a DVC
folder remote) compare with DVC's own commands: `dvc metrics diff TAG1 TAG2` lists every stage's
report and the DVCLive summaries, `dvc plots diff TAG1 TAG2` draws the training curves of both."""

import json
import subprocess
import sys
from datetime import date

import pytest
import yaml

from styleforge.core.config import GateParams, NightlyParams
from styleforge.flows.release import dvc, release
from tests.test_evaluate import detector_path  # noqa: F401 (a fixture)
from tests.test_nightly import tiny_project
from tests.test_plots import training_charts


def stage_reports(project) -> set[str]:
    """reports/<stage>.json of every stage."""
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    return {f"reports/{name}.json" for name in stages}


@pytest.mark.slow
def test_metrics_diff_and_plots_diff_between_two_nightly_tags_cover_every_stage_and_the_curves(tmp_path,
                                                                                               detector_path):  # noqa: F811 (a fixture)
    from styleforge.app.samplesite import serve

    nightly = NightlyParams(remote=str(tmp_path / "remote"), gate=GateParams(margin=1e9))  # publish both nights
    with serve(0) as site:
        project = tiny_project(tmp_path / "project", site, tmp_path / "remote", detector_path)
        dvc(project, "repro")
        first = release(project, nightly, date(2026, 11, 23)).release.tag
        params = yaml.safe_load((project / "params.yaml").read_text())
        params["finetune"]["kimg"] *= 2  # the second night fine-tunes longer: the run resumes, its curves grow
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        dvc(project, "repro")
        outcome = release(project, nightly, date(2026, 11, 24))
    assert outcome.published, outcome.reason
    second = outcome.release.tag

    metrics = json.loads(dvc(project, "metrics", "diff", "--all", "--json", first, second))
    expected = stage_reports(project) | {"dvclive/base/metrics.json", "dvclive/finetune/metrics.json"}
    assert expected <= set(metrics), sorted(metrics)
    for path in expected:  # figures at both tags (a file missing at a tag has None on that side)
        assert any(f["old"] is not None and f["new"] is not None for f in metrics[path].values()), (path, metrics[path])
    assert metrics["reports/finetune.json"]["steps"]["diff"] > 0  # and what changed, changed
    table = dvc(project, "metrics", "diff", first, second)
    assert "reports/finetune.json" in table and "dvclive/finetune/metrics.json" in table, table

    charts = training_charts()
    plots = json.loads(dvc(project, "plots", "diff", "--json", first, second, "--targets", *charts))
    assert not plots.get("errors"), plots["errors"]
    for name in charts:
        (chart,) = plots["data"][name]
        values = chart["content"]["data"]["values"]
        assert chart["revisions"] == [first, second] and {row["rev"] for row in values} == {first, second}, name
        last_kimg = {rev: max(float(row["kimg"]) for row in values if row["rev"] == rev) for rev in (first, second)}
        grew = last_kimg[second] > last_kimg[first]
        assert grew == name.startswith("finetune"), (name, last_kimg)  # base did not train again
    # the whole page too, images included: every plot of dvc.yaml loads at both tags
    page = subprocess.run([sys.executable, "-m", "dvc", "plots", "diff", "-o", "page", first, second], cwd=project,
                          capture_output=True, text=True)
    assert page.returncode == 0 and not page.stderr, page.stderr

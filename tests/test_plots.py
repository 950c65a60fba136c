"""`dvc plots show` as the project configures it (.dvc/config's plots.html_template, dvc.yaml's
plots) on real DVCLive output of the base and finetune stages on tiny models, opened from the
file system in headless Chromium: every training chart draws its curves with kimg on x, and no
request leaves the file system."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from plot_templates.build import cdn_packages
from styleforge.core.config import BaseParams, EvaluateParams, FacesParams, FinetuneParams
from styleforge.tasks import base as base_stage
from styleforge.tasks import finetune as finetune_stage
from styleforge.tasks.training import KIMG_CURVES, LiveLog
from tests.browser import browser_log, chromium, requests_sent
from tests.conftest import REPO, copy_project
from tests.test_finetune import make_dataset

TRAIN = dict(batch=4, workers=0, log_every=1, r1_every=2, pl_every=2, ada_interval=2, ada_kimg=0.5, augment_p=0.3,
             ema_kimg=0.01, checkpoint_every=8, sample_every=8, samples=4)
STEPS = 8
# Before the page's scripts: keep what each vegaEmbed call returns (its vega View), which the page drops.
KEEP_EMBEDS = """
window.embeds = [];
(() => {  // a function scope: a global `let` would shadow window.vegaEmbed for the page's scripts
  let real;
  Object.defineProperty(window, "vegaEmbed", {
    configurable: true,
    set(value) { real = value; },
    get() { return real && ((...args) => { const done = real(...args); window.embeds.push(done); return done; }); },
  });
})();
"""
# Each chart: its title, its x field, the series its data holds, and the points of every line it drew.
CHARTS = """
const reply = arguments[arguments.length - 1];
Promise.all(window.embeds).then(results => reply(results.map(({spec, view}) => {
  const lines = [];
  const walk = mark => {
    if (mark.marktype === "line") lines.push(mark.items.filter(p => isFinite(p.x) && isFinite(p.y)).length);
    for (const item of mark.items || []) for (const child of item.items || []) walk(child);
  };
  walk(view.scenegraph().root);
  const dash = spec.encoding.strokeDash;  // what tells a chart's curves apart, when it has several
  return {title: spec.title.text, x: spec.encoding.x.field, lines,
          series: [...new Set(spec.data.values.map(d => dash ? d[dash.field] : "one"))]};
})), error => reply({error: String(error)}));
"""


def training_charts() -> dict[str, int]:
    """dvc.yaml's top-level plots that draw DVCLive curves, with the number of curves each draws."""
    plots = [next(iter(entry.items())) for entry in yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
             if isinstance(entry, dict)]
    return {name: sum(len(fields) if isinstance(fields, list) else 1 for fields in props["y"].values())
            for name, props in plots if any(path.startswith("dvclive/") for path in props.get("y", {}))}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The project's files in a DVC project with its committed .dvc/config, after the base stage
    (from scratch) and the finetune stage ran on tiny models: DVCLive output, grids, reports."""
    root = copy_project(tmp_path_factory.mktemp("plots") / "project")
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "--quiet"], cwd=root, check=True)
    shutil.copyfile(REPO / ".dvc/config", root / ".dvc/config")
    faces = root / "data/faces"
    faces.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(faces / f"{i}.png")
    model = dict(size=16, style_dim=16, n_mlp=1, channel_multiplier=1, channel_max=16)
    base_stage.run(BaseParams(kimg=STEPS * 4 / 1000, model=model, **TRAIN), FacesParams(), root=root)
    make_dataset(root / "data/train")
    finetune_stage.run(FinetuneParams(kimg=STEPS * 4 / 1000, freeze_d=1, **TRAIN), EvaluateParams(), FacesParams(),
                       root=root)
    return root


def test_kimg_curves_start_empty_and_a_resumed_run_replaces_what_the_killed_one_logged_past_its_checkpoint(tmp_path):
    def rows(group: str) -> list[list[str]]:
        return [line.split("\t") for line in (tmp_path / "plots/kimg" / f"{group}.tsv").read_text().splitlines()]

    stats = {"loss_g": 0.5, "loss_d": 1.5, "d_real": 0.1, "d_fake": -0.1, "ada_p": 0.0, "ada_rt": 0.6,
             "sec_per_kimg": 10.0, "images_per_s": 100.0}
    live = LiveLog(tmp_path, resume=False)
    assert {group: rows(group) for group in KIMG_CURVES} == {  # a run that trains nothing leaves the headers
        group: [["step", "kimg", *fields]] for group, fields in KIMG_CURVES.items()}
    for step in range(1, 7):
        live.log(step, step * 0.004, stats | ({"r1": 0.01} if step % 2 == 0 else {}))
    live.end()  # killed after step 6; its last checkpoint was at step 4

    resumed = LiveLog(tmp_path, resume=True)
    resumed.log(5, 0.02, stats)
    assert [row[:2] for row in rows("losses")[1:]] == [[str(s), str(s * 0.004)] for s in range(1, 6)]
    assert [row[0] for row in rows("r1")[1:]] == ["2", "4"]  # rows only where R1 was measured
    assert rows("pl")[1:] == []
    resumed.end()


def test_the_page_template_carries_the_scripts_dvc_render_would_load_from_its_cdn():
    page = (REPO / "plot_templates/offline.html").read_text()
    assert re.findall(r'<script data-package="([^"]+)">', page) == cdn_packages()
    assert "{plot_divs}" in page and "{scripts}" not in page  # DVC's CDN script tags have nowhere to go


def test_dvc_plots_show_draws_every_training_chart_offline_with_kimg_on_x(trained):
    charts = training_charts()
    assert len(charts) == 10  # five per stage: losses, D outputs, R1 + path length, ADA, speed
    images = ["reports/base_samples.png", "reports/finetune_samples.png", "reports/finetune_vs_base.png"]
    out = trained / "plots_page"
    subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "-o", str(out), *charts, *images], cwd=trained,
                   check=True, capture_output=True)
    for table in (trained / "dvclive" / stage / "plots/kimg" / f"{group}.tsv" for stage in ("base", "finetune")
                  for group in KIMG_CURVES):
        header, *rows = table.read_text().splitlines()
        assert header.split("\t")[:2] == ["step", "kimg"] and len(rows) >= 2, table

    with chromium() as driver:
        driver.execute("executeCdpCommand", {"cmd": "Page.addScriptToEvaluateOnNewDocument",
                                             "params": {"source": KEEP_EMBEDS}})
        driver.get((out / "index.html").as_uri())
        drawn = driver.execute_async_script(CHARTS)
        shown = driver.execute_script("return [...document.images].map(i => [i.src, i.complete && i.naturalWidth]);")
        sent = requests_sent(driver)
        console = browser_log(driver, "browser")

    assert sorted(chart["title"] for chart in drawn) == sorted(charts), drawn
    for chart in drawn:
        assert chart["x"] == "kimg" and len(chart["series"]) == charts[chart["title"]], chart
        # each series (file::field) is a line of at least two points
        assert len([points for points in chart["lines"] if points >= 2]) >= len(chart["series"]), chart
    assert len(shown) == len(images) and all(width for _, width in shown), shown
    assert sent and all(url.startswith(("file://", "data:")) for url in sent), sent
    assert not [line for line in console if line["level"] == "SEVERE"], console

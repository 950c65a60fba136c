"""The gallery (flows/gallery.py): reports/index.html over a small real run, and each release's
page and reports/history.html over two real releases, each loaded in headless Chromium from the
file system and over HTTP: every picture decodes, every link resolves, the console stays clean,
and no request leaves the page's folder (any other goes to a proxy that is not there)."""

import http.server
import json
import shutil
import subprocess
import threading
import time
import urllib.request
from contextlib import contextmanager
from datetime import date, datetime
from functools import partial
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from selenium import webdriver
from skimage import data
from typer.testing import CliRunner

from styleforge.app.cli import app
from styleforge.app.samplesite import QuietThreadingHTTPServer, serve
from styleforge.core.video import write_frames
from styleforge.flows import gallery
from styleforge.flows.release import file_at, git, release
from styleforge.tasks.stages import STAGES, run_stage
from tests.browser import browser_log, chromium, requests_sent
from tests.conftest import REPO
from tests.test_nightly import make, nightly, project  # noqa: F401 (project: a fixture)

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore:LPIPS unavailable:UserWarning")]

STEPS = 8
TRAIN = {"kimg": STEPS * 4 / 1000, "batch": 4, "workers": 0, "log_every": 1, "checkpoint_every": 4, "sample_every": 4,
         "samples": 4, "r1_every": 2, "pl_every": 2, "ada_interval": 2, "ada_kimg": 0.5, "augment_p": 0.3,
         "ema_kimg": 0.01}
TINY = {
    "base": {**TRAIN, "model": {"size": 16, "style_dim": 32, "n_mlp": 2, "channel_max": 32}},
    "finetune": {**TRAIN, "freeze_d": 1, "snapshot_kimg": TRAIN["kimg"] / 2},  # two snapshots
    "blend": {"swap_res": 8, "sweep_seeds": [0, 1], "sefa_components": 3},
    "portraits": {"projection": {"steps": 4, "n_mean_latent": 100}},
    "evaluate": {"num_generated": 8, "batch_size": 8},
    "walk": {"seeds": [0, 1], "frames": 8, "morph_frames": 6},
}
DAY = date(2026, 11, 23)


@pytest.fixture(scope="module")
def run_root(tmp_path_factory) -> Path:
    """A small real run: every stage as `styleforge stage NAME` runs it, on the repo's params.yaml
    shrunk to tiny models, from a scrape of the sample site to the videos, with a photo and a file
    that is none, and no Inception weights."""
    root = tmp_path_factory.mktemp("run")
    photos = root / "photos"
    photos.mkdir()
    Image.fromarray(data.astronaut()).save(photos / "astronaut.png")
    (photos / "notes.txt").write_text("not a photo")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared 2-core box: a second thread only adds contention
    with serve(0) as site:
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["scrape"] |= {"sources": [{"url": f"{site}/index.html", "max_images": 12}], "per_host_rate": 500,
                             "allow_private": [site.removeprefix("http://")]}
        for section, values in TINY.items():
            params[section] |= values
        params["base"] |= {"checkpoint": None, "sha256": None}  # trained here: the page shows its curves too
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        for stage in STAGES:
            run_stage(stage, root)
    torch.set_num_threads(threads)
    return root


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextmanager
def served(folder: Path):
    """folder over HTTP on 127.0.0.1; yields its base URL."""
    server = QuietThreadingHTTPServer(("127.0.0.1", 0), partial(QuietFiles, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class Browser:
    """Headless Chromium as the scraper runs it (chromedriver under the process supervisor), but
    with pictures shown, every request other than to the test's HTTP server sent to a proxy that
    is not there, and Chrome's network events and console kept."""

    def __init__(self, driver: webdriver.Remote, server: str, served_root: Path):
        self.driver, self.server, self.served_root = driver, server, served_root

    def url(self, path: Path) -> str:
        return f"{self.server}/{path.relative_to(self.served_root).as_posix()}"

    def look(self, url: str) -> dict:
        """Load url and wait for its videos; what a reader meets there."""
        self._drain()
        self.driver.get(url)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.driver.execute_script(
                "return [...document.querySelectorAll('video')].some(v => v.readyState < 1 && !v.error)"):
            time.sleep(0.1)
        seen = self.driver.execute_script("""return {
            images: [...document.images].map(i => [i.currentSrc, i.complete && i.naturalWidth]),
            links: [...document.querySelectorAll('a[href]')].map(a => a.href),
            ids: [...document.querySelectorAll('[id]')].map(e => e.id),
            videos: [...document.querySelectorAll('video')].map(v => [v.currentSrc, v.readyState,
                                                                       v.error && v.error.code]),
        }""")
        seen["requests"] = requests_sent(self.driver)
        seen["errors"] = [entry for entry in browser_log(self.driver, "browser") if entry["level"] == "SEVERE"]
        return seen

    def _drain(self) -> None:
        for kind in ("performance", "browser"):
            browser_log(self.driver, kind)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One Chromium for the module, and an HTTP server over every test's temp folder."""
    served_root = tmp_path_factory.getbasetemp()
    with served(served_root) as server, chromium(bypass=server.removeprefix("http://")) as driver:
        yield Browser(driver, server, served_root)


def assert_whole_and_offline(seen: dict, folder_url: str) -> None:
    """Every picture decoded, every video loaded, every link resolves, the console has no error,
    and every request stayed in the page's folder."""
    assert seen["images"] and all(width for _, width in seen["images"]), seen["images"]
    assert all(ready >= 1 and error is None for _, ready, error in seen["videos"]), seen["videos"]
    assert not seen["errors"], seen["errors"]
    # data: URLs are inline, fetched from nowhere (Chromium's own video controls draw with them)
    outside = [url for url in seen["requests"] if not url.startswith((folder_url, "data:"))]
    assert seen["requests"] and not outside, outside
    for link in seen["links"]:
        target, fragment = urldefrag(link)
        assert target.startswith(folder_url), link
        if fragment:
            assert fragment in seen["ids"], link
        elif target.startswith("file:"):
            assert Path(unquote(urlsplit(target).path)).is_file(), link
        else:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(target) as response:
                assert response.status == 200, link


def both_ways(browser: Browser, page: Path) -> list[dict]:
    """The page as seen from the file system and over HTTP, each checked whole and offline."""
    seen = []
    for url, folder in ((page.as_uri(), page.parent.as_uri() + "/"),
                        (browser.url(page), browser.url(page.parent) + "/")):
        seen.append(browser.look(url))
        assert_whole_and_offline(seen[-1], folder)
    return seen


def texts(browser: Browser, css: str) -> list[str]:
    return browser.driver.execute_script(f"return [...document.querySelectorAll({css!r})].map(e => e.textContent)")


def test_the_run_page_shows_every_part_of_a_real_run(run_root, browser):
    page, history = gallery.write_pages(run_root)
    assert page == run_root / "reports/index.html" and history == run_root / "reports/history.html"
    from_files, _ = both_ways(browser, page)  # the HTTP view is left open for the checks below

    shown = {unquote(src.rsplit("/reports/", 1)[1]) for src, _ in from_files["images"]}
    assert {"faces.png", "faces_rejects.png", "augment.png", "base_samples.png", "finetune_vs_base.png",
            "finetune_samples.png", "blend_sweep.png", "portraits.png", "edit.png", "evaluate/samples.png"} <= shown
    run_key = json.loads((run_root / "reports/finetune.json").read_text())["run_key"]
    copies = {f"index_files/data/portraits/astronaut/{kind}.png" for kind in ("input", "reconstruction", "portrait")}
    copies |= {f"index_files/data/finetune_ckpt/{run_key}/snapshots/snapshot-{step:07d}.png" for step in (4, 8)}
    assert copies <= shown  # from outside reports/: copied beside the page
    assert len({src for src, *_ in from_files["videos"]}) == 2

    missing = " ".join(texts(browser, ".missing"))
    assert "notes.txt: skipped (bad_image:" in missing  # the file that is no photo
    assert "no earlier nightly release" in missing and "not a git repository" not in missing
    assert "no Inception weights" in missing  # evaluate's reason, beside the empty FID
    metrics = browser.driver.execute_script(
        "return [...document.querySelectorAll('#metrics tr')].map(r => [...r.cells].map(c => c.textContent))")
    assert metrics[:4] == [["metric", "this run", "no earlier release"], ["fid", "—", "—"], ["kid", "—", "—"],
                           ["kid_std", "—", "—"]]
    assert "has not run" not in missing and "not found" not in missing

    charts = browser.driver.execute_script(
        "return [...document.querySelectorAll('.chart svg')].map(s => s.querySelectorAll('path, polyline').length)")
    assert len(charts) == 2 and all(charts), charts  # base and finetune, drawn
    rows = browser.driver.execute_script(
        "return [...document.querySelectorAll('#snapshots tr')].slice(1)"
        ".map(r => [r.className, r.cells[0].textContent])")
    assert rows == [["", "4"], ["picked", "8"]]  # pick: last

    # the outline sits on the sweep's column of the cut in use
    columns = json.loads((run_root / "reports/blend.json").read_text())["sweep_columns"]
    image, cut = browser.driver.execute_script(
        "const m = document.querySelector('#blend .marked'); return [m.querySelector('img'), m.querySelector('.cut')]"
        ".map(e => { const r = e.getBoundingClientRect(); return [r.left, r.width]; });")
    column = image[1] / len(columns)
    assert cut[0] - image[0] == pytest.approx(columns.index(f"cut {TINY['blend']['swap_res']}") * column, abs=1)
    assert cut[1] == pytest.approx(column, abs=1)


def test_a_run_that_stopped_early_gets_a_page_that_says_what_is_missing(run_root, tmp_path, browser):
    """Only the blend has run; the page is asked for outside reports/, so what it shows is copied."""
    (tmp_path / "reports").mkdir()
    for name in ("blend.json", "blend_sweep.png"):
        shutil.copy2(run_root / "reports" / name, tmp_path / "reports" / name)
    out = tmp_path / "site/run.html"
    result = CliRunner().invoke(app, ["report", "--root", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.split() == [str(out), str(tmp_path / "reports/history.html")]
    assert (tmp_path / "site/run_files/reports/blend_sweep.png").read_bytes() == (
        run_root / "reports/blend_sweep.png").read_bytes()

    both_ways(browser, out)
    sections = browser.driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('section')].map(s => "
        "[s.id, [...s.querySelectorAll('.missing')].map(e => e.textContent)]))")
    assert sections == {  # one line for each part whose inputs are missing
        "dataset": ["no reports/scrape.json, faces.json or augment.json: the dataset stages have not run"],
        "training": ["no reports/base.json: the base stage has not run",
                     "no reports/finetune.json: the finetune stage has not run"],
        "finetune": ["no reports/finetune.json: the finetune stage has not run"],
        "blend": [],
        "portraits": ["no reports/portraits.json: the portraits stage has not run"],
        "edits": ["no reports/edit.png nor data/blend/sefa.npz: the blend stage has not run"],
        "snapshots": ["no snapshots: reports/finetune.json is missing or lists none"],
        "videos": ["no reports/walk.json: the walk stage has not run"],
        "metrics": ["no reports/evaluate.json: the evaluate stage has not run"],
        "params": ["no earlier nightly release in this history: nothing to compare with"],
    }
    assert not texts(browser, "header p a")  # history.html is not beside this page: no link to it

    history = browser.look(tmp_path.joinpath("reports/history.html").as_uri())
    assert not history["errors"] and "is not a git repository" in " ".join(texts(browser, ".missing"))


def test_each_release_keeps_its_page_and_the_history_links_every_night(
        project, run_root, browser, tmp_path):  # noqa: F811 (project: the fixture imported above)
    for folder in ("reports", "dvclive", "data/portraits", "data/finetune_ckpt", "data/blend"):
        shutil.copytree(run_root / folder, project / folder, dirs_exist_ok=True)
    make(project, "v1", 10.0)
    first = release(project, nightly(), DAY).release.tag
    noise = np.random.default_rng(0).integers(0, 256, (24, 256, 256, 3), dtype=np.uint8)  # H.264 cannot shrink it
    big = write_frames(str(project / "reports/videos/walk.mp4"), noise, fps=8, total=len(noise))
    assert big.stat().st_size > gallery.RELEASE_COPIES.video_bytes
    make(project, "v2", 9.0)
    second = release(project, nightly(), DAY).release.tag
    assert (first, second) == ("nightly-20261123", "nightly-20261123-2")

    for tag in (first, second):  # in the release's own commit, with everything it shows
        folder = project / "reports/releases" / tag
        committed = set(git(project, "ls-tree", "-r", "--name-only", tag, "--", f"reports/releases/{tag}").split())
        assert committed == {p.relative_to(project).as_posix() for p in folder.rglob("*") if p.is_file()}
        assert f"reports/releases/{tag}/index.html" in committed
        for picture in (path for path in folder.rglob("index_files/**/*.*") if path.suffix != ".mp4"):
            assert Image.open(picture).width <= gallery.RELEASE_COPIES.max_width, picture
    videos = {tag: sorted(path.name for path in (project / "reports/releases" / tag).rglob("*.mp4"))
              for tag in (first, second)}
    assert videos == {first: ["morph-astronaut.mp4", "walk.mp4"], second: ["morph-astronaut.mp4"]}
    assert file_at(project, first, f"reports/releases/{second}/index.html") is None

    # the second night's page: metrics beside the first's, the params that changed
    both_ways(browser, project / "reports/releases" / second / "index.html")
    header = texts(browser, "header p")[0]
    assert second in header and "fid 9 vs 10 in nightly-20261123" in header
    metrics = browser.driver.execute_script(
        "return [...document.querySelectorAll('#metrics tr')].map(r => [...r.cells].map(c => c.textContent))")
    assert metrics == [["metric", "this run", first], ["fid", "9", "10"]]
    changed = browser.driver.execute_script(
        "return [...document.querySelectorAll('#params tr')].slice(1).map(r => [...r.cells].map(c => c.textContent))")
    assert changed == [["make.content", '"v1"', '"v2"'], ["make.fid", "10.0", "9.0"]]
    assert texts(browser, "#videos .missing") == [
        f"reports/videos/walk.mp4 ({big.stat().st_size / 1e6:.1f} MB) is bigger than a release copies: `dvc pull` at "
        "the release's tag brings it back"]

    # history: every night, newest first; a night's folder missing from the workspace comes back from
    # git; a release from before pages were kept is listed without one; the last run kept the release
    shutil.rmtree(project / "reports/releases" / first)
    git(project, "tag", "--annotate", "nightly-20261101", "-m", "first release", "HEAD~2")  # the pipeline's commit
    kept = f"fid 9.5 vs 9 in {second} (lower is better, margin 0.0): worse; {second} stays the release"
    started = datetime.now().astimezone()  # a night after the releases: nightly.json as flows/nightly.py writes it
    (project / "reports/nightly.json").write_text(json.dumps({
        "started": started.isoformat(), "new_images": 0, "training_images": {"before": 16, "after": 16},
        "stages_ran": ["scrape", "evaluate"], "stages_skipped": ["faces"], "metrics": {"fid": 9.5},
        "previous_release": second, "previous_metrics": {"fid": 9.0}, "published": False, "reason": kept,
        "release": second, "grids": []}))
    history = gallery.write_history(project)
    history_file, _ = both_ways(browser, history)
    assert [unquote(link).rsplit("/reports/", 1)[1] for link in history_file["links"]] == [
        f"releases/{second}/index.html", f"releases/{first}/index.html"]
    rows = browser.driver.execute_script(
        "return [...document.querySelectorAll('tr')].slice(1).map(r => [r.cells[0].innerText, "
        "r.cells[3].textContent, r.querySelectorAll('.thumbs img').length])")
    assert rows == [[second, "9", 3], [first, "10", 3], ["nightly-20261101\nno page kept with this release", "—", 0]]
    assert texts(browser, ".release") == [f"Last nightly run, {started:%Y-%m-%d %H:%M}: kept {second}. {kept}"]
    for link in history_file["links"]:  # each night's page, opened from the history, whole
        seen = browser.look(link)
        assert_whole_and_offline(seen, link.rsplit("/", 1)[0] + "/")

    # a clone at the first tag holds that night's page and everything it shows
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(project), str(clone)], check=True)
    git(clone, "checkout", "--quiet", first)
    assert not (clone / "reports/releases" / second).exists()
    assert_whole_and_offline(browser.look((clone / "reports/releases" / first / "index.html").as_uri()),
                             (clone / "reports/releases" / first).as_uri() + "/")



"""The scrape stage against a real HTTP server on loopback and a real headless Chromium.

The server is the sample site plus /test/ paths that misbehave the ways real servers do; it
records every request, so the tests can count fetches and time retries.
"""

from __future__ import annotations

import html
import io
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from email.utils import formatdate
from functools import cache
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, urlencode, urlsplit

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from styleforge.app.cli import app
from styleforge.app.samplesite import SampleSiteHandler, serve
from styleforge.core.config import ScrapeParams
from styleforge.core.errors import UserError
from styleforge.core.reports import read_report
from styleforge.tasks.scrape import run
from styleforge.tasks.scrape.extract import (
    extract_image_urls,
    largest_srcset_url,
    parse_srcset,
)
from styleforge.tasks.scrape.manifest import COLUMNS, MANIFEST, RAW_DIR
from tests.conftest import REPO

# --- the test server ----------------------------------------------------------------------------


@cache
def noise_jpeg(key: str) -> bytes:
    """A distinct, valid 128x128 JPEG per key (random pixels: no two are near duplicates)."""
    pixels = np.random.default_rng(zlib.crc32(key.encode())).integers(0, 256, (128, 128, 3), np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=85)
    return out.getvalue()


@cache
def bomb_png() -> bytes:
    """A real decompression bomb: 64 megapixels of black in about 60 KB."""
    out = io.BytesIO()
    Image.new("L", (8000, 8000)).save(out, "PNG")
    return out.getvalue()


def giant_png_header() -> bytes:
    """A PNG that declares 400 megapixels and holds almost nothing: past Pillow's own limit."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)  # 8-bit grayscale
    pixels = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


class TrickySite(SampleSiteHandler):
    """The sample site plus misbehaving /test/ paths. Each path (query included) is counted, so
    a test gives its paths a unique ?key= to get a fresh "first request"."""

    hits: list[tuple[float, str]] = []  # (monotonic time, path with query), every request
    seen: Counter[str] = Counter()
    lock = threading.Lock()
    # Ahead of the site's own rules: a user agent asked to wait between requests.
    robots_for_slowbot = b"User-agent: slowbot\nCrawl-delay: 1\nDisallow:\n\n"

    def do_GET(self) -> None:
        with self.lock:
            self.hits.append((time.monotonic(), self.path))
            self.seen[self.path] += 1
            nth = self.seen[self.path]
        url = urlsplit(self.path)
        if url.path == "/robots.txt":
            site_rules = (Path(self.directory) / "robots.txt").read_bytes()
            return self.send_bytes(self.robots_for_slowbot + site_rules, "text/plain")
        route = getattr(self, "route_" + PurePosixPath(url.path).stem.replace("-", "_"), None)
        if url.path.startswith("/test/") and route:
            route(parse_qs(url.query), nth)
        else:
            super().do_GET()

    def image(self, body: bytes | None = None, content_type: str = "image/jpeg") -> None:
        self.send_bytes(noise_jpeg(self.path) if body is None else body, content_type)

    def route_page(self, query: dict, nth: int) -> None:
        """/test/page?img=URL&img=URL: a page that shows the given images."""
        tags = "".join(f'<img src="{html.escape(src)}">' for src in query["img"])
        self.send_bytes(f"<!doctype html><html><body>{tags}</body></html>".encode(), "text/html; charset=utf-8")

    def route_busy(self, query: dict, nth: int) -> None:
        """429 with Retry-After once (?after=SECONDS, or ?after=dateN for an HTTP date N s
        ahead), then an image."""
        if nth > 1:
            return self.image()
        after = query["after"][0]
        if after.startswith("date"):
            after = formatdate(time.time() + float(after.removeprefix("date")), usegmt=True)
        self.send_response(429)
        self.send_header("Retry-After", after)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def route_unstable(self, query: dict, nth: int) -> None:
        """503 (no Retry-After) for the first `fail` requests, then an image."""
        if nth <= int(query["fail"][0]):
            return self.send_bytes(b"try later", "text/plain", 503)
        self.image()

    def route_slow(self, query: dict, nth: int) -> None:
        time.sleep(float(query["delay"][0]))
        self.image()

    def route_huge_declared(self, query: dict, nth: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(50_000_000))
        self.end_headers()
        self.wfile.write(b"\xff" * 65536)

    def route_huge_streamed(self, query: dict, nth: int) -> None:
        """A 2 MB body with no Content-Length (HTTP/1.0: the body ends when the server closes)."""
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        for _ in range(32):
            self.wfile.write(b"\xff" * 65536)

    def route_fake(self, query: dict, nth: int) -> None:
        self.image(b"<!doctype html><html><body>Not found</body></html>")

    def route_wrong_type(self, query: dict, nth: int) -> None:
        self.image(content_type="text/html")

    def route_truncated(self, query: dict, nth: int) -> None:
        jpeg = noise_jpeg(self.path)
        self.image(jpeg[: len(jpeg) * 6 // 10])

    def route_empty(self, query: dict, nth: int) -> None:
        self.image(b"")

    def route_bomb(self, query: dict, nth: int) -> None:
        self.image(bomb_png(), "image/png")

    def route_giant(self, query: dict, nth: int) -> None:
        self.image(giant_png_header(), "image/png")

    def route_reencoded(self, query: dict, nth: int) -> None:
        """The sample site's face-001 saved again at a lower quality: a near duplicate."""
        out = io.BytesIO()
        Image.open(Path(self.directory) / "img" / "face-001.jpg").save(out, "JPEG", quality=60)
        self.image(out.getvalue())


@pytest.fixture(scope="module")
def site():
    with serve(0, TrickySite) as base_url:
        yield base_url


@pytest.fixture(autouse=True)
def hits():
    """The requests made during one test: (monotonic time, path) pairs."""
    with TrickySite.lock:
        TrickySite.hits.clear()
    return TrickySite.hits


def fast(*sources: dict, **overrides) -> ScrapeParams:
    """Params for tests: generous pacing, short timeouts and backoffs. The loopback ports of the
    sources (the test site) are trusted in allow_private, as a user lists the inside site they scrape."""
    trusted = sorted({f"127.0.0.1:{urlsplit(source['url']).port}" for source in sources})
    settings = dict(per_host_rate=500, timeout_s=2, retries=1, backoff_s=0.01, max_retry_after_s=2,
                    scroll_wait_s=1.0, allow_private=trusted)
    return ScrapeParams(sources=list(sources), **settings | overrides)


def page_of(site: str, *images: str) -> dict:
    """A source whose page shows these images (paths on the test server, queries allowed)."""
    return {"url": f"{site}/test/page?" + urlencode([("img", src) for src in images])}


def manifest(root: Path) -> pd.DataFrame:
    return pd.read_parquet(root / MANIFEST)


def status_of(frame: pd.DataFrame) -> dict[str, str]:
    """{path with query: status}, for short asserts."""
    return {_path(url): status for url, status in zip(frame["url"], frame["status"])}


def _path(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def image_hits(hits: list[tuple[float, str]]) -> list[str]:
    images = [path for _, path in hits if path.startswith(("/img/", "/private/", "/test/"))]
    return [path for path in images if not path.startswith("/test/page")]


# --- URL extraction -----------------------------------------------------------------------------


def test_srcset_parsing_follows_the_html_rules():
    assert largest_srcset_url("a.jpg 320w, b.jpg 1280w, c.jpg 640w") == "b.jpg"
    assert largest_srcset_url("a.jpg, b.jpg 2x, c.jpg 1.5x") == "b.jpg"
    assert largest_srcset_url("") is None
    # Image CDNs put commas inside URLs; only a comma after whitespace-free URL text ends it.
    candidates = parse_srcset("https://cdn.test/w_100,h_100/a.jpg 100w,https://cdn.test/w_900,h_900/a.jpg 900w")
    assert [c.url for c in candidates] == ["https://cdn.test/w_100,h_100/a.jpg", "https://cdn.test/w_900,h_900/a.jpg"]
    assert [c.url for c in parse_srcset("a.jpg,, b.jpg 2x")] == ["a.jpg", "b.jpg"]


def test_extraction_resolves_lazy_srcset_picture_and_skips_non_web_urls():
    page = """
      <base href="https://example.test/photos/">
      <div class="gallery">
        <img src="data:image/gif;base64,R0lGOD" data-src="lazy.jpg">
        <img src="small.jpg" srcset="small.jpg 200w, big.jpg 1200w">
        <img data-srcset="x1.jpg 1x, x3.jpg 3x" src="x1.jpg">
        <img data-lazy-src="lazier.jpg"><img data-original="original.jpg#zoom">
        <picture><source srcset="pic.webp 800w" type="image/webp"><img src="pic.jpg"></picture>
        <video><source src="clip.mp4"></video>
        <img src="javascript:void(0)"><img src="mailto:a@b.test"><img src="blob:https://x/1"><img alt="no src">
        <img src="/root.jpg"><img src="http://other.test/abs.jpg"><img src="lazy.jpg">
      </div>
      <img src="outside.jpg">
    """
    base = "https://example.test/photos/"
    assert extract_image_urls(page, "https://example.test/page.html", ".gallery") == [
        base + "lazy.jpg",
        base + "big.jpg",
        base + "x3.jpg",
        base + "lazier.jpg",
        base + "original.jpg",
        base + "pic.webp",
        base + "pic.jpg",
        "https://example.test/root.jpg",
        "http://other.test/abs.jpg",
    ]
    assert extract_image_urls(page, "https://example.test/page.html")[-1] == base + "outside.jpg"


# --- the sample site, static and browser --------------------------------------------------------


def test_static_scrape_of_the_sample_site(site, tmp_path, hits):
    report = run(fast({"url": f"{site}/index.html"}), tmp_path)
    frame = manifest(tmp_path)
    assert list(frame.columns) == list(COLUMNS)
    assert report["outcome"] == "ok" and report["errors"] == []
    assert report["sources"][0]["images_found"] == 51
    assert report["statuses"] == {
        "ok": 43, "duplicate": 0, "near_duplicate": 5, "http_error": 0, "robots": 1,
        "too_large": 0, "bad_content_type": 0, "not_image": 0, "too_small": 2, "blocked_address": 0, "error": 0,
    }  # fmt: skip
    statuses = status_of(frame)
    # srcset: the largest candidate only; lazy and absolute URLs found
    assert statuses["/img/face-010.jpg"] == statuses["/img/face-013@2x.jpg"] == statuses["/img/face-020@2x.jpg"] == "ok"
    assert "/img/face-010-80.jpg" not in statuses and "/img/face-013.jpg" not in statuses
    assert statuses["/img/face-016.jpg"] == statuses["/img/face-021.jpg"] == statuses["/img/face-026.jpg"] == "ok"
    # <picture>: the WebP comes first, its JPEG twin is a near duplicate; so is the smaller astronaut
    assert statuses["/img/face-023.webp"] == "ok" and statuses["/img/face-023.jpg"] == "near_duplicate"
    assert statuses["/img/astronaut-200.jpg"] == "near_duplicate"
    assert statuses["/img/icon.png"] == statuses["/img/astronaut-48.jpg"] == "too_small"
    assert statuses["/private/img/face-097.jpg"] == "robots"
    assert not [path for _, path in hits if path.startswith("/private/")], "robots.txt was not obeyed"

    kept = frame[frame.status == "ok"]
    on_disk = {p.name for p in (tmp_path / RAW_DIR).iterdir() if p.name != "manifest.parquet"}
    assert set(kept.path) == on_disk, "exactly the ok images are on disk, near duplicates are not"
    for row in kept.itertuples():
        assert row.path.startswith(row.sha256) and (tmp_path / RAW_DIR / row.path).is_file()
    by_path = frame.set_index(frame.url.map(_path))
    assert by_path.loc["/img/face-093.gif", "path"].endswith(".gif")
    assert by_path.loc["/img/face-091-cmyk.jpg", "path"].endswith(".jpg")
    rotated = by_path.loc["/img/face-096-rotated.jpg"]
    assert (rotated.width, rotated.height) == (320, 400), "sizes are as displayed, after EXIF orientation"
    assert read_report("scrape", tmp_path)["statuses"] == report["statuses"]


def test_selector_scopes_the_page(site, tmp_path):
    report = run(fast({"url": f"{site}/index.html", "selector": ".gallery", "max_images": 10}), tmp_path)
    frame = manifest(tmp_path)
    assert report["sources"][0]["images_found"] == 10
    assert set(frame.status) == {"ok"} and "/img/icon.png" not in status_of(frame)


def test_browser_scrolls_until_no_new_images_arrive(site, tmp_path, hits):
    report = run(fast({"url": f"{site}/scroll.html", "mode": "browser"}), tmp_path)
    source = report["sources"][0]
    assert source["status"] == "ok"
    assert source["images_found"] == 63, "all five batches of the feed"
    assert source["scrolls"] == 5, "four scrolls that brought a batch, one that brought nothing"
    feed_requests = [path for _, path in hits if path.startswith("/api/scroll")]
    assert feed_requests == [f"/api/scroll?feed=photos&batch={n}" for n in range(5)]
    statuses = status_of(manifest(tmp_path))
    assert statuses["/img/face-032@2x.jpg"] == "ok", "srcset in JS-built images is read too"
    assert statuses["/img/face-089.jpg"] == "ok"
    fetched = Counter(path for _, path in hits if path.startswith("/img/"))
    assert set(fetched) <= set(statuses) and max(fetched.values()) == 1, "the browser loads no image itself"


def test_browser_scrolling_is_bounded_by_scroll_rounds_and_leaves_no_temp_files(site, tmp_path, monkeypatch):
    temp = Path(tempfile.mkdtemp(prefix="t-"))  # short, as the system's: Chromium puts a socket below it
    monkeypatch.setenv("TMPDIR", str(temp))  # the temp folder of every process the scrape starts
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # and of this one, already read
    try:
        report = run(fast({"url": f"{site}/scroll.html", "mode": "browser", "scroll_rounds": 1}), tmp_path)
        # the profile and what Chromium leaves in the temp folder (each night's run) go with the session
        assert list(temp.iterdir()) == []
    finally:
        shutil.rmtree(temp)
    source = report["sources"][0]
    assert (source["scrolls"], source["images_found"]) == (1, 26), "the first batch and one more"


# --- failures that must not stop the run --------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_dead_pages_are_reported_and_not_fatal(site, tmp_path):
    dead = f"http://127.0.0.1:{closed_port()}/index.html"
    params = fast(
        {"url": dead},
        {"url": f"{site}/no-such-page.html"},
        {"url": f"{site}/no-such-page.html", "mode": "browser"},
        {"url": f"{site}/empty.html"},
        {"url": f"{site}/private/gallery.html"},
        page_of(site, "/img/face-001.jpg"),
    )
    report = run(params, tmp_path)
    assert report["outcome"] == "some sources failed"
    assert [s["status"] for s in report["sources"]] == ["failed", "failed", "failed", "failed", "robots", "ok"]
    errors = report["errors"]
    assert "robots.txt" in errors[0] and "Connection" in errors[0]
    assert "HTTP 404" in errors[1] and "HTTP 404" in errors[2]
    assert "no images found" in errors[3] and "robots.txt disallows" in errors[4]
    assert report["statuses"]["ok"] == 1


def test_when_every_source_fails_the_stage_fails_with_each_reason(site, tmp_path):
    sources = [{"url": f"{site}/no-such-page.html"}, {"url": f"{site}/empty.html"}]
    with pytest.raises(UserError, match=r"every source failed:\n.*HTTP 404.*\n.*no images found"):
        run(fast(*sources), tmp_path)
    report = read_report("scrape", tmp_path)
    assert report["outcome"] == "all sources failed" and len(report["errors"]) == 2
    assert manifest(tmp_path).empty, "the manifest and report are written all the same"

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"scrape": fast(*sources).model_dump()}))
    result = CliRunner().invoke(app, ["stage", "scrape", "--params", str(tmp_path / "params.yaml")])
    assert result.exit_code == 2 and "every source failed" in result.output and "HTTP 404" in result.output


# --- HTTP behaviour -----------------------------------------------------------------------------


def test_retry_after_is_honoured_and_capped(site, tmp_path, hits):
    # "20" is capped to max_retry_after_s; "date2" is an HTTP date 2 s ahead (a 1-2 s wait, as
    # HTTP dates count whole seconds), capped too. The backoff alone would wait 0.01 s.
    capped, dated = "/test/busy.jpg?key=ra1&after=20", "/test/busy.jpg?key=ra2&after=date2"
    run(fast(page_of(site, capped, dated), max_retry_after_s=1.2, retries=2, concurrency=2), tmp_path)
    assert status_of(manifest(tmp_path)) == {capped: "ok", dated: "ok"}
    for path, shortest in ((capped, 1.1), (dated, 0.9)):
        times = [t for t, p in hits if p == path]
        assert len(times) == 2 and shortest <= times[1] - times[0] < 2.5, (path, times)


def test_5xx_is_retried_with_doubling_backoff(site, tmp_path, hits):
    path = "/test/unstable.jpg?key=backoff&fail=2"
    run(fast(page_of(site, path), retries=2, backoff_s=0.3), tmp_path)
    times = [t for t, p in hits if p == path]
    assert status_of(manifest(tmp_path))[path] == "ok" and len(times) == 3
    first_wait, second_wait = times[1] - times[0], times[2] - times[1]
    assert 0.28 <= first_wait < 0.6 and 0.58 <= second_wait < 1.2, (first_wait, second_wait)


def test_requests_to_one_host_are_paced(site, tmp_path, hits):
    images = [f"/test/unstable.jpg?key=pace{n}&fail=0" for n in range(6)]
    run(fast(page_of(site, *images), per_host_rate=10, concurrency=4), tmp_path)
    times = sorted(t for t, p in hits if p in images)
    # Unpaced, four threads would send all six within milliseconds; paced, they span 5 intervals.
    assert len(times) == 6 and times[-1] - times[0] >= 0.45


def test_robots_crawl_delay_slows_pacing_for_its_user_agent(site, tmp_path, hits):
    image = "/test/unstable.jpg?key=crawl&fail=0"
    run(fast(page_of(site, image), user_agent="slowbot/1.0"), tmp_path)
    (page_time,), (image_time,) = ([t for t, p in hits if p.startswith(prefix)] for prefix in ("/test/page", image))
    assert image_time - page_time >= 0.95, "robots.txt asks slowbot for a second between requests"


def test_slow_response_times_out(site, tmp_path):
    path = "/test/slow.jpg?key=slow&delay=3"
    started = time.monotonic()
    run(fast(page_of(site, path), timeout_s=0.5, retries=0), tmp_path)
    assert time.monotonic() - started < 2.5
    row = manifest(tmp_path).iloc[0]
    assert row.status == "error" and "timed out" in row.error.lower()


def test_bad_files_are_rejected_with_the_right_status(site, tmp_path):
    expected = {
        "/test/huge-declared.jpg": "too_large",
        "/test/huge-streamed.jpg": "too_large",
        "/test/fake.jpg": "not_image",
        "/test/wrong-type.jpg": "bad_content_type",
        "/test/truncated.jpg?key=t": "not_image",
        "/test/empty.jpg": "not_image",
        "/test/bomb.png": "too_large",
        "/test/giant.png": "too_large",
        "/test/missing.jpg": "http_error",
        "/img/icon.png": "too_small",
    }
    max_bytes = 256 * 1024
    run(fast(page_of(site, *expected), max_bytes=max_bytes), tmp_path)
    frame = manifest(tmp_path)
    assert status_of(frame) == expected
    rows = frame.set_index(frame.url.map(_path))
    assert "Content-Length" in rows.loc["/test/huge-declared.jpg", "error"]
    streamed = rows.loc["/test/huge-streamed.jpg"]
    assert "streamed" in streamed.error and streamed.bytes <= max_bytes + 64 * 1024, "stopped at the cap"
    assert "decompression bomb" in rows.loc["/test/bomb.png", "error"]
    assert "decompression bomb" in rows.loc["/test/giant.png", "error"]
    assert "truncated" in rows.loc["/test/truncated.jpg?key=t", "error"]
    assert list((tmp_path / RAW_DIR).iterdir()) == [tmp_path / MANIFEST], "no rejected file is kept"


def test_exact_and_near_duplicates_are_dropped(site, tmp_path):
    images = ["/img/face-001.jpg", "/img/face-001.jpg?copy=1", "/test/reencoded.jpg", "/img/face-002.jpg"]
    run(fast(page_of(site, *images)), tmp_path)
    frame = manifest(tmp_path)
    assert list(frame.status) == ["ok", "duplicate", "near_duplicate", "ok"]
    assert frame.sha256[0] == frame.sha256[1] and frame.path[1] == frame.path[2] == ""
    assert len(list((tmp_path / RAW_DIR).glob("*.jpg"))) == 2


# --- resume -------------------------------------------------------------------------------------


def test_rerun_with_nothing_new_fetches_no_image(site, tmp_path, hits):
    params = fast({"url": f"{site}/index.html"})
    run(params, tmp_path)
    assert len(image_hits(hits)) == 50, "every image but the robots-disallowed one, once"
    hits.clear()
    report = run(params, tmp_path)
    assert image_hits(hits) == [] and report["this_run"]["fetched"] == 0
    assert report["this_run"]["skipped_already_done"] == 51 and report["statuses"]["ok"] == 43


def test_killed_run_resumes_fetching_only_what_is_missing(site, tmp_path, hits):
    params = fast({"url": f"{site}/index.html"})
    run(params, tmp_path)
    full = manifest(tmp_path)
    full.head(20).to_parquet(tmp_path / MANIFEST, index=False)  # as if killed after 20 rows
    hits.clear()
    run(params, tmp_path)
    missing = full.iloc[20:]
    expected = {_path(url) for url, status in zip(missing.url, missing.status) if status != "robots"}
    assert sorted(image_hits(hits)) == sorted(expected)
    assert manifest(tmp_path).sort_values("url").reset_index(drop=True).equals(
        full.sort_values("url").reset_index(drop=True)
    )


def test_a_killed_scrape_keeps_every_finished_batch(site, tmp_path, hits):
    quick = [f"/test/unstable.jpg?key=kill{n}&fail=0" for n in range(4)]
    stuck = "/test/slow.jpg?key=kill&delay=30"
    params = fast(page_of(site, *quick, stuck), batch_size=2, concurrency=1, timeout_s=60)
    script = (
        "import sys; from pathlib import Path; from styleforge.core.config import ScrapeParams; "
        "from styleforge.tasks.scrape import run; run(ScrapeParams.model_validate_json(sys.argv[1]), Path(sys.argv[2]))"
    )
    scrape = subprocess.Popen([sys.executable, "-c", script, params.model_dump_json(), str(tmp_path)], cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while stuck not in [path for _, path in hits] and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        scrape.kill()  # SIGKILL, in the middle of the third batch
        scrape.wait()
    assert set(status_of(manifest(tmp_path))) == set(quick), "the two finished batches were saved"
    hits.clear()
    run(fast(page_of(site, *quick, stuck), timeout_s=0.3, retries=0), tmp_path)
    assert image_hits(hits) == [stuck]


def test_rerun_retries_transient_failures_and_loosened_limits(site, tmp_path, hits):
    flaky, icon, giant = "/test/unstable.jpg?key=resume&fail=1", "/img/icon.png", "/test/giant.png"
    source = page_of(site, flaky, icon, giant)
    run(fast(source, retries=0), tmp_path)
    assert status_of(manifest(tmp_path)) == {flaky: "http_error", icon: "too_small", giant: "too_large"}
    hits.clear()
    run(fast(source, retries=0), tmp_path)
    assert image_hits(hits) == [flaky], "a 5xx is retried, a rejection under the same limits is not"
    hits.clear()
    run(fast(source, min_side=16), tmp_path)
    assert image_hits(hits) == [icon] and status_of(manifest(tmp_path))[icon] == "ok"

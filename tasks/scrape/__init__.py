"""The scrape stage: collect images of the target look from the source pages into data/raw/.

Each source page is fetched (requests) or rendered with scrolling (headless Chromium), its image
URLs are downloaded concurrently under per-host pacing, robots.txt and size limits, checked with
Pillow, and kept once: files are named by the sha256 of their bytes, exact and near duplicates
are dropped. data/raw/manifest.parquet records every URL and is saved after every batch, so a
killed run resumes where it stopped; URLs already settled are never fetched again.

Every fetch is bounded in time (max_download_s, and per browser source its timeouts and
source_deadline_s), and connects only to public addresses and the inside ones scrape.allow_private
lists. A failing source costs only itself; the stage fails (UserError) only when every source did.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from styleforge.core.config import ScrapeParams
from styleforge.core.errors import UserError
from styleforge.core.io import atomic_write_bytes
from styleforge.core.reports import timed, write_report
from styleforge.tasks.scrape.addresses import BlockedAddress
from styleforge.tasks.scrape.browser import Browser
from styleforge.tasks.scrape.download import Download, fetch_image
from styleforge.tasks.scrape.http import Fetcher, HostUnreachable
from styleforge.tasks.scrape.manifest import (
    RAW_DIR,
    STATUSES,
    SeenImages,
    is_settled,
    load_manifest,
    save_manifest,
)
from styleforge.tasks.scrape.pages import PageResult, collect_page

log = logging.getLogger(__name__)


class EverySourceFailed(UserError):
    """No source gave images: the message lists each one's reason."""


@dataclass(frozen=True)
class ImageJob:
    url: str
    page: str
    source: str


class Ledger:
    """The manifest rows by URL, plus what this run added to them."""

    def __init__(self, rows: dict[str, dict]):
        self.rows = rows
        self.this_run: Counter[str] = Counter()
        self.bytes_downloaded = 0

    def record(self, job: ImageJob, download: Download, path: str = "") -> None:
        self.rows[job.url] = {
            "url": job.url,
            "page": job.page,
            "sha256": download.sha256,
            "phash": download.phash,
            "bytes": download.size,
            "width": download.width,
            "height": download.height,
            "status": download.status,
            "error": download.error,
            "path": path,
            "content_type": download.content_type,
            "source": job.source,
        }
        self.this_run[download.status] += 1


def run(params: ScrapeParams, root: Path = Path(".")) -> dict:
    """Scrape every source into root/data/raw; writes and returns the report. Failing pages are
    reported in `errors` and `outcome`; when every source failed, the manifest and report are
    written and EverySourceFailed is raised."""
    root = Path(root)
    report: dict = {}
    with timed(report):
        ledger = Ledger(load_manifest(root))
        fetcher = Fetcher(params)
        try:
            pages = collect_pages(params, fetcher)
            jobs, already_done = plan_downloads(pages, ledger, fetcher, params)
            download_all(jobs, ledger, fetcher, params, root)
        finally:
            fetcher.close()
        save_manifest(ledger.rows, root)  # also when nothing was fetched: later stages read it
    report.update(summarise(pages, ledger, len(jobs), already_done))
    write_report("scrape", report, root)
    if report["outcome"] == "all sources failed":
        raise EverySourceFailed("scrape: every source failed:\n  " + "\n  ".join(report["errors"]))
    return report


def collect_pages(params: ScrapeParams, fetcher: Fetcher) -> list[PageResult]:
    browser = Browser(params)
    try:
        pages = [collect_page(source, fetcher, browser) for source in params.sources]
    finally:
        browser.close()
    for page in pages:
        if page.status != "ok":
            log.warning("scrape: %s: %s", page.source.url, page.error)
    return pages


def plan_downloads(
    pages: list[PageResult], ledger: Ledger, fetcher: Fetcher, params: ScrapeParams
) -> tuple[list[ImageJob], int]:
    """The image URLs to fetch now, in page order, each once. URLs the manifest has settled are
    skipped; URLs robots.txt disallows are recorded as such without a request."""
    jobs: list[ImageJob] = []
    queued: set[str] = set()
    already_done = 0
    for page in pages:
        for url in page.images:
            if url in queued:
                continue
            queued.add(url)
            previous = ledger.rows.get(url)
            if previous is not None and is_settled(previous, params):
                already_done += 1
                continue
            job = ImageJob(url, page.page, page.source.url)
            try:
                allowed = fetcher.allowed(url)
            except HostUnreachable as exc:
                ledger.record(job, Download("error", str(exc)))
                continue
            except BlockedAddress as exc:
                ledger.record(job, Download("blocked_address", str(exc)))
                continue
            if allowed:
                jobs.append(job)
            else:
                ledger.record(job, Download("robots", "robots.txt disallows this image"))
    return jobs, already_done


def download_all(jobs: list[ImageJob], ledger: Ledger, fetcher: Fetcher, params: ScrapeParams, root: Path) -> None:
    """Fetch concurrently, settle each result in job order (so the first of two duplicates is
    the one kept, run after run), and save the manifest after every batch."""
    seen = SeenImages.from_rows(ledger.rows, params.near_duplicate_bits)
    raw_dir = root / RAW_DIR
    with ThreadPoolExecutor(params.concurrency, thread_name_prefix="scrape") as pool, tqdm(
        total=len(jobs), desc="scrape", unit="img"
    ) as progress:
        for start in range(0, len(jobs), params.batch_size):
            batch = jobs[start : start + params.batch_size]
            downloads = pool.map(lambda queued: fetch_image(queued.url, fetcher, params), batch)
            for job, download in zip(batch, downloads):
                ledger.bytes_downloaded += len(download.data)
                settle(job, download, seen, ledger, raw_dir)
                progress.update()
            save_manifest(ledger.rows, root)


def settle(job: ImageJob, download: Download, seen: SeenImages, ledger: Ledger, raw_dir: Path) -> None:
    """Keep a checked image unless an image already kept has the same bytes or nearly the same
    picture; near duplicates are not written at all."""
    if download.status != "ok":
        ledger.record(job, download)
        return
    if first := seen.same_bytes(download.sha256):
        download.status, download.error = "duplicate", f"same bytes as {first}"
    elif nearest := seen.closest(download.phash):
        distance, url = nearest
        download.status, download.error = "near_duplicate", f"phash {distance} bits from {url}"
    else:
        name = f"{download.sha256}{download.extension}"
        atomic_write_bytes(raw_dir / name, download.data)
        seen.add(download.sha256, download.phash, job.url)
        ledger.record(job, download, name)
        return
    ledger.record(job, download)


def summarise(pages: list[PageResult], ledger: Ledger, fetched: int, already_done: int) -> dict:
    rows = list(ledger.rows.values())
    errors = [f"{page.source.url}: {page.error}" for page in pages if page.status != "ok"]
    if not pages:
        errors.append("no sources in params: nothing to scrape")
    working = sum(page.status == "ok" for page in pages)
    outcome = "ok" if working == len(pages) > 0 else "all sources failed" if working == 0 else "some sources failed"
    return {
        "outcome": outcome,
        "errors": errors,
        "images_ok": sum(row["status"] == "ok" for row in rows),
        "statuses": _count_statuses(row["status"] for row in rows),
        "this_run": {
            "fetched": fetched,
            "skipped_already_done": already_done,
            "statuses": _count_statuses(ledger.this_run.elements()),
        },
        "bytes_downloaded": ledger.bytes_downloaded,  # images that decoded, this run
        "bytes_kept": int(sum(row["bytes"] for row in rows if row["status"] == "ok")),
        "pages_fetched": sum(bool(page.page) for page in pages),
        "sources": [_source_summary(page, rows) for page in pages],
    }


def _source_summary(page: PageResult, rows: list[dict]) -> dict:
    return {
        "url": page.source.url,
        "mode": page.source.mode,
        "status": page.status,
        "error": page.error,
        "page": page.page,
        "images_found": len(page.images),
        "scrolls": page.scrolls,
        "blocked_requests": page.blocked_requests,
        "statuses": _count_statuses(row["status"] for row in rows if row["source"] == page.source.url),
    }


def _count_statuses(statuses: Iterable[str]) -> dict[str, int]:
    counts = Counter(statuses)
    return {status: counts[status] for status in STATUSES}

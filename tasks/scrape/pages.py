"""Source pages: fetch (static) or render (browser) each one and list its image URLs. A page that
fails is reported with the reason and never stops the other sources."""

from __future__ import annotations

from dataclasses import dataclass, field

import requests
from styleforge.tasks.scrape.browser import Browser
from styleforge.tasks.scrape.extract import extract_image_urls
from styleforge.tasks.scrape.http import (
    Fetcher,
    HostUnreachable,
    PageError,
    TooLarge,
    describe,
)

from styleforge.core.config import Source


@dataclass
class PageResult:
    source: Source
    status: str = "ok"  # ok | robots | failed
    page: str = ""  # the URL the images were found on, after redirects
    images: list[str] = field(default_factory=list)
    scrolls: int = 0
    error: str = ""


def collect_page(source: Source, fetcher: Fetcher, browser: Browser) -> PageResult:
    """The first max_images image URLs on the source's page, or why there are none."""
    try:
        if not fetcher.allowed(source.url):
            return PageResult(source, "robots", error="robots.txt disallows this page")
        if source.mode == "browser":
            rendered = browser.render(source)
            page, html, scrolls = rendered.url, rendered.html, rendered.scrolls
        else:
            (page, html), scrolls = fetch_static_page(source.url, fetcher), 0
    except (HostUnreachable, PageError) as exc:
        return PageResult(source, "failed", error=str(exc))
    images = extract_image_urls(html, page, source.selector)[: source.max_images]
    if not images:
        where = f" matching selector {source.selector!r}" if source.selector else ""
        return PageResult(source, "failed", page, scrolls=scrolls, error=f"no images found{where}")
    return PageResult(source, "ok", page, images, scrolls)


def fetch_static_page(url: str, fetcher: Fetcher) -> tuple[str, bytes]:
    """(final URL, body). The body stays bytes so that BeautifulSoup reads the page's own
    <meta charset> (requests guesses Latin-1 for text/html without a charset header)."""
    try:
        with fetcher.get(url) as response:
            if response.status_code >= 400:
                raise PageError(f"HTTP {response.status_code} {response.reason}")
            return response.url, fetcher.read_body(response)
    except (requests.RequestException, TooLarge, TimeoutError) as exc:
        raise PageError(describe(exc)) from None

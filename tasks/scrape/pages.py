"""Source pages: fetch (static) or render (browser) each one and list its image URLs. A page that
fails is reported with the reason and never stops the other sources."""

from __future__ import annotations

from dataclasses import dataclass, field

import requests

from styleforge.core.config import Source
from styleforge.tasks.scrape.addresses import BlockedAddress
from styleforge.tasks.scrape.browser import Browser
from styleforge.tasks.scrape.extract import extract_image_urls
from styleforge.tasks.scrape.http import (
    DeadlineExceeded,
    Fetcher,
    HostUnreachable,
    PageError,
    TooLarge,
    describe,
)


@dataclass
class PageResult:
    source: Source
    status: str = "ok"  # ok | robots | blocked_address | failed
    page: str = ""  # the URL the images were found on, after redirects
    images: list[str] = field(default_factory=list)
    scrolls: int = 0
    error: str = ""
    blocked_requests: list[str] = field(default_factory=list)  # browser mode: the page's own, refused


def collect_page(source: Source, fetcher: Fetcher, browser: Browser) -> PageResult:
    """The first max_images image URLs on the source's page, or why there are none."""
    try:
        if not fetcher.allowed(source.url):
            return PageResult(source, "robots", error="robots.txt disallows this page")
        if source.mode == "browser":
            rendered = browser.render(source)
            page, html, scrolls, blocked = rendered.url, rendered.html, rendered.scrolls, rendered.blocked_requests
        else:
            (page, html), scrolls, blocked = fetch_static_page(source.url, fetcher), 0, []
    except BlockedAddress as exc:
        return PageResult(source, "blocked_address", error=str(exc))
    except (HostUnreachable, PageError) as exc:
        return PageResult(source, "failed", error=str(exc))
    images = extract_image_urls(html, page, source.selector)[: source.max_images]
    if not images:
        where = f" matching selector {source.selector!r}" if source.selector else ""
        return PageResult(source, "failed", page, scrolls=scrolls, error=f"no images found{where}",
                          blocked_requests=blocked)
    return PageResult(source, "ok", page, images, scrolls, blocked_requests=blocked)


def fetch_static_page(url: str, fetcher: Fetcher) -> tuple[str, bytes]:
    """(final URL, body). The body stays bytes so that BeautifulSoup reads the page's own
    <meta charset> (requests guesses Latin-1 for text/html without a charset header)."""
    try:
        with fetcher.open(url) as response:
            if response.status_code >= 400:
                raise PageError(f"HTTP {response.status_code} {response.reason}")
            return response.url, fetcher.read_body(response)
    except (requests.RequestException, OSError, TooLarge, DeadlineExceeded) as exc:
        raise PageError(describe(exc)) from None

"""Image URLs in a page's HTML: one extractor for static pages and for a browser's rendered DOM."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urldefrag, urljoin, urlsplit

from bs4 import BeautifulSoup, Tag

# Lazy-loading scripts keep the real image in one of these until it scrolls into view (src then
# holds a placeholder), so they win over src. srcset-style attributes win over single URLs
# because they may name a larger file.
SRCSET_ATTRS = ("data-srcset", "data-lazy-srcset", "srcset")
URL_ATTRS = ("data-src", "data-lazy-src", "data-original", "data-lazy", "data-url", "src")
WEB_SCHEMES = ("http", "https")

_URL_TOKEN = re.compile(r"[\s,]*(\S+)")
_DESCRIPTORS = re.compile(r"([^,]*),?")
_DESCRIPTOR = re.compile(r"^(\d+(?:\.\d+)?)([wx])$")


@dataclass(frozen=True)
class Candidate:
    url: str
    unit: str  # "w" (width in pixels) or "x" (pixel density)
    size: float


def parse_srcset(srcset: str) -> list[Candidate]:
    """Split a srcset the way the HTML spec does: a URL is a run of non-space characters and may
    hold commas (image CDNs use them), commas at its end close the candidate, and otherwise the
    descriptors run to the next comma. A candidate without a usable descriptor counts as 1x."""
    candidates, position = [], 0
    while match := _URL_TOKEN.match(srcset, position):
        url, position = match.group(1), match.end()
        descriptor = ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            tail = _DESCRIPTORS.match(srcset, position)
            descriptor, position = tail.group(1).strip(), tail.end()
        if url:
            candidates.append(_candidate(url, descriptor))
    return candidates


def _candidate(url: str, descriptors: str) -> Candidate:
    for descriptor in descriptors.split():
        if match := _DESCRIPTOR.match(descriptor):
            return Candidate(url, match.group(2), float(match.group(1)))
    return Candidate(url, "x", 1.0)


def largest_srcset_url(srcset: str) -> str | None:
    """The biggest candidate: by width when any candidate gives one, else by density."""
    candidates = parse_srcset(srcset)
    if not candidates:
        return None
    return max(candidates, key=lambda c: (c.unit == "w", c.size)).url


def element_image_url(element: Tag) -> str | None:
    """The one URL an <img> or <picture><source> stands for, before resolving it."""
    for attr in SRCSET_ATTRS:
        if (value := element.get(attr)) and (url := largest_srcset_url(value)):
            return url
    for attr in URL_ATTRS:
        if value := (element.get(attr) or "").strip():
            return value
    return None


def extract_image_urls(html: str | bytes, page_url: str, selector: str | None = None) -> list[str]:
    """Absolute http(s) image URLs in page order, without repeats, from <img> and <picture>
    sources inside `selector` (the whole page when None). data:, blob:, javascript: are skipped."""
    soup = BeautifulSoup(html, "html.parser")
    base = soup.find("base", href=True)
    base_url = urljoin(page_url, base["href"]) if base else page_url
    urls: dict[str, None] = {}  # an ordered set
    for element in _image_elements(soup, selector):
        raw = element_image_url(element)
        if raw is None:
            continue
        url = urldefrag(urljoin(base_url, raw)).url
        if urlsplit(url).scheme in WEB_SCHEMES:
            urls.setdefault(url)
    return list(urls)


def _image_elements(soup: BeautifulSoup, selector: str | None) -> list[Tag]:
    scopes = soup.select(selector) if selector else [soup]
    elements: dict[int, Tag] = {}  # a matched <img> may also sit inside another matched scope
    for scope in scopes:
        for element in [scope, *scope.find_all(["img", "source"])]:
            if _is_image_element(element):
                elements.setdefault(id(element), element)
    return list(elements.values())


def _is_image_element(element: Tag) -> bool:
    # <source> also feeds <video> and <audio>; only a <picture>'s sources are images.
    if element.name == "source":
        return element.parent is not None and element.parent.name == "picture"
    return element.name == "img"

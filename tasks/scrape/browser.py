"""Browser mode: render a page in headless Chromium, scroll until no new images arrive, and hand
the rendered HTML to the same extractor as static pages."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.wait import WebDriverWait
from styleforge.tasks.scrape.extract import extract_image_urls
from styleforge.tasks.scrape.http import PageError

from styleforge.core.config import ScrapeParams, Source

# Debian's packages; passing the driver's path stops Selenium Manager from downloading one.
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--window-size=1280,1024",
    # Only loopback resolves: the browser must not look up outside hosts (there is no internet).
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
    # The scraper downloads images itself (paced, robots-checked, once); the browser need not.
    "--blink-settings=imagesEnabled=false",
)
POLL_S = 0.1
NAVIGATION_STATUS = "const nav = performance.getEntriesByType('navigation')[0]; return nav ? nav.responseStatus : 0;"
SCROLL_TO_BOTTOM = "window.scrollTo(0, document.documentElement.scrollHeight);"


@dataclass
class RenderedPage:
    url: str  # after redirects
    html: str
    scrolls: int


class Browser:
    """One headless Chromium for all of a run's browser sources, started on first use, with a
    fresh profile in a temp folder that close() removes."""

    def __init__(self, params: ScrapeParams):
        self.params = params
        self._driver: webdriver.Chrome | None = None
        self._profile: str | None = None

    def render(self, source: Source) -> RenderedPage:
        driver = self._started()
        try:
            driver.get(source.url)
        except WebDriverException as exc:
            raise PageError(f"browser could not load the page: {exc.msg}") from None
        status = driver.execute_script(NAVIGATION_STATUS)
        if status >= 400:
            raise PageError(f"HTTP {status}")
        scrolls = self._scroll_for_images(source)
        return RenderedPage(driver.current_url, driver.page_source, scrolls)

    def _scroll_for_images(self, source: Source) -> int:
        """Scroll to the bottom until a scroll brings no new image within scroll_wait_s, or
        scroll_rounds or max_images is reached. Returns the number of scrolls."""
        found = self._wait_for_more_than(0, source.selector)  # scripts may still be building the page
        scrolls = 0
        while scrolls < source.scroll_rounds and found < source.max_images:
            self._driver.execute_script(SCROLL_TO_BOTTOM)
            scrolls += 1
            now = self._wait_for_more_than(found, source.selector)
            if now == found:
                break
            found = now
        return scrolls

    def _wait_for_more_than(self, known: int, selector: str | None) -> int:
        """Image count once it passes `known`, or the count when scroll_wait_s runs out."""
        wait = WebDriverWait(self._driver, self.params.scroll_wait_s, poll_frequency=POLL_S)
        try:
            return wait.until(lambda _: count if (count := self._count(selector)) > known else False)
        except TimeoutException:
            return self._count(selector)

    def _count(self, selector: str | None) -> int:
        return len(extract_image_urls(self._driver.page_source, self._driver.current_url, selector))

    def _started(self) -> webdriver.Chrome:
        if self._driver is None:
            self._profile = tempfile.mkdtemp(prefix="styleforge-chromium-")
            options = webdriver.ChromeOptions()
            options.binary_location = CHROMIUM
            for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={self._profile}", f"--user-agent={self.params.user_agent}"):
                options.add_argument(flag)
            try:
                self._driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
            except WebDriverException as exc:
                raise PageError(f"could not start headless Chromium: {exc.msg}") from None
            self._driver.set_page_load_timeout(self.params.page_load_timeout_s)
        return self._driver

    def close(self) -> None:
        if self._driver is not None:
            self._driver.quit()
            self._driver = None
        if self._profile is not None:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None

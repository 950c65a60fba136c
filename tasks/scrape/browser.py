"""Browser mode: render a page in headless Chromium, scroll until no new images arrive, and hand
the rendered HTML to the same extractor as static pages.

Chromium runs under the project's process supervisor (styleforge.core.procs): chromedriver is
started through it and Chromium below chromedriver, so a scrape that dies, SIGKILL included,
leaves no browser behind, and the supervisor removes the profile folder. Every request of the page
goes through the scraper's filtering proxy (tasks/scrape/proxy.py). Each source is bounded:
page-load and script timeouts in the browser, and a hard deadline after which that browser is ended
and the next source gets a fresh one; a source that breaks the browser costs only itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import urllib3
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.common.proxy import Proxy
from selenium.webdriver.remote.client_config import ClientConfig

from styleforge.core import procs
from styleforge.core.config import ScrapeParams, Source
from styleforge.tasks.scrape.addresses import AddressPolicy, BlockedAddress
from styleforge.tasks.scrape.extract import extract_image_urls
from styleforge.tasks.scrape.http import PageError
from styleforge.tasks.scrape.proxy import FilteringProxy, Refusal

# Debian's packages, started by us: Selenium Manager downloads nothing.
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--window-size=1280,1024",
    # The scraper downloads images itself (paced, robots-checked, once); the browser need not.
    "--blink-settings=imagesEnabled=false",
    # No traffic of Chromium's own: updates, sync, metrics, safe browsing, reporting, pings, Google
    # services (chrome-launcher's list, https://github.com/GoogleChrome/chrome-launcher).
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-component-extensions-with-background-pages",
    "--disable-extensions",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--metrics-recording-only",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-pings",
    (
        "--disable-features=Translate,OptimizationHints,MediaRouter,DialMediaRouteProvider,"
        "CertificateTransparencyComponentUpdater,AutofillServerCommunication,InterestFeedContentSuggestions"
    ),
    # WebRTC must not go around the proxy with UDP (nor show local addresses).
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",
    # Every request through the filtering proxy: Chromium lets loopback bypass a proxy unless told.
    "--proxy-bypass-list=<-loopback>",
)
PREFS = {"webrtc.ip_handling_policy": "disable_non_proxied_udp"}
PROFILE_PREFIX = "styleforge-chromium-"
# styleforge-chromium-<owner pid>-<owner start time in clock ticks>-<random>: a later run can tell
# a dead owner's folder from a live one's, even when the pid has been reused.
PROFILE_NAME = re.compile(re.escape(PROFILE_PREFIX) + r"(\d+)-(\d+)-")
DRIVER_START_S = 20.0
STOP_GRACE_S = 2.0  # SIGTERM to SIGKILL, when a browser is ended
POLL_S = 0.1
NAVIGATION_STATUS = "const nav = performance.getEntriesByType('navigation')[0]; return nav ? nav.responseStatus : 0;"
SCROLL_TO_BOTTOM = "window.scrollTo(0, document.documentElement.scrollHeight);"


@dataclass
class RenderedPage:
    url: str  # after redirects
    html: str
    scrolls: int
    blocked_requests: list[str] = field(default_factory=list)  # the page's requests the proxy refused


class Browser:
    """Renders the browser sources of a run, one at a time. Chromium is started on first use and
    again after a source that broke it; the filtering proxy lives as long as the Browser. Use it
    from one thread: the supervisor ends Chromium when the thread that started it ends."""

    def __init__(self, params: ScrapeParams):
        self.params = params
        self._proxy: FilteringProxy | None = None
        self._session: ChromiumSession | None = None

    def render(self, source: Source) -> RenderedPage:
        """The rendered page, or PageError / BlockedAddress saying why not. After a failure of any
        kind the browser is ended: a hung or crashed page must not be the next source's start."""
        session = self._started()
        self._proxy.take_refusals()  # what the previous source left in flight is not this one's
        watchdog = threading.Timer(self.params.source_deadline_s, session.end, kwargs={"by_deadline": True})
        watchdog.daemon = True
        watchdog.start()
        try:
            page = self._render(session.driver, source)
        except (PageError, BlockedAddress, WebDriverException, urllib3.exceptions.HTTPError, OSError) as exc:
            self._end_session()
            if session.ended_by_deadline.is_set():  # what failed is the commands the watchdog cut short
                raise PageError(f"took over source_deadline_s {self.params.source_deadline_s:g}s: "
                                "the browser was ended") from None
            if isinstance(exc, (PageError, BlockedAddress)):
                raise
            if isinstance(exc, TimeoutException):  # chromedriver waits on a busy renderer this long
                raise PageError(f"the page stopped answering (a script busy in a loop?): {_message(exc)}") from None
            raise PageError(f"browser failed: {_message(exc)}") from None
        finally:
            watchdog.cancel()
        if session.ended_by_deadline.is_set():  # the watchdog fired as the page was done
            self._end_session()
        return page

    def _render(self, driver: webdriver.Remote, source: Source) -> RenderedPage:
        try:
            driver.get(source.url)
        except TimeoutException:
            raise PageError(f"the page did not load within page_load_timeout_s {self.params.page_load_timeout_s:g}s")
        except WebDriverException as exc:
            self._raise_if_navigation_refused(source.url)
            raise PageError(f"browser could not load the page: {_message(exc)}") from None
        self._raise_if_navigation_refused(source.url)
        status = driver.execute_script(NAVIGATION_STATUS)
        if status >= 400:
            raise PageError(f"HTTP {status}")
        scrolls = self._scroll_for_images(driver, source)
        blocked = sorted({refusal.target for refusal in self._proxy.take_refusals()})
        return RenderedPage(driver.current_url, driver.page_source, scrolls, blocked)

    def _raise_if_navigation_refused(self, url: str) -> None:
        """BlockedAddress when the proxy refused the page itself, or a redirect of it."""
        for refusal in self._proxy.refusals():
            if refusal.destination == "document" or _tunnel_to(refusal, url):
                raise BlockedAddress(refusal.reason)

    def _scroll_for_images(self, driver: webdriver.Remote, source: Source) -> int:
        """Scroll to the bottom until a scroll brings no new image within scroll_wait_s, or
        scroll_rounds or max_images is reached. Returns the number of scrolls."""
        found = self._wait_for_more_than(driver, 0, source.selector)  # scripts may still be building the page
        scrolls = 0
        while scrolls < source.scroll_rounds and found < source.max_images:
            driver.execute_script(SCROLL_TO_BOTTOM)
            scrolls += 1
            now = self._wait_for_more_than(driver, found, source.selector)
            if now == found:
                break
            found = now
        return scrolls

    def _wait_for_more_than(self, driver: webdriver.Remote, known: int, selector: str | None) -> int:
        """Image count once it passes `known`, or the count when scroll_wait_s runs out. (Not
        WebDriverWait: its running out and a page too busy to answer raise the same exception.)"""
        give_up = time.monotonic() + self.params.scroll_wait_s
        while (count := self._count(driver, selector)) <= known and time.monotonic() < give_up:
            time.sleep(POLL_S)
        return count

    def _count(self, driver: webdriver.Remote, selector: str | None) -> int:
        return len(extract_image_urls(driver.page_source, driver.current_url, selector))

    def _started(self) -> ChromiumSession:
        if self._proxy is None:
            self._proxy = FilteringProxy(AddressPolicy(self.params.allow_private), self.params.timeout_s)
        if self._session is None:
            remove_dead_profiles()
            self._session = ChromiumSession(self.params, self._proxy.port)
        return self._session

    def _end_session(self) -> None:
        if self._session is not None:
            self._session.end()
            self._session = None

    def close(self) -> None:
        self._end_session()
        if self._proxy is not None:
            self._proxy.close()
            self._proxy = None


class ChromiumSession:
    """chromedriver under the supervisor (Chromium below it), and a WebDriver client to it."""

    def __init__(self, params: ScrapeParams, proxy_port: int):
        self.ended_by_deadline = threading.Event()
        self.profile = tempfile.mkdtemp(prefix=f"{PROFILE_PREFIX}{os.getpid()}-{start_ticks(os.getpid())}-")
        self.process, port = start_chromedriver(STOP_GRACE_S, cleanup=[self.profile])
        try:
            address = _wait_for_driver(self.process, port)
            self.driver = webdriver.Remote(
                command_executor=address, options=_options(params, self.profile, proxy_port),
                client_config=ClientConfig(
                    address, proxy=Proxy({"proxyType": "DIRECT"}),
                    # Commands are bounded in the browser; this only keeps a dead driver from hanging us.
                    timeout=params.page_load_timeout_s + params.script_timeout_s + 30,
                ),
            )  # fmt: skip
            self.driver.set_page_load_timeout(params.page_load_timeout_s)
            self.driver.set_script_timeout(params.script_timeout_s)
        except (WebDriverException, urllib3.exceptions.HTTPError, OSError) as exc:
            procs.stop(self.process, timeout_s=STOP_GRACE_S + 5)
            raise PageError(f"could not start headless Chromium: {_message(exc)}") from None

    def end(self, by_deadline: bool = False) -> None:
        """End chromedriver and Chromium (the supervisor removes the profile). The source's
        watchdog calls this from its own thread: the commands under way then fail at once."""
        if by_deadline:
            self.ended_by_deadline.set()
        procs.stop(self.process, timeout_s=STOP_GRACE_S + 5)
        self.driver.command_executor.close()  # its pooled connections to the ended driver


def _options(params: ScrapeParams, profile: str, proxy_port: int) -> webdriver.ChromeOptions:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        *CHROMIUM_FLAGS,
        f"--proxy-server=http://127.0.0.1:{proxy_port}",
        f"--user-data-dir={profile}",
        f"--user-agent={params.user_agent}",
    ):
        options.add_argument(flag)
    options.add_experimental_option("prefs", PREFS)
    return options


def _wait_for_driver(process: subprocess.Popen, port: int) -> str:
    """chromedriver's address once it accepts connections."""
    deadline = time.monotonic() + DRIVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise OSError(f"{CHROMEDRIVER} exited with code {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=POLL_S):
            return f"http://127.0.0.1:{port}"
        time.sleep(POLL_S)
    raise OSError(f"chromedriver did not listen on port {port} within {DRIVER_START_S:g}s")


def start_chromedriver(grace_s: float, cleanup: Sequence[str] = ()) -> tuple[subprocess.Popen, int]:
    """chromedriver on a free port under the process supervisor (Chromium starts below it), and
    the port. Chromium gets a temp folder of its own (its TMPDIR), which the supervisor removes
    with cleanup: stopped rather than quit, Chromium leaves folders in the temp folder, one or
    more a session. Short, as its singleton socket lies two folders below and a socket's path
    has 107 bytes."""
    port, temp = _free_port(), tempfile.mkdtemp(prefix="sfc-")
    process = procs.start([CHROMEDRIVER, f"--port={port}"], grace_s=grace_s, cleanup=[*cleanup, temp],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "TMPDIR": temp})
    return process, port


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_ticks(pid: int) -> int | None:
    """When process pid started (clock ticks since boot), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22; the name in (...) may hold spaces


def remove_dead_profiles(folder: str | None = None) -> None:
    """Remove profile folders whose owner has died (a run whose supervisor was killed too)."""
    for path in Path(folder or tempfile.gettempdir()).glob(f"{PROFILE_PREFIX}*"):
        owner = PROFILE_NAME.match(path.name)
        if owner and start_ticks(int(owner[1])) != int(owner[2]):
            shutil.rmtree(path, ignore_errors=True)


def _tunnel_to(refusal: Refusal, url: str) -> bool:
    """Whether the refusal is of the CONNECT tunnel that url needed (https: the proxy sees no URL)."""
    parts = urlsplit(url)
    netloc = parts.netloc if parts.port else f"{parts.netloc}:{443 if parts.scheme == 'https' else 80}"
    return refusal.destination == "tunnel" and refusal.target == netloc


def _message(exc: BaseException) -> str:
    text = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
    return text.strip().splitlines()[0]

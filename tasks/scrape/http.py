"""Polite HTTP for the scrape: our user agent, per-host pacing, retries that honour Retry-After,
robots.txt, and bodies read under a size cap and a deadline."""

from __future__ import annotations

import threading
import time
from urllib.parse import urlsplit
from urllib.robotparser import RobotFileParser

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from styleforge.core.config import ScrapeParams

RETRY_STATUSES = (429, 500, 502, 503, 504)
CHUNK_BYTES = 64 * 1024


class TooLarge(Exception):
    """The body passed max_bytes; `seen` is how many bytes had arrived."""

    def __init__(self, seen: int, limit: int, how: str):
        super().__init__(f"{how} {seen} bytes > max_bytes {limit}")
        self.seen = seen


class HostUnreachable(Exception):
    """robots.txt could not be fetched at all (dead host, refused, timed out)."""


class PageError(Exception):
    """A source page could not be fetched or rendered; the message says why."""


class DoublingRetry(Retry):
    """urllib3's Retry, except that the first retry also waits: backoff_factor, then twice that,
    and so on (urllib3 retries the first failure at once). A Retry-After header still wins."""

    def get_backoff_time(self) -> float:
        failures = len(self.history)  # requests follows redirects itself, so these are all failures
        if failures == 0:
            return 0.0
        return min(self.backoff_max, self.backoff_factor * 2 ** (failures - 1))


class HostPacer:
    """Spaces requests to one host at least 1/rate seconds apart, across threads: each caller
    reserves the next free slot under the lock, then sleeps outside it until its slot."""

    def __init__(self, per_second: float):
        self._interval = 1.0 / per_second
        self._crawl_delay: dict[str, float] = {}  # host -> the longer interval its robots.txt asks for
        self._next_slot: dict[str, float] = {}
        self._lock = threading.Lock()

    def slow_down(self, host: str, interval: float) -> None:
        with self._lock:
            self._crawl_delay[host] = max(interval, self._crawl_delay.get(host, 0.0))

    def wait(self, host: str) -> None:
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slot.get(host, now))
            self._next_slot[host] = slot + max(self._interval, self._crawl_delay.get(host, 0.0))
        time.sleep(slot - now)


class Fetcher:
    """GETs for pages, robots.txt and images. One requests.Session per thread (a Session is not
    documented as thread-safe); every request is paced per host and retried on 429, 5xx and
    connection errors. Retries happen inside urllib3, so they wait out their backoff instead of
    taking pacing slots."""

    def __init__(self, params: ScrapeParams):
        self.params = params
        self.pacer = HostPacer(params.per_host_rate)
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self._robots: dict[str, RobotFileParser | HostUnreachable] = {}

    def get(self, url: str) -> requests.Response:
        """A streamed GET: the caller reads the body (read_body) and closes the response."""
        self.pacer.wait(host_of(url))
        return self._session().get(url, stream=True, timeout=self.params.timeout_s)

    def read_body(self, response: requests.Response) -> bytes:
        """The body, decoded from any Content-Encoding, refused past max_bytes or max_download_s.
        Content-Length is checked first so that an honest oversized answer is never read."""
        limit = self.params.max_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise TooLarge(int(declared), limit, "Content-Length")
        deadline = time.monotonic() + self.params.max_download_s
        body = bytearray()
        for chunk in response.iter_content(CHUNK_BYTES):
            body += chunk
            if len(body) > limit:
                raise TooLarge(len(body), limit, "streamed")
            if time.monotonic() > deadline:
                raise TimeoutError(f"download took over max_download_s {self.params.max_download_s}s")
        return bytes(body)

    def allowed(self, url: str) -> bool:
        """Whether robots.txt lets our user agent fetch url; robots.txt is fetched once per host.
        Raises HostUnreachable when the host's robots.txt cannot be fetched at all."""
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
        if origin not in self._robots:
            self._robots[origin] = self._read_robots(origin)
        robots = self._robots[origin]
        if isinstance(robots, HostUnreachable):
            raise robots
        return robots.can_fetch(self.params.user_agent, url)

    def _read_robots(self, origin: str) -> RobotFileParser | HostUnreachable:
        """Parse origin/robots.txt the way RFC 9309 says: 401/403 and 5xx (after retries) disallow
        everything, other 4xx allow everything, and a Crawl-delay slows our pacing for the host."""
        robots = RobotFileParser(f"{origin}/robots.txt")
        try:
            with self.get(robots.url) as response:
                status = response.status_code
                text = self.read_body(response).decode("utf-8", "replace") if status < 400 else ""
        except (requests.RequestException, TooLarge, TimeoutError) as exc:
            return HostUnreachable(f"robots.txt of {origin}: {describe(exc)}")
        if status in (401, 403) or status >= 500:
            robots.disallow_all = True
        elif status >= 400:
            robots.allow_all = True
        else:
            robots.parse(text.splitlines())
            if delay := robots.crawl_delay(self.params.user_agent):
                self.pacer.slow_down(urlsplit(origin).netloc, float(delay))
        return robots

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self._new_session()
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def _new_session(self) -> requests.Session:
        params = self.params
        retry = DoublingRetry(
            total=params.retries,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=["GET"],
            backoff_factor=params.backoff_s,
            respect_retry_after_header=True,
            retry_after_max=params.max_retry_after_s,
            raise_on_status=False,  # the last 429/5xx comes back as a response, recorded as http_error
        )
        session = requests.Session()
        session.headers["User-Agent"] = params.user_agent
        adapter = HTTPAdapter(max_retries=retry)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def close(self) -> None:
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()


def host_of(url: str) -> str:
    return urlsplit(url).netloc


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"

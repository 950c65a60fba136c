"""Polite, bounded HTTP for the scrape: our user agent, per-host pacing, retries that honour
Retry-After, robots.txt by RFC 9309 (Protego), bodies read under a size cap, a wall-clock deadline
on every fetch, and connections only to addresses the AddressPolicy allows.

The deadline and the address check live in the connections themselves (urllib3 connection
subclasses), because only there are the resolved address and the socket at hand: every hop of a
redirect and every retry opens its connection through them. urllib3 gives a connection no handle on
the request it serves, so Fetcher.open hands them the fetch's policy and deadline through a
thread-local (each download runs in one thread, start to end).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from protego import Protego
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.retry import Retry

from styleforge.core.config import ScrapeParams
from styleforge.tasks.scrape.addresses import AddressPolicy, BlockedAddress

RETRY_STATUSES = (429, 500, 502, 503, 504)
CHUNK_BYTES = 64 * 1024
# robots.txt answered 5xx (after retries) disallows everything (RFC 9309 2.3.1.4), other 4xx allow
# everything (2.3.1.3), except 401/403, taken as "keep out" as urllib.robotparser and Google's
# crawler long did: the cautious reading for a scraper.
DISALLOW_ALL = Protego.parse("User-agent: *\nDisallow: /\n")
ALLOW_ALL = Protego.parse("")


class TooLarge(Exception):
    """The body passed max_bytes; `seen` is how many bytes had arrived."""

    def __init__(self, seen: int, limit: int, how: str):
        super().__init__(f"{how} {seen} bytes > max_bytes {limit}")
        self.seen = seen


class DeadlineExceeded(Exception):
    """A fetch took longer than max_download_s. Not an OSError on purpose: urllib3 retries those,
    and a fetch out of time must end, not start over."""


class HostUnreachable(Exception):
    """robots.txt could not be fetched at all (dead host, refused, timed out)."""


class PageError(Exception):
    """A source page could not be fetched or rendered; the message says why."""


class Deadline:
    """The wall-clock bound of one fetch. A timer shuts down every socket the fetch uses when time is
    up, which wakes a read blocked on a server that trickles bytes (a per-read timeout never fires
    while bytes keep coming) at any point: connect, TLS, headers or body."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.ends = time.monotonic() + seconds
        self.expired = False
        self._watched: list[socket.socket] = []  # duplicates of the fetch's sockets (see watch)
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        return max(0.0, self.ends - time.monotonic())

    def exceeded(self, detail: str = "") -> DeadlineExceeded:
        return DeadlineExceeded(f"took over max_download_s {self.seconds:g}s{detail}")

    def check(self) -> None:
        if self.expired or self.remaining() <= 0:
            raise self.exceeded()

    def watch(self, sock: socket.socket) -> None:
        """Shut sock down when time is up. It is watched through a duplicate descriptor: the
        original object may be wrapped for TLS (which detaches it) or closed by urllib3, and a
        shutdown through any descriptor ends the connection for all of them."""
        duplicate = socket.socket(fileno=os.dup(sock.fileno()))
        with self._lock:
            self._watched.append(duplicate)
            if self.expired:
                _shut_down(duplicate)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._watched:
                _shut_down(sock)

    def close(self) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._watched:
                sock.close()
            self._watched.clear()


def _shut_down(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed by the other side
        sock.shutdown(socket.SHUT_RDWR)


@dataclass
class Fetch:
    """What the connections of the fetch under way in this thread must obey."""

    policy: AddressPolicy
    deadline: Deadline


_this_thread = threading.local()


def current_fetch() -> Fetch:
    fetch = getattr(_this_thread, "fetch", None)
    if fetch is None:
        raise RuntimeError("scrape connections are opened only inside Fetcher.open")
    return fetch


class GuardedConnectionMixin:
    """Connects only to an allowed address of the host (resolved here, and the socket connects to
    that very address), within the fetch's deadline, and has its socket watched by the deadline."""

    def _new_conn(self) -> socket.socket:
        fetch = current_fetch()
        fetch.deadline.check()
        if isinstance(self.timeout, (int, float)):  # connect no longer than the fetch has left
            self.timeout = min(self.timeout, fetch.deadline.remaining())
        name = self._dns_host
        try:
            addresses = fetch.policy.addresses(name, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        failure: Exception | None = None
        try:
            for address in addresses:  # like urllib3: the next address when one does not answer
                self._dns_host = address
                try:
                    sock = super()._new_conn()
                    break
                except (ConnectTimeoutError, NewConnectionError) as exc:
                    failure = exc
            else:
                raise failure
        finally:
            self._dns_host = name  # TLS and Host headers go on using the name
        fetch.deadline.watch(sock)
        return sock

    def request(self, *args, **kwargs) -> None:
        if self.sock is not None:  # a kept-alive connection, opened during an earlier fetch
            current_fetch().deadline.watch(self.sock)
        super().request(*args, **kwargs)


class GuardedHTTPConnection(GuardedConnectionMixin, HTTPConnection):
    pass


class GuardedHTTPSConnection(GuardedConnectionMixin, HTTPSConnection):
    pass


class GuardedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = GuardedHTTPConnection


class GuardedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = GuardedHTTPSConnection


class GuardedAdapter(HTTPAdapter):
    """requests' adapter over the guarded connections."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": GuardedHTTPConnectionPool,
            "https": GuardedHTTPSConnectionPool,
        }


class DoublingRetry(Retry):
    """urllib3's Retry, except that the first retry also waits: backoff_factor, then twice that,
    and so on (urllib3 retries the first failure at once). A Retry-After header still wins. A wait
    that would end past the fetch's deadline ends the fetch instead."""

    def get_backoff_time(self) -> float:
        failures = len(self.history)  # requests follows redirects itself, so these are all failures
        if failures == 0:
            return 0.0
        return min(self.backoff_max, self.backoff_factor * 2 ** (failures - 1))

    def sleep(self, response=None) -> None:
        retry_after = self.get_retry_after(response) if self.respect_retry_after_header and response else None
        wait = retry_after or self.get_backoff_time()
        deadline = current_fetch().deadline
        if wait > deadline.remaining():
            raise deadline.exceeded(f" (the server asked for a {wait:g}s wait before retrying)")
        super().sleep(response)


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
        self.policy = AddressPolicy(params.allow_private)
        self.pacer = HostPacer(params.per_host_rate)
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self._robots: dict[str, Protego | HostUnreachable | BlockedAddress] = {}

    @contextlib.contextmanager
    def open(self, url: str) -> Iterator[requests.Response]:
        """A streamed GET, redirects followed; read the body with read_body inside the with. Raises
        BlockedAddress for a hop to a refused address and DeadlineExceeded past max_download_s."""
        self.pacer.wait(host_of(url))
        fetch = _this_thread.fetch = Fetch(self.policy, Deadline(self.params.max_download_s))
        try:
            with self._session().get(url, stream=True, timeout=self.params.timeout_s) as response:
                if fetch.deadline.expired:  # the shutdown ended the headers early: they are not all there
                    raise fetch.deadline.exceeded()
                yield response
        except (requests.RequestException, OSError):
            if fetch.deadline.expired:  # the timer's shutdown is what broke the connection
                raise fetch.deadline.exceeded() from None
            raise
        finally:
            _this_thread.fetch = None
            fetch.deadline.close()

    def read_body(self, response: requests.Response) -> bytes:
        """The body, decoded from any Content-Encoding, refused past max_bytes or max_download_s.
        Content-Length is checked first so that an honest oversized answer is never read."""
        limit = self.params.max_bytes
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            raise TooLarge(int(declared), limit, "Content-Length")
        body = bytearray()
        for chunk in response.iter_content(CHUNK_BYTES):
            body += chunk
            if len(body) > limit:
                raise TooLarge(len(body), limit, "streamed")
        deadline = current_fetch().deadline
        if deadline.expired:  # a body without Content-Length just ends when the socket is shut down
            raise deadline.exceeded()
        return bytes(body)

    def allowed(self, url: str) -> bool:
        """Whether robots.txt lets our user agent fetch url; robots.txt is fetched once per host.
        Raises HostUnreachable when the host's robots.txt cannot be fetched at all, BlockedAddress
        when the host is an inside address that allow_private does not list."""
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
        if origin not in self._robots:
            self._robots[origin] = self._read_robots(origin)
        robots = self._robots[origin]
        if isinstance(robots, Exception):
            raise type(robots)(*robots.args)  # a fresh one: re-raising one object grows its traceback
        return robots.can_fetch(url, self.params.user_agent)

    def _read_robots(self, origin: str) -> Protego | HostUnreachable | BlockedAddress:
        """Parse origin/robots.txt by RFC 9309 (Protego: wildcards, $, the longest match wins);
        answers without rules as DISALLOW_ALL and ALLOW_ALL say; a Crawl-delay slows our pacing
        for the host."""
        try:
            with self.open(f"{origin}/robots.txt") as response:
                status = response.status_code
                text = self.read_body(response).decode("utf-8", "replace") if status < 400 else ""
        except BlockedAddress as exc:
            return exc
        except (requests.RequestException, OSError, TooLarge, DeadlineExceeded) as exc:
            return HostUnreachable(f"robots.txt of {origin}: {describe(exc)}")
        if status in (401, 403) or status >= 500:
            return DISALLOW_ALL
        if status >= 400:
            return ALLOW_ALL
        robots = Protego.parse(text)
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
        # No proxy from the environment: through one, the address check would see the proxy's
        # address, not the server's.
        session.trust_env = False
        session.headers["User-Agent"] = params.user_agent
        adapter = GuardedAdapter(max_retries=retry)
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

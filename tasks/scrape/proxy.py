"""The browser's way out: a filtering HTTP proxy in the scraper process that Chromium sends every
request through (navigations, scripts, XHR and fetch, iframes, websockets), loopback included.
It resolves each target itself, refuses inside addresses the AddressPolicy does not allow (403,
recorded), and connects to the address it checked, so a name that resolves inside, a redirect hop
and DNS rebinding are caught as they are for the scraper's own downloads.

Written by hand, on the standard library's http.server: proxy.py, the maintained pure-Python proxy,
runs its acceptors as multiprocessing children (a SIGKILL of the scraper would orphan them, and
refusals could only come back through IPC), and mitmproxy is a TLS-intercepting framework of some
thirty packages. What is needed is small: read one request head, check the target, connect, and
copy bytes. Plain http requests are forwarded one per connection (Connection: close upstream, and
the browser's connection closed after the answer); https and websockets are CONNECT tunnels,
copied blind.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from styleforge.tasks.scrape.addresses import AddressPolicy, BlockedAddress

log = logging.getLogger(__name__)

HOP_BY_HOP = {"connection", "proxy-connection", "keep-alive", "proxy-authorization", "proxy-authenticate",
              "te", "trailer", "transfer-encoding", "upgrade"}  # RFC 9110 7.6.1: never forwarded
COPY_BYTES = 64 * 1024


@dataclass(frozen=True)
class Refusal:
    target: str  # the URL of a plain http request, host:port of a tunnel
    destination: str  # the request's Sec-Fetch-Dest (document, iframe, script, empty...); "tunnel" for CONNECT
    reason: str


class FilteringProxy:
    """Serves on 127.0.0.1 (a free port) in daemon threads until close()."""

    def __init__(self, policy: AddressPolicy, timeout_s: float):
        self.policy = policy
        self.timeout_s = timeout_s  # connecting upstream, and the longest silence on a connection
        self._refusals: list[Refusal] = []
        self._sockets: set[socket.socket] = set()  # open connections, both sides, for close()
        self._lock = threading.Lock()
        self._server = ProxyServer(("127.0.0.1", 0), ProxyHandler)
        self._server.proxy = self
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="scrape-proxy", daemon=True).start()

    def refusals(self) -> list[Refusal]:
        """The refusals since take_refusals was last called."""
        with self._lock:
            return list(self._refusals)

    def take_refusals(self) -> list[Refusal]:
        """The refusals since the last call, forgotten here."""
        with self._lock:
            refusals, self._refusals = self._refusals, []
        return refusals

    def refuse(self, refusal: Refusal) -> None:
        log.info("proxy refused %s (%s): %s", refusal.target, refusal.destination, refusal.reason)
        with self._lock:
            self._refusals.append(refusal)

    def connect(self, host: str, port: int) -> socket.socket:
        """A connection to an allowed address of host; BlockedAddress or OSError otherwise."""
        failure: OSError | None = None
        for address in self.policy.addresses(host, port):
            try:
                return self.track(socket.create_connection((address, port), timeout=self.timeout_s))
            except OSError as exc:
                failure = exc
        raise failure

    def track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.add(sock)
        return sock

    def forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with self._lock:  # wakes the threads still copying; they close their sockets themselves
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class ProxyServer(ThreadingHTTPServer):
    proxy: FilteringProxy


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ProxyServer

    @property
    def proxy(self) -> FilteringProxy:
        return self.server.proxy

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.proxy.timeout_s)
        self.proxy.track(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):  # a client that hung up
            super().finish()
        self.proxy.forget(self.connection)

    def do_CONNECT(self) -> None:
        host, _, port = self.path.rpartition(":")
        if not port.isdigit():
            return self.send_error(HTTPStatus.BAD_REQUEST, "CONNECT needs host:port")
        upstream = self._upstream(host.strip("[]"), int(port), self.path, "tunnel")
        if upstream is None:
            return
        self.send_response(HTTPStatus.OK, "Connection Established")
        self.end_headers()
        self.close_connection = True
        try:
            self._copy_both_ways(upstream)
        finally:
            self._close_upstream(upstream)

    def forward(self) -> None:
        """A plain http request in absolute form: sent on with its body, the answer copied back."""
        self.close_connection = True
        url = urlsplit(self.path)
        if url.scheme != "http" or not url.hostname:
            return self.send_error(HTTPStatus.BAD_REQUEST, "a proxy request needs an absolute http URL")
        length = self.headers.get("Content-Length", "0")
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower() or not length.isdigit():
            return self.send_error(HTTPStatus.LENGTH_REQUIRED, "only bodies with a Content-Length are forwarded")
        destination = self.headers.get("Sec-Fetch-Dest", "")
        upstream = self._upstream(url.hostname, url.port or 80, self.path, destination)
        if upstream is None:
            return
        try:
            upstream.sendall(self._request_head(url) + self.rfile.read(int(length)))
            while chunk := upstream.recv(COPY_BYTES):
                self.connection.sendall(chunk)
        except OSError as exc:  # either side hung up or went silent: the browser sees a cut answer
            log.debug("proxy: %s: %s", self.path, exc)
        finally:
            self._close_upstream(upstream)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = forward

    def _upstream(self, host: str, port: int, target: str, destination: str) -> socket.socket | None:
        """The checked connection, or None once the client has been answered with why not."""
        try:
            return self.proxy.connect(host, port)
        except BlockedAddress as exc:
            self.proxy.refuse(Refusal(target, destination or "unknown", str(exc)))
            self.send_error(HTTPStatus.FORBIDDEN, "blocked_address", str(exc))
        except OSError as exc:
            self.send_error(HTTPStatus.BAD_GATEWAY, "upstream unreachable", f"{host}:{port}: {exc}")
        return None

    def _close_upstream(self, upstream: socket.socket) -> None:
        self.proxy.forget(upstream)
        upstream.close()

    def _request_head(self, url) -> bytes:
        named_hop_by_hop = {name.strip().lower() for name in self.headers.get("Connection", "").split(",")}
        lines = [f"{self.command} {url.path or '/'}{'?' + url.query if url.query else ''} HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()
                  if name.lower() not in HOP_BY_HOP | named_hop_by_hop]
        lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _copy_both_ways(self, upstream: socket.socket) -> None:
        """Copy until either side closes, errs or stays silent for timeout_s."""
        peers = {self.connection: upstream, upstream: self.connection}
        with selectors.DefaultSelector() as selector:
            for sock in peers:
                selector.register(sock, selectors.EVENT_READ)
            while ready := selector.select(self.proxy.timeout_s):
                for key, _ in ready:
                    try:
                        chunk = key.fileobj.recv(COPY_BYTES)
                        if not chunk:
                            return
                        peers[key.fileobj].sendall(chunk)
                    except OSError:
                        return

    def log_message(self, format: str, *args) -> None:  # the base class names it `format`
        log.debug("proxy: " + format, *args)

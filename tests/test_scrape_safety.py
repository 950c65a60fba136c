"""The scrape against hostile servers and pages: deadlines that hold while bytes trickle, no fetch
from inside addresses (static and browser), robots.txt by RFC 9309, a bad browser source that
costs only itself, and no browser left behind by a killed scrape.

Every server is real and on 127.0.0.1; the one that stands for an inside service records each
connection it accepts, so "nothing reached it" is checked at the socket, not assumed.
"""

from __future__ import annotations

import html
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from styleforge.app.samplesite import serve
from styleforge.core import procs
from styleforge.core.config import ParamsError, parse_params
from styleforge.tasks.scrape import run
from styleforge.tasks.scrape.browser import PROFILE_PREFIX, remove_dead_profiles, start_ticks
from styleforge.tasks.scrape.http import Fetcher
from tests.conftest import REPO
from tests.test_scrape import (
    TrickySite,
    fast,
    hits,  # noqa: F401 (an autouse fixture: each test starts with no hits)
    manifest,
    page_of,
    status_of,
)

HOSTNAME = socket.gethostname()
TRICKLE_EVERY_S = 0.05
TRICKLE_BYTES = 200  # 10 s of trickle: each test bound is a small fraction of it


def resolves_to_loopback(name: str) -> bool:
    try:
        return socket.gethostbyname(name).startswith("127.")
    except OSError:
        return False


needs_loopback_hostname = pytest.mark.skipif(
    not resolves_to_loopback(HOSTNAME), reason=f"the machine's name {HOSTNAME!r} does not resolve to loopback here"
)


# --- servers ------------------------------------------------------------------------------------


class HostileSite(TrickySite):
    """The test site plus pages that redirect, reach for inside addresses, hang and crash."""

    def route_redirect(self, query: dict, nth: int) -> None:
        self.send_response(302)
        self.send_header("Location", query["to"][0])
        self.send_header("Content-Length", "0")
        self.end_headers()

    def route_probe(self, query: dict, nth: int) -> None:
        """A page that reaches for ?fetch= URLs, ?ws= websockets, ?stun= servers (WebRTC), ?frame=
        iframes and ?script= scripts first, and shows its ?img= images once all of those settled."""
        scripts = "".join(f'<script src="{html.escape(src)}"></script>' for src in query.get("script", []))
        self.send_page(f"""{scripts}<div id="gallery"></div><script>
            const probes = [
              ...{json.dumps(query.get("frame", []))}.map(url => new Promise(settled => {{
                const frame = document.createElement("iframe"); frame.onload = settled; frame.src = url;
                document.body.append(frame); }})),
              ...{json.dumps(query.get("fetch", []))}.map(url => fetch(url).catch(() => null)),
              ...{json.dumps(query.get("ws", []))}.map(url => new Promise(settled => {{
                const ws = new WebSocket(url); ws.onopen = ws.onerror = settled; }})),
              ...{json.dumps(query.get("stun", []))}.map(url => new Promise(settled => {{
                const peer = new RTCPeerConnection({{iceServers: [{{urls: url}}]}});
                peer.createDataChannel("probe");
                peer.onicegatheringstatechange = () => peer.iceGatheringState === "complete" && settled();
                peer.createOffer().then(offer => peer.setLocalDescription(offer));
                setTimeout(settled, 2000); }})),
            ];
            Promise.allSettled(probes).then(() => {{
              for (const src of {json.dumps(query["img"])}) {{
                const img = document.createElement("img"); img.src = src;
                document.getElementById("gallery").append(img);
              }}
            }});
        </script>""")

    def route_busy_loop(self, query: dict, nth: int) -> None:
        """A gallery whose script, once the page has loaded, never returns."""
        self.send_page('<img src="/img/face-003.jpg"><img src="/img/face-004.jpg"><script>'
                       "addEventListener('load', () => setTimeout(() => { for (;;) {} }, 50));</script>")

    def route_crash(self, query: dict, nth: int) -> None:
        """A page whose renderer dies (killed, as a crash ends it) before it shows its images."""
        self.send_page('<div id="gallery"></div><script>fetch("/test/kill-renderer").then(() => {'
                       'document.getElementById("gallery").innerHTML = \'<img src="/img/face-005.jpg">\'; });</script>')

    def route_kill_renderer(self, query: dict, nth: int) -> None:
        for pid in procs.descendants(os.getpid()):  # the scrape runs in this test process
            if "--type=renderer" in command_line(pid):
                os.kill(pid, signal.SIGKILL)
        self.send_bytes(b"done", "text/plain")

    def send_page(self, body: str) -> None:
        self.send_bytes(f"<!doctype html><html><body>{body}</body></html>".encode(), "text/html; charset=utf-8")


class Trickler(BaseHTTPRequestHandler):
    """Answers that never end in time: bodies, a status line and robots.txt sent a byte at a time
    (every TRICKLE_EVERY_S, so no single read ever times out), and a long Retry-After."""

    protocol_version = "HTTP/1.1"
    trickle_robots = False

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/robots.txt":
            robots = b"User-agent: *\nAllow: /\n" + b"#" * TRICKLE_BYTES
            return self.answer(robots, "text/plain", trickle=self.trickle_robots)
        if path == "/page":
            tags = "".join(f'<img src="{html.escape(src)}">' for src in parse_qs(urlsplit(self.path).query)["img"])
            return self.answer(f"<html><body>{tags}</body></html>".encode(), "text/html")
        if path == "/trickle-page":
            return self.answer(b"<html><body>" + b" " * TRICKLE_BYTES, "text/html", trickle=True)
        if path == "/trickle-body.jpg":
            return self.answer(b"\xff" * TRICKLE_BYTES, "image/jpeg", trickle=True)
        if path == "/trickle-unframed.jpg":  # no Content-Length: the body ends when the socket closes
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            return self.trickle(b"\xff" * TRICKLE_BYTES)
        if path == "/trickle-head.jpg":
            return self.trickle(b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * TRICKLE_BYTES)
        if path == "/retry-after.jpg":
            self.send_response(429)
            self.send_header("Retry-After", "30")
            self.send_header("Content-Length", "0")
            return self.end_headers()
        self.send_error(404)

    def answer(self, body: bytes, content_type: str, trickle: bool = False) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.trickle(body) if trickle else self.wfile.write(body)

    def trickle(self, data: bytes) -> None:
        for byte in data:
            try:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            except OSError:  # the scraper hung up: what it should do
                return
            time.sleep(TRICKLE_EVERY_S)

    def log_message(self, format: str, *args) -> None:
        pass


class TricklingRobots(Trickler):
    trickle_robots = True


class RobotsFile(BaseHTTPRequestHandler):
    """Serves `robots` with `status` at /robots.txt."""

    robots = ""
    status = 200

    def do_GET(self) -> None:
        body = self.robots.encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        pass


class RecordingServer(ThreadingHTTPServer):
    """Records every connection it accepts, before reading a byte of it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.connections: list[tuple[str, int]] = []

    def verify_request(self, request, client_address) -> bool:
        self.connections.append(client_address)
        return True


@contextmanager
def local_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[RecordingServer]:
    server = RecordingServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def origin(server: RecordingServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture(scope="module")
def site():
    with serve(0, HostileSite) as base_url:
        yield base_url


@pytest.fixture
def inside():
    """A service on another loopback port that nothing may reach: it records every connection."""
    with local_server(RobotsFile) as server:
        yield server


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def is_running(pid: int) -> bool:
    """Alive and not a zombie (a zombie has ended; only its parent has yet to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# --- allow_private ------------------------------------------------------------------------------


def test_allow_private_entries_are_validated_with_the_key_named():
    assert parse_params({"scrape": {"allow_private": ["127.0.0.1:8765", "[::1]:80", "10.0.0.0/8"]}})
    for bad in ("localhost:8765", "127.0.0.1", "127.0.0.1:99999", "10.0.0.1/8", "fd00::1:80"):
        with pytest.raises(ParamsError, match=r"scrape\.allow_private\.1: .*address and port"):
            parse_params({"scrape": {"allow_private": ["127.0.0.1:1", bad]}})


# --- deadlines ----------------------------------------------------------------------------------


def test_every_fetch_ends_at_max_download_s_while_bytes_trickle_in(site, tmp_path):
    with local_server(Trickler) as trickler, local_server(TricklingRobots) as slow_robots:
        images = [f"{origin(trickler)}/{name}" for name in
                  ("trickle-body.jpg", "trickle-unframed.jpg", "trickle-head.jpg", "retry-after.jpg")]
        images.append(f"{origin(slow_robots)}/any.jpg")
        allowed = [f"127.0.0.1:{server.server_address[1]}" for server in (trickler, slow_robots)]
        params = fast(
            {"url": f"{origin(trickler)}/page?" + urlencode([("img", url) for url in images])},
            {"url": f"{origin(trickler)}/trickle-page"},
            allow_private=allowed, max_download_s=1, timeout_s=2, max_retry_after_s=60, retries=2, concurrency=4,
        )  # fmt: skip
        started = time.monotonic()
        report = run(params, tmp_path)
        elapsed = time.monotonic() - started
    # Serially: the trickling page (1 s), the trickling robots.txt (1 s), then the images in parallel (1 s).
    # Unbounded, each trickle would take TRICKLE_BYTES * TRICKLE_EVERY_S = 10 s.
    assert elapsed < 8, f"the scrape took {elapsed:.1f}s"
    assert report["sources"][1]["status"] == "failed" and "max_download_s 1s" in report["errors"][0]
    errors = dict(zip(manifest(tmp_path).url, manifest(tmp_path).error))
    for url in images[:3]:
        assert "took over max_download_s 1s" in errors[url], (url, errors[url])
    assert "asked for a 30s wait" in errors[images[3]], "a Retry-After past the deadline ends the fetch at once"
    assert "robots.txt of" in errors[images[4]] and "max_download_s" in errors[images[4]]


# --- inside addresses, static -------------------------------------------------------------------


@needs_loopback_hostname
def test_inside_addresses_are_refused_and_nothing_reaches_them(site, tmp_path, inside):
    other = inside.server_address[1]
    refused = [
        f"http://127.0.0.1:{other}/x.png",  # an inside address on the page
        f"/test/redirect?to=http://127.0.0.1:{other}/x.png",  # a redirect from the trusted site to another port
        "/test/redirect?to=http://169.254.169.254/latest/meta-data/",  # to the cloud metadata address
        f"http://{HOSTNAME}:{other}/x.png",  # a name that resolves to loopback
    ]
    params = fast(page_of(site, "/img/face-001.jpg", *refused), {"url": f"http://127.0.0.1:{other}/"},
                  allow_private=[urlsplit(site).netloc])
    report = run(params, tmp_path)
    rows = manifest(tmp_path).set_index("url")
    assert inside.connections == [], "nothing may reach the inside service"
    assert report["statuses"]["blocked_address"] == 4 and report["statuses"]["ok"] == 1
    errors = [rows.loc[url if url.startswith("http") else site + url, "error"] for url in refused]
    assert f"127.0.0.1:{other} is a loopback address not listed in scrape.allow_private" in errors[0]
    assert "loopback" in errors[1] and "169.254.169.254:80 is a link-local address" in errors[2]
    assert f"{HOSTNAME}:{other} resolves to 127.0.0.1" in errors[3]
    second = report["sources"][1]
    assert second["status"] == "blocked_address" and "loopback" in second["error"]


@needs_loopback_hostname
def test_the_machine_name_reaches_the_trusted_site_in_both_modes(site, tmp_path):
    by_name = site.replace("127.0.0.1", HOSTNAME)
    params = fast({"url": f"{by_name}/index.html"}, {"url": f"{by_name}/scroll.html", "mode": "browser"},
                  allow_private=[urlsplit(site).netloc])
    report = run(params, tmp_path)
    assert report["outcome"] == "ok", report["errors"]
    assert [s["images_found"] for s in report["sources"]] == [51, 63]
    assert report["statuses"]["blocked_address"] == 0


# --- robots.txt ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("robots", "status", "allowed", "refused"),
    [
        # RFC 9309: * matches any run of characters, $ anchors the end, the longest match wins.
        ("User-agent: *\nDisallow: /*.gif$\nDisallow: /gallery/\nAllow: /gallery/public/\n", 200,
         ["/a.gif.jpg", "/gallery/public/", "/gallery/public/b.jpg"], ["/a.gif", "/img/b.gif", "/gallery/c.jpg"]),
        ("", 404, ["/anything.jpg"], []),  # other 4xx: no rules
        ("", 403, [], ["/anything.jpg"]),  # 401/403: everything disallowed
        ("", 503, [], ["/anything.jpg"]),  # 5xx (after retries): everything disallowed
    ],
)  # fmt: skip
def test_robots_txt_follows_rfc_9309(robots, status, allowed, refused):
    handler = type("Robots", (RobotsFile,), {"robots": robots, "status": status})
    with local_server(handler) as server:
        fetcher = Fetcher(fast({"url": origin(server)}, retries=0))
        try:
            answers = {path: fetcher.allowed(origin(server) + path) for path in allowed + refused}
        finally:
            fetcher.close()
    assert answers == {path: path in allowed for path in allowed + refused}


# --- inside addresses, browser ------------------------------------------------------------------


@needs_loopback_hostname
def test_the_browser_page_reaches_no_inside_address(site, tmp_path, inside):
    other = inside.server_address[1]
    stun = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # WebRTC would send its STUN requests here
    stun.bind(("127.0.0.1", 0))
    probe = f"{site}/test/probe?" + urlencode([
        ("fetch", f"http://127.0.0.1:{other}/api"),
        ("fetch", "http://169.254.169.254/latest/meta-data/"),
        ("ws", f"ws://127.0.0.1:{other}/socket"),
        ("stun", f"stun:127.0.0.1:{stun.getsockname()[1]}"),
        ("frame", f"http://127.0.0.1:{other}/frame"),
        ("script", f"http://{HOSTNAME}:{other}/script.js"),
        ("img", "/img/face-006.jpg"),
        ("img", f"http://127.0.0.1:{other}/x.png"),
    ])  # fmt: skip
    redirected = f"{site}/test/redirect?to=http://127.0.0.1:{other}/page"
    params = fast({"url": probe, "mode": "browser", "scroll_rounds": 0}, {"url": redirected, "mode": "browser"})
    with stun:
        report = run(params, tmp_path)
        stun.setblocking(False)
        with pytest.raises(BlockingIOError):  # no datagram: WebRTC stayed behind the proxy, which has no UDP
            stun.recv(2048)
    assert inside.connections == [], "nothing may reach the inside service"
    page, navigation = report["sources"]
    assert page["status"] == "ok" and page["images_found"] == 2
    assert set(page["blocked_requests"]) == {
        f"http://127.0.0.1:{other}/api", "http://169.254.169.254/latest/meta-data/", f"127.0.0.1:{other}",
        f"http://127.0.0.1:{other}/frame", f"http://{HOSTNAME}:{other}/script.js",
    }  # fmt: skip
    assert status_of(manifest(tmp_path))["/x.png"] == "blocked_address"
    assert navigation["status"] == "blocked_address" and f"127.0.0.1:{other} is a loopback" in navigation["error"]


# --- a bad browser source costs only itself -----------------------------------------------------


def test_a_hanging_or_crashing_page_costs_only_its_source(site, tmp_path):
    # The busy page's commands wait on its renderer for page_load_timeout_s, or, as often seen
    # here, never come back: the hard per-source deadline ends that browser either way.
    params = fast(
        page_of(site, "/img/face-001.jpg", "/img/face-002.jpg"),
        {"url": f"{site}/test/busy-loop.html", "mode": "browser"},
        {"url": f"{site}/test/crash.html", "mode": "browser"},
        {"url": f"{site}/scroll.html", "mode": "browser", "scroll_rounds": 1},
        page_load_timeout_s=30, script_timeout_s=30, source_deadline_s=4,
    )  # fmt: skip
    started = time.monotonic()
    report = run(params, tmp_path)
    assert time.monotonic() - started < 25
    static, busy, crashed, healthy = report["sources"]
    assert report["outcome"] == "some sources failed"
    assert static["status"] == "ok" and status_of(manifest(tmp_path))["/img/face-001.jpg"] == "ok"
    assert busy["status"] == "failed" and "took over source_deadline_s 4s" in busy["error"], busy["error"]
    assert crashed["status"] == "failed" and "crash" in crashed["error"], crashed["error"]
    assert healthy["status"] == "ok" and healthy["images_found"] == 26, "a fresh browser for the next source"


# --- no browser left behind ---------------------------------------------------------------------


def test_a_killed_browser_scrape_leaves_no_process_and_no_profile(site, tmp_path):
    stuck = "/test/slow.jpg?key=browser-kill&delay=30"
    params = fast({"url": site + stuck, "mode": "browser"}, page_load_timeout_s=60)
    script = (
        "import sys; from pathlib import Path; from styleforge.core.config import ScrapeParams; "
        "from styleforge.tasks.scrape import run; run(ScrapeParams.model_validate_json(sys.argv[1]), Path(sys.argv[2]))"
    )
    scrape = subprocess.Popen([sys.executable, "-c", script, params.model_dump_json(), str(tmp_path)], cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while stuck not in [path for _, path in TrickySite.hits] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stuck in [path for _, path in TrickySite.hits], "the browser never asked for the page"
        profile_mark = f"{PROFILE_PREFIX}{scrape.pid}-"
        tree = {pid: command_line(pid) for pid in procs.descendants(scrape.pid)}
        assert any("chromedriver" in line for line in tree.values())
        assert any(profile_mark in line and "--user-data-dir" in line for line in tree.values()), tree
    finally:
        scrape.kill()  # SIGKILL: no clean-up code of the scrape runs
        scrape.wait()

    def still_running() -> list[str]:  # the same command line too: a pid could have been reused
        return [line for pid, line in tree.items() if is_running(pid) and command_line(pid) == line]

    deadline = time.monotonic() + 10
    while still_running() and time.monotonic() < deadline:
        time.sleep(0.1)
    left = still_running()
    assert left == [], "processes of the killed scrape are still running"
    holders = [pid for pid in map(int, filter(str.isdigit, os.listdir("/proc"))) if profile_mark in command_line(pid)]
    assert holders == [], "a process still holds the killed scrape's profile"
    assert not list(Path(tempfile.gettempdir()).glob(f"{profile_mark}*")), "the profile folder was removed"


def test_profiles_of_dead_owners_are_removed_and_live_ones_kept(tmp_path):
    ended = subprocess.Popen(["true"])
    ended.wait()
    me = os.getpid()
    dead = tmp_path / f"{PROFILE_PREFIX}{ended.pid}-1-abc"
    reused = tmp_path / f"{PROFILE_PREFIX}{me}-{start_ticks(me) + 1}-abc"  # our pid, another start: reused
    live = tmp_path / f"{PROFILE_PREFIX}{me}-{start_ticks(me)}-abc"
    unrelated = tmp_path / "other-folder"
    for folder in (dead, reused, live, unrelated):
        (folder / "Default").mkdir(parents=True)
    remove_dead_profiles(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, unrelated.name])

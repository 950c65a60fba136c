"""Headless Chromium for tests that look at pages: started as the scraper starts it (chromedriver
under the process supervisor, the scraper's switches), but with pictures shown, every request
not bypassed sent to a proxy nobody listens on, and Chrome's network events and console kept."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from selenium import webdriver
from selenium.webdriver.chrome.remote_connection import ChromeRemoteConnection

from styleforge.core import procs
from styleforge.tasks.scrape.browser import CHROMIUM, CHROMIUM_FLAGS, _free_port, _wait_for_driver, start_chromedriver


@contextmanager
def chromium(bypass: str | None = None) -> Iterator[webdriver.Remote]:
    """bypass: a host:port reached directly (a test's HTTP server); without it only files load."""
    process, port = start_chromedriver(grace_s=2)
    try:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        dropped = ("--blink-settings=imagesEnabled",) + (("--proxy-bypass-list",) if bypass else ())
        for flag in CHROMIUM_FLAGS:
            if not flag.startswith(dropped):
                options.add_argument(flag)
        options.add_argument(f"--proxy-server=http://127.0.0.1:{_free_port()}")  # nobody listens there
        if bypass:
            options.add_argument(f"--proxy-bypass-list=<-loopback>;{bypass}")
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
        driver = webdriver.Remote(ChromeRemoteConnection(_wait_for_driver(process, port)), options=options)
        try:
            yield driver
        finally:
            driver.quit()
    finally:
        procs.stop(process, timeout_s=10)


def browser_log(driver: webdriver.Remote, kind: str) -> list[dict]:
    """Chrome's "performance" or "browser" log entries since the last read."""
    return driver.execute("getLog", {"type": kind})["value"]


def requests_sent(driver: webdriver.Remote) -> list[str]:
    """The URLs the page asked for since the performance log was last read."""
    events = [json.loads(entry["message"])["message"] for entry in browser_log(driver, "performance")]
    return [event["params"]["request"]["url"] for event in events if event["method"] == "Network.requestWillBeSent"]

"""The dashboard in a real browser: `streamlit run` on a free port, Debian's Chromium driven by Playwright.

Shared by the browser test (tests/test_browser.py) and the dashboard-overhead benchmark
(bench/dashboard_overhead.py), so that both measure the same server started the same way.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
# No sandbox: the machine runs as root; no background networking: there is no network to reach.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu"]

# Total points of every chart on the page: each plotly chart div's figure data, and the count that each
# Live line chart (dashboard/assets/live_chart.js) writes on its element.
POINTS_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).reduce(
    (n, div) => n + (div.data || []).reduce((m, trace) => m + (trace.x ? trace.x.length : 0), 0), 0)
    + Array.from(document.querySelectorAll('.regnet-chart[data-points]')).reduce(
    (n, div) => n + Number(div.dataset.points), 0)"""


@dataclass
class Dashboard:
    url: str
    started: float  # time.monotonic() when `streamlit run` was started
    process: subprocess.Popen


def wait_for(condition, timeout: float, what: str, interval: float = 0.1):
    """Poll ``condition`` until it returns something truthy; TimeoutError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def chromium() -> Iterator:
    """A headless Chromium (Playwright's sync API), closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def dashboard(env: dict[str, str], log: Path, timeout: float = 60) -> Iterator[Dashboard]:
    """`streamlit run dashboard/app.py` on a free port with ``env`` added, its output in ``log``.

    Started in its own session so that stopping it also stops anything it started; yields once the
    server answers its health check, and raises RuntimeError with the log's tail if it exits first.
    """
    port = free_port()
    url = f"http://localhost:{port}"
    started = time.monotonic()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.port", str(port),
             "--server.headless", "true"], cwd=REPO, env=dict(os.environ, **env), stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: healthy(url) or process.poll() is not None, timeout, "the Streamlit server")
        if process.poll() is not None:
            raise RuntimeError(f"streamlit run exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        yield Dashboard(url, started, process)
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except ProcessLookupError:  # the server and everything it started have already gone
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def points(page) -> int:
    """How many points the plotly charts on ``page`` draw, all traces together."""
    return page.evaluate(POINTS_JS)

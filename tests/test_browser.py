"""`harness dashboard` in a real browser: Chromium (Debian's) driven by Playwright.

Serves the dashboard on a free localhost port over the tiny real matrix's database,
opens every page, checks that the leaderboard table and charts render and that no
Streamlit exception box appears, and saves screenshots under test-artifacts/."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.dashboard_fixture import build_results_db

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"harness dashboard exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the dashboard did not become healthy at {url} within {timeout:.0f} s")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir):
    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium found (/usr/bin/chromium); tests/services.sh installs Debian's chromium as root")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed (pip install playwright)")
    db = build_results_db(tmp_path_factory.mktemp("browser"), tiny_model_dir)
    port = free_port()
    # Its own session: `harness dashboard` starts Streamlit as a child; the group ends both.
    process = subprocess.Popen([sys.executable, "-m", "harness.cli", "dashboard", "--db", str(db), "--port", str(port)],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url, browser
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


PAGES = {  # page -> an element that shows it rendered real content
    "leaderboard": '[data-testid="stDataFrame"]',
    "curves": '[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg',
    "redundancy": '[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg',
    "random": '[data-testid="stMarkdownContainer"] li',
    "claims": '[data-testid="stDataFrame"]',
    "job": '[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg',
}


def test_every_page_renders_in_chromium(served):
    from playwright.sync_api import sync_playwright

    url, executable = served
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1500})
            for name, ready in PAGES.items():
                page.goto(f"{url}/?page={name}")
                page.wait_for_selector(ready, timeout=60_000)
                page.wait_for_timeout(1500)  # let charts finish drawing before the screenshot
                assert page.locator('[data-testid="stException"]').count() == 0, f"exception box on page {name}"
                assert "Generated data" in page.inner_text("body")  # the SQL set is labelled as generated
                shot = ARTIFACTS / ("dashboard.png" if name == "leaderboard" else f"dashboard-{name}.png")
                page.screenshot(path=str(shot), full_page=True)
                assert shot.stat().st_size > 10_000
            page.goto(f"{url}/?page=leaderboard")
            page.wait_for_selector(PAGES["leaderboard"], timeout=60_000)
            assert page.locator('[data-testid="stDataFrame"]').count() >= 2  # leaderboard + job counts
        finally:
            browser.close()

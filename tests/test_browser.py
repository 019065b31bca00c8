"""The app in a real browser: Debian's Chromium, driven by Playwright, against a local server."""

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO / "test-output" / "browser"
# Flags for a root user in a container without network: no sandbox, no background traffic.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_SECONDS = 90
# Only a guard against a hang: a first Generate page loads TensorFlow and a generator, which
# took over 60 s once while other test suites and trainers kept both cores busy.
PAGE_SECONDS = 180

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def app(tmp_path_factory, mnist_path):
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: CI must install Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium package")
    port = _free_port()
    runs_dir = tmp_path_factory.mktemp("browser-runs")
    log_path = runs_dir.parent / "streamlit.log"
    env = {**os.environ, "GAN_RUNS_DIR": str(runs_dir), "GAN_MNIST_PATH": str(mnist_path)}
    env.pop("GAN_DEMO", None)
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "streamlit_app.py",
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]
    with open(log_path, "wb") as log:
        server = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.read().strip() == b"ok":
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Streamlit server did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield SimpleNamespace(url=url, runs_dir=runs_dir)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="module")
def browser_page(app):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(PAGE_SECONDS * 1000)
        yield page
        browser.close()


def _open_page(page, title: str) -> None:
    page.get_by_role("link", name=title).first.click()
    page.get_by_role("heading", name=title, level=1).wait_for()


def _screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _main_image_sources(page) -> list[str]:
    return page.locator('[data-testid="stMain"] [data-testid="stImage"] img').evaluate_all(
        "images => images.filter(i => i.complete && i.naturalWidth > 0).map(i => i.src)"
    )


def _loaded_image_sources(page, other_than: list[str] | None = None) -> list[str]:
    """Wait for loaded images in the main area, the first not in ``other_than``; return their sources.

    A caption can arrive before the browser has fetched the image above it, so the
    sources are polled rather than read once.
    """
    deadline = time.monotonic() + PAGE_SECONDS
    while True:
        sources = _main_image_sources(page)
        if sources and sources[0] not in (other_than or []):
            return sources
        if time.monotonic() > deadline:
            return sources
        page.wait_for_timeout(100)


def test_three_pages_and_generated_grid(app, browser_page):
    page = browser_page
    page.goto(app.url)
    page.get_by_role("heading", name="Train", level=1).wait_for()
    page.locator('[data-testid="stMain"] [data-testid="stDataFrame"]').first.wait_for()
    page.locator('[data-testid="stMain"] [data-testid="stImage"] img').first.wait_for()
    runs_folder = page.locator('[data-testid="stSidebar"]').get_by_label("Runs folder", exact=True)
    assert runs_folder.input_value() == str(app.runs_dir)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert _screenshot(page, "train").stat().st_size > 0

    _open_page(page, "Losses")
    page.locator('[data-testid="stVegaLiteChart"]').first.wait_for()
    assert page.locator('[data-testid="stVegaLiteChart"]').count() >= 3
    assert page.locator('[data-testid="stException"]').count() == 0
    assert _screenshot(page, "losses").stat().st_size > 0

    _open_page(page, "Generate")
    page.get_by_text("digits from seeds 0 to 63").wait_for()
    first_sources = _loaded_image_sources(page)
    assert first_sources, "the generated grid is not shown"
    assert page.locator('[data-testid="stException"]').count() == 0
    assert _screenshot(page, "generate").stat().st_size > 0

    seed_input = page.get_by_label("Seed", exact=True)
    seed_input.fill("5")
    seed_input.press("Enter")
    page.get_by_text("digits from seeds 5 to 68").wait_for()
    new_sources = _loaded_image_sources(page, other_than=first_sources)
    assert new_sources
    assert new_sources[0] != first_sources[0], "another seed shows the same grid"
    assert "seed=5" in page.url
    assert _screenshot(page, "generate-seed-5").stat().st_size > 0

    # The grid captioned with the classifier's predictions.
    from playwright.sync_api import expect

    # A rerun that replaces the checkbox as it is clicked can swallow the click, so an
    # unchecked box is clicked again, up to three times.
    checkbox = page.get_by_role("checkbox", name="Show predicted class and confidence")
    for _ in range(3):
        if checkbox.is_checked():
            break
        page.get_by_text("Show predicted class and confidence").click()
        with contextlib.suppress(AssertionError):
            expect(checkbox).to_be_checked(timeout=10_000)
    expect(checkbox).to_be_checked()
    page.get_by_text("Predicted class and confidence of each digit").wait_for()
    captioned_sources = _loaded_image_sources(page, other_than=new_sources)
    assert captioned_sources
    assert captioned_sources[0] != new_sources[0], "the grid shows no predictions"
    assert page.locator('[data-testid="stException"]').count() == 0
    assert _screenshot(page, "generate-predictions").stat().st_size > 0

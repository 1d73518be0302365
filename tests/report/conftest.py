"""Shared helpers of the compare/report tests: run the CLI, open a page in headless Chromium."""

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

#: Tiny real task: 200 VADER tweets (stratified) on the bundled MiniLM encoder.
DATA = ["--data", "bundled:sentiment-tweets", "--sample", "200", "--tsne-points", "200"]


def cli_env(cache: Path) -> dict:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "TRANSFERKIT_CACHE": str(cache),
            "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def main_in_process(*args) -> tuple[int, str, str]:
    """`transferkit ARGS` through the real entry point, in this process (no interpreter start-up to pay);
    (exit code, stdout, stderr). Strategies still run in their own child processes."""
    import contextlib
    import io

    from transferkit.cli import main

    old = sys.argv
    sys.argv = ["transferkit", *args]
    code = 0
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    finally:
        sys.argv = old
    return code, out.getvalue(), err.getvalue()


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,1000"]


def _missing(why: str):
    if os.environ.get("CI"):
        pytest.fail(f"{why}: CI must install it (.ci/run installs the Debian packages chromium and chromium-driver)")
    pytest.skip(f"{why}: install the Debian packages chromium and chromium-driver (and pip install selenium)")


@pytest.fixture
def browser():
    """Headless Chromium driven by selenium, offline (no Selenium Manager, no background networking)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _missing("selenium is not installed")
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else shutil.which("chromedriver")
    if not binary or not driver_path:
        _missing("chromium or chromedriver is missing")
    profile = tempfile.mkdtemp(prefix="tk-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)

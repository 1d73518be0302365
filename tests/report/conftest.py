"""Headless Chromium for the compare report tests (offline: no Selenium Manager, no background networking)."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

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

"""Headless Chromium for the HTML page's tests, through Selenium and the system's browser and driver (Debian's
``chromium`` and ``chromium-driver``): nothing downloads a browser or a driver.

Also a screenshot of a page, for the results folders' pages:

    python -m tests.browser results/<experiment>/report/index.html screenshot.png
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = "chromedriver"
WINDOW = (1400, 1000)  # px: wide enough for Table 1 without wrapping its numbers


def missing_browser() -> str | None:
    """Why no headless browser can run here, or None when one can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    if not any(shutil.which(name) for name in CHROMIUM):
        return "no chromium installed (apt-get install chromium chromium-driver)"
    if not shutil.which(CHROMEDRIVER):
        return "no chromedriver installed (apt-get install chromium-driver)"
    return None


@contextmanager
def chromium() -> Iterator:
    """A headless Chromium driven by the system's chromedriver, its console log kept (``get_log("browser")``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = next(shutil.which(name) for name in CHROMIUM if shutil.which(name))
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={WINDOW[0]},{WINDOW[1]}"):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # the driver's path given explicitly: Selenium's manager would otherwise try to download one
    driver = webdriver.Chrome(service=Service(shutil.which(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def save_screenshot(page: Path, png: Path, driver=None) -> Path:
    """A screenshot of ``page`` (opened from file://) as it first shows, ``WINDOW`` wide, into ``png``."""
    if driver is None:
        with chromium() as started:
            return save_screenshot(page, png, started)
    driver.get(Path(page).resolve().as_uri())
    driver.set_window_size(*WINDOW)
    png.parent.mkdir(parents=True, exist_ok=True)
    if not driver.save_screenshot(str(png)):
        raise RuntimeError(f"the browser could not save a screenshot to {png}")
    return png


def load_seconds(driver) -> float:
    """How long the page the driver last opened took to load: navigation start to the end of its load event."""
    return driver.execute_script("return performance.getEntriesByType('navigation')[0].loadEventEnd") / 1000


if __name__ == "__main__":
    reason = missing_browser()
    if reason:
        sys.exit(reason)
    with chromium() as browser:
        save_screenshot(Path(sys.argv[1]), Path(sys.argv[2]), browser)
        size = Path(sys.argv[1]).stat().st_size / 1e6
        print(f"{sys.argv[1]}: {size:.1f} MB, loaded in {load_seconds(browser):.2f} s; screenshot {sys.argv[2]}")

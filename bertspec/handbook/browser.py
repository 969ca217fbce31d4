"""Headless Chromium for looking at the handbook as a reader would (Debian's chromium and chromium-driver).

Nothing is downloaded: the driver and the browser are the system's, named by
path, so Selenium never starts its driver manager; the flags keep Chromium off
the network.
"""

import shutil
from contextlib import contextmanager

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
LAPTOP = (1366, 768)  # the smallest common laptop screen: the handbook's first screen must fit in it


def missing() -> str | None:
    """Why no browser test can run here, or None."""
    if next((shutil.which(name) for name in CHROMIUM if shutil.which(name)), None) is None:
        return "no Chromium on this machine (apt-get install chromium chromium-driver)"
    if shutil.which("chromedriver") is None:
        return "no chromedriver on this machine (apt-get install chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    return None


@contextmanager
def chromium(window: tuple[int, int] = LAPTOP):
    """A Selenium driver for headless Chromium, its window ``window`` (width, height) pixels, that records the
    console."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in (*FLAGS, "--window-size={},{}".format(*window)):
        options.add_argument(flag)
    options.binary_location = next(shutil.which(name) for name in CHROMIUM if shutil.which(name))
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def open_page(driver, path) -> None:
    """Open a page as a reader does and wait until it is whole: a report's run log is unpacked and drawn after the
    load event (assets/run_log.js), so wait for it where the page has one."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(path.as_uri())
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "return !document.getElementById('data-container') || document.body.dataset.runLog === 'ready'"))

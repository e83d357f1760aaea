"""A user's browser in the end-to-end tests: Debian's chromium, headless, driven by
Selenium through Debian's chromedriver (both from hack/system-packages.sh).

Workspace hosts are under `rspark.localhost`: Chromium resolves every `*.localhost`
name to 127.0.0.1 itself, where the ingress controller listens, so the browser sends
the workspace's own Host header with no resolver rule. Screenshots go to
`.local/artifacts/e2e/<test>/`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from devtools.localcluster import LOCAL

ARTIFACTS = LOCAL / "artifacts" / "e2e"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# The tests run as root (the real nodes need it): Chromium's sandbox refuses root.
CHROMIUM_ARGUMENTS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--window-size=1400,900",
)
# How long a page is given to show what is expected before it is loaded again.
RELOAD_SECONDS = 10
# Of a page's text, what a failure to find an element on it quotes.
PAGE_TEXT_SHOWN = 2000
# JupyterLab's login page (jupyter_server's templates/login.html).
PASSWORD_INPUT = (By.ID, "password_input")
LOGIN_BUTTON = (By.ID, "login_submit")
# The launcher's card of the R kernel (IRkernel's kernelspec display name is "R").
R_NOTEBOOK_CARD = (By.CSS_SELECTOR, '.jp-LauncherCard[data-category="Notebook"][title="R"]')
FIRST_CELL_EDITOR = (By.CSS_SELECTOR, ".jp-NotebookPanel .jp-Cell .cm-content")
CELL_OUTPUT = (By.CSS_SELECTOR, ".jp-NotebookPanel .jp-OutputArea-output")
# The notebook toolbar's kernel indicator: idle once the kernel has started.
KERNEL_IDLE = (
    By.CSS_SELECTOR,
    '.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status="idle"]',
)
KERNEL_BUSY = (
    By.CSS_SELECTOR,
    '.jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status="busy"]',
)


def listed_file(name: str) -> tuple[str, str]:
    """A file of the file browser's listing, by its name."""
    return (
        By.XPATH,
        f"//*[contains(@class, 'jp-DirListing-itemText')][normalize-space(.)='{name}']",
    )


class Browser:
    """One headless Chromium; every step saves a screenshot under `artifacts`."""

    def __init__(self, driver: WebDriver, artifacts: Path) -> None:
        self.driver = driver
        self.artifacts = artifacts
        self.shots = 0

    def screenshot(self, what: str) -> Path:
        self.shots += 1
        path = self.artifacts / f"{self.shots:02d}-{what}.png"
        self.driver.save_screenshot(str(path))
        return path

    def wait(self, timeout: float) -> WebDriverWait[WebDriver]:
        return WebDriverWait(self.driver, timeout)

    def visible(self, locator: tuple[str, str], timeout: float = 60) -> WebElement:
        """The element once visible; else a failure that says what the page showed (a
        CI log keeps the message, not the screenshot)."""
        try:
            element: WebElement = self.wait(timeout).until(
                expected_conditions.visibility_of_element_located(locator)
            )
        except TimeoutException:
            shot = self.screenshot("not-visible")
            text = self.driver.find_element(By.TAG_NAME, "body").text[:PAGE_TEXT_SHOWN]
            raise AssertionError(
                f"{locator} not visible within {timeout} s at {self.driver.current_url}"
                f" (title {self.driver.title!r}, screenshot {shot.name}); the page says:\n{text}"
            ) from None
        return element

    def open(self, url: str, locator: tuple[str, str], timeout: float = 120) -> WebElement:
        """Open `url` until `locator` shows there, reloading as a user would: just after
        a workspace turns Running, the ingress controller may still answer with its own
        page ("no available server") until it has followed the Ingress and the IDE's
        endpoints, and that page never changes by itself."""
        deadline = time.monotonic() + timeout
        while True:
            self.driver.get(url)
            try:
                element: WebElement = self.wait(RELOAD_SECONDS).until(
                    expected_conditions.visibility_of_element_located(locator)
                )
                return element
            except TimeoutException:
                if time.monotonic() > deadline:
                    return self.visible(locator, timeout=0)  # fails, saying what is there

    def jupyterlab_login(self, url: str, password: str) -> None:
        """Open the workspace's URL and sign in with the password, as a user does."""
        self.open(url, PASSWORD_INPUT)
        self.jupyterlab_sign_in(password)

    def jupyterlab_sign_in(self, password: str, timeout: float = 60) -> None:
        """On JupyterLab's login page (within `timeout`), sign in; wait for the launcher."""
        self.visible(PASSWORD_INPUT, timeout).send_keys(password)
        self.screenshot("login")
        self.visible(LOGIN_BUTTON).click()
        self.visible(R_NOTEBOOK_CARD, timeout=90)
        self.screenshot("launcher")

    def start_r_cell(self, code: str, timeout: float = 120) -> None:
        """A new R notebook from the launcher; type `code` into its first cell and run it
        (Shift+Enter)."""
        self.visible(R_NOTEBOOK_CARD).click()
        editor = self.visible(FIRST_CELL_EDITOR, timeout=90)
        self.visible(KERNEL_IDLE, timeout=timeout)
        editor.click()
        editor.send_keys(code)
        editor.send_keys(Keys.SHIFT, Keys.ENTER)

    def run_r_cell(self, code: str, expected: str, timeout: float = 120) -> str:
        """`start_r_cell`, then wait until an output shows `expected`; return that output."""
        self.start_r_cell(code, timeout)
        try:
            self.wait(timeout).until(
                expected_conditions.text_to_be_present_in_element(CELL_OUTPUT, expected)
            )
        finally:
            self.screenshot("r-cell")
        return self.driver.find_element(*CELL_OUTPUT).text


@contextmanager
def chromium(artifacts: Path, *arguments: str) -> Iterator[Browser]:
    """A headless Chromium for one test, with CHROMIUM_ARGUMENTS and `arguments`; its
    screenshots in `artifacts` (emptied first). Its profile and temporary folders in a
    folder of its own, removed after (Chromium leaves some in TMPDIR when it quits)."""
    shutil.rmtree(artifacts, ignore_errors=True)
    artifacts.mkdir(parents=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (*CHROMIUM_ARGUMENTS, *arguments):
        options.add_argument(argument)
    with tempfile.TemporaryDirectory(prefix="rspark-chromium-") as temporary:
        service = Service(CHROMEDRIVER, env={**os.environ, "TMPDIR": temporary})
        driver = webdriver.Chrome(options=options, service=service)
        try:
            yield Browser(driver, artifacts)
        finally:
            driver.quit()

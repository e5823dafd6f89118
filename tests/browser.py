"""Open a raylab report in Debian's chromium through Playwright (tests/test_report.py), and take the
screenshot that docs/report.md shows:

    python tests/browser.py results/copy-demo/report.html docs/figures/report-copy-demo.png

Playwright for Python drives the system browser by its executable path: a browser downloaded by
`playwright install` cannot be fetched on these machines. .ci/run installs the `chromium` package.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    found = (shutil.which(name) for name in CHROMIUM_NAMES)
    return os.environ.get("RAYLAB_CHROMIUM") or next((path for path in found if path), None)


@contextlib.contextmanager
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where chromium's sandbox refuses to start.
        launched = playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


class OpenReport:
    """A report opened in a page, with every console error and uncaught exception recorded."""

    def __init__(self, launched, path: str | Path, width: int = 1280) -> None:
        self.page = launched.new_page(viewport={"width": width, "height": 900})
        self.errors: list[str] = []
        self.page.on("console", lambda message: self.errors.append(f"console {message.type}: {message.text}") if message.type in ("error", "warning") else None)
        self.page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        self.page.on("dialog", lambda dialog: (self.errors.append(f"dialog: {dialog.message}"), dialog.dismiss()))
        self.requests: list[str] = []
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.goto(Path(path).resolve().as_uri())
        # Every figure drawn: Plotly adds its SVG to each plot's div.
        self.page.wait_for_function("Array.from(document.querySelectorAll('.plot')).every(d => d.querySelector('svg.main-svg'))", timeout=30_000)

    def evaluate(self, script: str, *args):
        return self.page.evaluate(script, *args)

    def close(self) -> None:
        self.page.close()


def screenshot(report: str | Path, png: str | Path) -> None:
    with browser() as launched:
        opened = OpenReport(launched, report)
        if opened.errors:
            raise SystemExit(f"{report}: the page reported errors: {opened.errors}")
        opened.page.screenshot(path=str(png), full_page=True)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python tests/browser.py REPORT.html SCREENSHOT.png")
    screenshot(sys.argv[1], sys.argv[2])
    print(f"wrote {sys.argv[2]}")

"""Screenshots of web-app pages with Playwright driving Debian's Chromium (no browser download).

Used by the browser tests and to make the pictures in ``docs/features.md``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@contextmanager
def browser_page(width: int = 1280, height: int = 900) -> Iterator[Any]:
    """A Playwright page in a fresh Chromium profile (temporary user-data directory), closed on exit."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="mechscope-chromium-") as profile, sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True, args=ARGS,
                                                    viewport={"width": width, "height": height})
        try:
            yield ctx.pages[0] if ctx.pages else ctx.new_page()
        finally:
            ctx.close()


def capture(base_url: str, paths: dict[str, str], out_dir: str | Path, *, full_page: bool = True) -> list[Path]:
    """Screenshot ``base_url + path`` for each ``name: path`` into ``out_dir/name.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with browser_page() as page:
        for name, path in paths.items():
            page.goto(base_url + path, wait_until="networkidle")
            target = out / f"{name}.png"
            page.screenshot(path=str(target), full_page=full_page)
            written.append(target)
    return written


__all__ = ["browser_page", "capture", "CHROMIUM", "ARGS"]

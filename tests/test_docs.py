"""The documentation site: it builds in strict mode, a broken link fails the build, and in a
headless browser every reproduction page shows all of its figures.

Needs the ``docs`` extra (mkdocs-material, mkdocstrings), playwright's Python package and
Debian's ``chromium`` (``make browser``; ``make test`` installs it): no browser is downloaded.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-sync"]


def _build(project: Path, site: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(project / "mkdocs.yml"),
                           "-d", str(site)], capture_output=True, text=True, env=env, timeout=300)


def _reproductions() -> list[Path]:
    return sorted(p.parent for p in (ROOT / "docs" / "reproductions").glob("*/README.md"))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    out = _build(ROOT, site)
    assert out.returncode == 0, out.stdout + out.stderr
    return site


def test_broken_link_fails_the_strict_build(tmp_path):
    """A copy of the docs with one link to a missing page does not build in strict mode (what CI
    runs). Catches a configuration that lets broken links through (links not validated, or
    not strict)."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("*.png", "*.json"))
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    (tmp_path / "docs" / "api.md").write_text("# Python API\n\nNothing here.\n")  # no source tree in the copy
    with (tmp_path / "docs" / "concepts.md").open("a") as f:
        f.write("\nSee [the missing page](missing-page.md).\n")
    out = _build(tmp_path, tmp_path / "site")
    assert out.returncode != 0 and "missing-page.md" in out.stdout + out.stderr, out.stdout + out.stderr


def test_every_reproduction_page_shows_its_figures(site):
    """Open the built site in headless Chromium: the navigation lists every
    docs/reproductions/NAME/README.md, and each such page has one <img> per PNG of its folder,
    each loaded (naturalWidth > 0), and its table. Catches a reproduction missing from the
    navigation (a hand-kept list), figures only linked and not shown, and broken image paths."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("chromium not found: install Debian's chromium (make browser)")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    folders = _reproductions()
    assert len(folders) >= 5
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page()
            page.goto(f"{base}/reproductions/", wait_until="load")
            nav = set(page.eval_on_selector_all("a", "els => els.map(e => e.href)"))
            for folder in folders:
                url = f"{base}/reproductions/{folder.name}/"
                assert url in nav, f"{folder.name} is not in the navigation"
                page.goto(url, wait_until="load")
                images = page.eval_on_selector_all(
                    "article img", "els => els.map(e => [e.getAttribute('src'), e.complete, e.naturalWidth])")
                pngs = {f.name for f in folder.glob("*.png")}
                shown = {src.rsplit("/", 1)[-1] for src, _, _ in images}
                assert pngs and pngs <= shown, (folder.name, pngs - shown)
                bad = [(src, w) for src, done, w in images if not done or w <= 0]
                assert not bad, (folder.name, bad)
                if (folder / "table.md").is_file():
                    assert page.locator("article table").count() >= 1, folder.name
            browser.close()
    finally:
        server.shutdown()

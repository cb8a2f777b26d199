"""The built site (``make book``) in a real browser: every page loads, every image on it has
loaded (``naturalWidth > 0``), every internal link resolves (the file exists and, for
``page.html#id``, the page has that id), and no page throws a JavaScript error.

The site is taken from ``CTXMIX_BOOK_HTML`` (``make book-test`` sets it) or ``outputs/book/_build/html``.
Without a built site the test is skipped with the command to build one -- unless
``CTXMIX_BOOK_HTML`` names a folder, then a missing site is a failure (``make book-test``, CI).
"""
from __future__ import annotations

import functools
import http.server
import os
import threading
import urllib.parse
from pathlib import Path

import pytest

from .harness import ROOT, free_port, launch_browser, require_browser, save_failure_artifacts


def _site() -> Path:
    named = os.environ.get("CTXMIX_BOOK_HTML")
    site = Path(named) if named else ROOT / "outputs" / "book" / "_build" / "html"
    if not (site / "index.html").exists():
        if named:
            pytest.fail(f"CTXMIX_BOOK_HTML={named}: no built site there (make book)", pytrace=False)
        pytest.skip(f"no built site in {site}: run `make run` then `make book` (or `make ci-book`)")
    return site.resolve()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def site_server():
    site = _site()
    port = free_port()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(_Quiet, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield site, f"http://127.0.0.1:{port}"
    httpd.shutdown()
    httpd.server_close()


def _pages(site: Path) -> list:
    skip = ("_static/", "_sources/", "_images/", "genindex.html", "search.html")
    return sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html")
                  if not any(s in p.relative_to(site).as_posix() for s in skip))


@pytest.mark.browser
@pytest.mark.xdist_group("browser")
def test_every_page_image_and_internal_link(site_server, request):
    exe = require_browser()
    from playwright.sync_api import sync_playwright

    site, base = site_server
    pages = _pages(site)
    must = {"index.html", "README.html", "data/README.html", "FIGURES.html"}
    assert must <= set(pages), f"pages missing from the site: {sorted(must - set(pages))}"
    notebooks = [p for p in pages if p.startswith("notebooks/") and p[10:12].isdigit()]
    assert len(notebooks) >= 8, f"only {len(notebooks)} notebook pages: {notebooks}"
    for name, what in (("INSTRUCTORS", "the instructor's guide"), ("GLOSSARY", "the glossary")):
        if (ROOT / "notebooks" / f"{name}.md").exists():
            assert f"notebooks/{name}.html" in pages, f"{what} is missing from the site"

    problems, ids_of, links, n_images = [], {}, [], 0
    with sync_playwright() as pw:
        browser = launch_browser(pw, exe)
        page = browser.new_page()
        page.set_default_timeout(120_000)            # a loaded 2-core CI machine
        page.set_default_navigation_timeout(180_000)
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            for rel in pages:
                errors.clear()
                resp = page.goto(f"{base}/{rel}", wait_until="load")
                if resp is None or resp.status != 200:
                    problems.append(f"{rel}: HTTP {resp.status if resp else 'no response'}")
                    continue
                try:  # every image either loaded or failed (not 'networkidle': a CDN script may hang offline)
                    page.wait_for_function("() => Array.from(document.images).every(i => i.complete)", timeout=60_000)
                except Exception:
                    pass  # the incomplete ones are reported below
                imgs = page.evaluate("""() => Array.from(document.images).map(i => ({
                    src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0}))""")
                n_images += len(imgs)
                problems += [f"{rel}: image did not load: {i['src'][:120]}" for i in imgs if not i["ok"]]
                ids_of[rel] = set(page.evaluate("() => Array.from(document.querySelectorAll('[id]')).map(e => e.id)"))
                for href in page.evaluate("() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"):
                    if href.startswith(base + "/"):
                        links.append((rel, href[len(base) + 1:]))
                # sphinx-thebe 0.3 (part of Jupyter Book 1) declares its script URL twice on every
                # page; harmless (no live code on the site), everything else counts
                problems += [f"{rel}: JavaScript error: {e}" for e in errors
                             if "'THEBE_JS_URL' has already been declared" not in e]
            for rel, target in links:
                path, _, frag = target.partition("#")
                path = urllib.parse.unquote(path.split("?")[0])
                if path == "" or path.endswith("/"):
                    path += "index.html"
                if not (site / path).is_file():
                    problems.append(f"{rel}: broken link to {target}")
                    continue
                if frag and path in ids_of and urllib.parse.unquote(frag) not in ids_of[path]:
                    problems.append(f"{rel}: link to {target}: no element with id {frag!r}")
            assert n_images > 0, "the site holds no image at all"
            assert not problems, f"{len(problems)} problem(s) on the site:\n" + "\n".join(sorted(set(problems))[:80])
            print(f"{len(pages)} pages, {n_images} images, {len(links)} internal links: all fine")
        except BaseException:
            save_failure_artifacts(request.node.name, page, notes=problems)
            raise
        finally:
            browser.close()

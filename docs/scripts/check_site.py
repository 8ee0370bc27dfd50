r"""Open every page of the built docs site in headless Chromium, offline, and check what it shows.

``python docs/scripts/check_site.py [--screenshots DIR]`` builds the site with
``mkdocs build --strict`` into a temporary folder, serves it on 127.0.0.1 and opens each of its
HTML pages in headless Chromium that can reach nothing but that server (host names resolve to
nothing and every other address goes to a dead proxy). After MathJax has run, a page fails
when it shows

* raw TeX: a text node outside code blocks that still holds ``\(``, ``\[``, ``$$`` or ``\frac``,
  or a formula (``.arithmatex``) that MathJax did not turn into an ``mjx-container``;
* a formula that does not render: a macro MathJax does not know, an ``merror`` node, a glyph
  MathJax drew no character for (blank space on screen) or a web font that failed to load;
* a broken image: an ``<img>`` that did not load (``naturalWidth`` 0);
* a failed request: a file of the site that is missing (HTTP 4xx/5xx) or any request that
  leaves 127.0.0.1 (a CDN, web fonts, an API);
* a JavaScript error in the browser console.

It prints each problem as ``page: problem`` and a one-line summary, saves a screenshot of a
formula-heavy page (``concepts/temperature/`` unless ``--screenshot-page`` says otherwise) when
``--screenshots DIR`` is given, and exits 1 when any page has a problem (2 when the browser or
the build cannot start). Needs ``chromium`` and ``chromedriver`` (Debian: ``apt-get install
chromium chromium-driver``) and ``pip install selenium``; selenium is told where the driver is,
so it downloads nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"

# Runs in the page (selenium's execute_async_script: the last argument is the callback). Waits
# for MathJax's first typeset and until no formula is left unconverted (at most `limit` ms),
# for every image and for the web fonts, then reports what the page shows.
PAGE_PROBE = r"""
const [limit, done] = arguments;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const pending = () =>
  [...document.querySelectorAll(".arithmatex")].filter((el) => !el.querySelector("mjx-container"));
(async () => {
  const start = performance.now();
  const formulas = document.querySelectorAll(".arithmatex").length;
  let mathjax = "none needed";
  if (formulas) {
    while (!(window.MathJax && MathJax.startup && MathJax.startup.promise)) {
      if (performance.now() - start > limit) break;
      await sleep(50);
    }
    if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
      try {
        await MathJax.startup.promise;
        mathjax = "ran";
      } catch (err) {
        mathjax = "failed: " + err;
      }
      while (pending().length && performance.now() - start < limit) await sleep(100);
    } else {
      mathjax = "did not load";
    }
  }
  const images = [...document.images];
  await Promise.all(images.map((img) => img.complete ? null : new Promise((resolve) => {
    img.addEventListener("load", resolve);
    img.addEventListener("error", resolve);
    setTimeout(resolve, limit);
  })));
  await Promise.race([document.fonts.ready, sleep(limit)]);

  const skip = "code, pre, script, style, textarea, mjx-container, .highlight";
  const rawTex = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.nodeValue;
    if (!/\\\(|\\\[|\$\$|\\frac/.test(text)) continue;
    if (node.parentElement && node.parentElement.closest(skip)) continue;
    if (node.parentElement && node.parentElement.closest(".arithmatex")) {
      if (!node.parentElement.closest(".arithmatex").querySelector("mjx-container")) continue;
    }  // a formula MathJax did not convert is reported once, as not typeset
    rawTex.push(text.trim().replace(/\s+/g, " ").slice(0, 80));
  }
  const texErrors = [
    ...[...document.querySelectorAll("mjx-merror")].map((el) => el.textContent),
    ...[...document.querySelectorAll('mjx-assistive-mml [mathcolor="red"]')].map(
      (el) => "undefined " + el.textContent),
  ];
  // CommonHTML draws every glyph as the ::before content of an mjx-c element, from CSS rules it
  // writes as it typesets: a glyph without content is blank space on screen.
  const blank = [...document.querySelectorAll("mjx-container")].filter((box) =>
    [...box.querySelectorAll("mjx-c")].some((c) => {
      const content = getComputedStyle(c, "::before").content;
      return (content === "none" || content === "normal" || content === "") && !c.textContent;
    }));
  const fontErrors = [...document.fonts]
    .filter((font) => font.status === "error")
    .map((font) => "font " + font.family + " did not load");
  const broken = images
    .filter((img) => !img.complete || img.naturalWidth === 0)
    .map((img) => img.getAttribute("src"));
  done({
    formulas,
    mathjax,
    unconverted: pending().map((el) => el.textContent.trim().slice(0, 80)),
    rawTex,
    unrendered: [
      ...texErrors,
      ...fontErrors,
      ...blank.map((box) => "glyphs not drawn in " +
        box.querySelector("mjx-assistive-mml").textContent.trim().slice(0, 60)),
    ],
    broken,
  });
})();
"""


@dataclasses.dataclass
class PageReport:
    """What one page showed.

    Attributes:
        page: The page's path on the site, e.g. ``concepts/temperature/``.
        raw_tex: Raw TeX problems (text nodes with TeX, formulas MathJax did not convert).
        unrendered: Formulas that do not render (TeX errors, glyphs not drawn, fonts missing).
        broken_images: ``src`` of every image that did not load.
        failed_requests: Requests for missing site files and requests that left 127.0.0.1.
        js_errors: Severe messages of the browser console.
    """

    page: str
    raw_tex: list[str] = dataclasses.field(default_factory=list)
    unrendered: list[str] = dataclasses.field(default_factory=list)
    broken_images: list[str] = dataclasses.field(default_factory=list)
    failed_requests: list[str] = dataclasses.field(default_factory=list)
    js_errors: list[str] = dataclasses.field(default_factory=list)

    def problems(self, most: int = 5) -> list[str]:
        """The problems as lines of text (empty when the page is fine).

        Args:
            most: Lines per kind of problem; the rest are counted in one more line.

        Returns:
            One line per problem, ``kind: detail``.
        """
        lines = []
        for kind, found in (
            ("raw TeX", self.raw_tex),
            ("formula not rendered", self.unrendered),
            ("broken image", self.broken_images),
            ("failed request", self.failed_requests),
            ("JavaScript error", self.js_errors),
        ):
            lines += [f"{kind}: {detail}" for detail in found[:most]]
            if len(found) > most:
                lines.append(f"{kind}: ... and {len(found) - most} more")
        return lines


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the site quietly and records every response with an error status."""

    failures: list[str]  # set on the subclass made by ``serve``

    def log_message(self, format: str, *args: Any) -> None:
        """Print nothing per request."""

    def send_response(self, code: int, message: str | None = None) -> None:
        """Record ``code`` >= 400 with the requested path, then respond as usual."""
        if code >= 400:
            self.failures.append(f"HTTP {code} {self.path}")
        super().send_response(code, message)


@contextmanager
def serve(site: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve ``site`` over HTTP on 127.0.0.1 from a background thread.

    Args:
        site: The built site's folder.

    Yields:
        ``(base_url, failures)``: the server's root URL (ending in ``/``) and the list the server
        appends ``"HTTP <code> <path>"`` to for every error response.
    """
    failures: list[str] = []
    handler = type("Handler", (_Handler,), {"failures": failures})
    server = http.server.ThreadingHTTPServer(
        (HOST, 0), functools.partial(handler, directory=str(site))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}/", failures
    finally:
        server.shutdown()
        server.server_close()


def build_site(dest: Path) -> None:
    """Build the docs into ``dest`` with ``mkdocs build --strict``.

    Args:
        dest: The site folder to write.

    Raises:
        SystemExit: the build failed (exit status 2, with mkdocs' output).
    """
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(dest)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(2)


def site_pages(site: Path) -> list[str]:
    """Every HTML page of ``site`` as its URL path: ``index.html`` files by their folder.

    Args:
        site: The built site's folder.

    Returns:
        Paths relative to the site root, sorted, e.g. ``""``, ``"404.html"``, ``"api/"``.
    """
    pages = []
    for path in site.rglob("*.html"):
        rel = path.relative_to(site).as_posix()
        pages.append(rel[: -len("index.html")] if path.name == "index.html" else rel)
    return sorted(pages)


def start_browser(chromium: str | None, chromedriver: str | None, width: int, height: int) -> Any:
    """Start headless Chromium through selenium, able to reach 127.0.0.1 only.

    Args:
        chromium: The browser binary (None: ``chromium`` or ``chromium-browser`` on ``PATH``).
        chromedriver: The driver binary (None: ``chromedriver`` on ``PATH``).
        width: Window width in pixels.
        height: Window height in pixels.

    Returns:
        A ``selenium.webdriver.Chrome``.

    Raises:
        SystemExit: selenium, the browser or the driver is missing (exit status 2).
    """
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        sys.stderr.write("error: selenium is not installed (pip install selenium)\n")
        raise SystemExit(2) from None
    browser = chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = chromedriver or shutil.which("chromedriver")
    if not browser or not driver:
        sys.stderr.write(
            "error: chromium and chromedriver are needed "
            "(Debian: apt-get install -y chromium chromium-driver)\n"
        )
        raise SystemExit(2)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        "--hide-scrollbars",
        # Offline: no name resolves, and any address but 127.0.0.1 goes to a closed port.
        f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {HOST}",
        f"--proxy-server=http://{HOST}:9",
        f"--proxy-bypass-list={HOST}",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-default-apps",
        "--disable-sync",
        "--no-first-run",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def requested_urls(driver: Any) -> list[str]:
    """URLs the page requested since the last call (from Chromium's performance log).

    Args:
        driver: The selenium driver.

    Returns:
        The URL of every ``Network.requestWillBeSent`` event.
    """
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def check_page(driver: Any, base: str, page: str, failures: list[str], limit_ms: int) -> PageReport:
    """Open one page and report what it shows.

    Args:
        driver: The selenium driver.
        base: The server's root URL.
        page: The page's path relative to the root.
        failures: The server's error-response list (emptied before the page is opened).
        limit_ms: How long to wait for MathJax, images and fonts.

    Returns:
        The page's report.
    """
    failures.clear()
    driver.get_log("performance")  # drop what earlier pages left
    driver.get_log("browser")
    driver.get(base + page)
    seen = driver.execute_async_script(PAGE_PROBE, limit_ms)
    report = PageReport(page or "/")
    report.raw_tex = [f"not typeset: {t}" for t in seen["unconverted"]] + seen["rawTex"]
    if seen["formulas"] and seen["mathjax"] != "ran":
        report.raw_tex.insert(0, f"MathJax {seen['mathjax']} ({seen['formulas']} formulas)")
    report.unrendered = seen["unrendered"]
    report.broken_images = seen["broken"]
    report.failed_requests = list(failures) + [
        f"left {HOST}: {url}"
        for url in requested_urls(driver)
        if not url.startswith((base, "data:", "blob:", "about:"))
    ]
    report.js_errors = [
        entry["message"][:200] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"
    ]
    return report


def screenshot(driver: Any, base: str, page: str, out: Path, limit_ms: int) -> Path:
    """Save a screenshot of ``page`` scrolled to its first displayed formula.

    Args:
        driver: The selenium driver.
        base: The server's root URL.
        page: The page's path relative to the root.
        out: Folder to write into (created).
        limit_ms: How long to wait for MathJax, images and fonts.

    Returns:
        The PNG's path.
    """
    driver.get(base + page)
    driver.execute_async_script(PAGE_PROBE, limit_ms)
    driver.execute_script(
        "const el = document.querySelector('div.arithmatex');"
        "if (el) window.scrollTo(0, el.getBoundingClientRect().top + window.scrollY - 240);"
    )
    time.sleep(1.0)  # let the theme's header finish its scroll transition
    out.mkdir(parents=True, exist_ok=True)
    path = out / (page.strip("/").replace("/", "-") or "index").replace(".html", "")
    path = path.with_suffix(".png")
    driver.save_screenshot(str(path))
    return path


def main(argv: list[str] | None = None) -> int:
    """Build, serve and check the site; print the problems and the summary.

    Args:
        argv: Command-line arguments (None: ``sys.argv[1:]``).

    Returns:
        0 when every page is fine, 1 when any page has a problem.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--site", type=Path, help="check this already built site instead of building one"
    )
    parser.add_argument("--screenshots", type=Path, help="folder for the screenshot")
    parser.add_argument("--screenshot-page", default="concepts/temperature/")
    parser.add_argument("--chromium", help="browser binary (default: chromium on PATH)")
    parser.add_argument("--chromedriver", help="driver binary (default: chromedriver on PATH)")
    parser.add_argument("--wait", type=float, default=20.0, help="seconds to wait per page")
    args = parser.parse_args(argv)
    limit_ms = int(args.wait * 1000)

    with tempfile.TemporaryDirectory(prefix="e3core-site-") as tmp:
        site = args.site
        if site is None:
            site = Path(tmp) / "site"
            build_site(site)
        pages = site_pages(site)
        driver = start_browser(args.chromium, args.chromedriver, 1280, 1000)
        driver.set_script_timeout(args.wait * 3)
        driver.set_page_load_timeout(args.wait * 3)
        try:
            with serve(site) as (base, failures):
                reports = [check_page(driver, base, page, failures, limit_ms) for page in pages]
                if args.screenshots is not None:
                    page, out = args.screenshot_page, args.screenshots
                    print(f"screenshot: {screenshot(driver, base, page, out, limit_ms)}")
        finally:
            driver.quit()

    for report in reports:
        for problem in report.problems():
            print(f"{report.page}: {problem}")
    bad = sum(1 for r in reports if r.problems())
    print(
        f"checked {len(reports)} pages: {sum(1 for r in reports if r.raw_tex)} with raw TeX, "
        f"{sum(len(r.broken_images) for r in reports)} broken images, "
        f"{sum(1 for r in reports if r.unrendered)} with unrendered formulas, "
        f"{sum(1 for r in reports if r.failed_requests)} with failed requests, "
        f"{sum(1 for r in reports if r.js_errors)} with JavaScript errors"
        + (f"; {bad} pages FAILED" if bad else "")
    )
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())

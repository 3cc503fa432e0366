"""HTML reports opened in a real browser (headless Chromium), from disk as a user opens them:
no failed loads, no console errors, every image decoded, every local link a file.

``check_page(path)`` is the reusable part: any page written to disk (``seqnet-run``'s and
``seqnet search``'s index.html here; an archive report later) -> a ``PageCheck`` whose
``problems`` list is empty when the page is sound; it also writes a screenshot beside the page.
It drives Chromium through the DevTools protocol over a pipe (``--remote-debugging-pipe``: no
port, no Python dependency). The browser is Debian's ``chromium-headless-shell`` (or
``chromium``), found on the PATH or at ``$SEQNET_CHROMIUM``; where none is, the tests install it
with apt-get when they may (root), else skip saying how to install it.
"""

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from PIL import Image

from tests import test_run as _run_tests  # seqnet-run's workspace and how it is run

pytestmark = pytest.mark.slow

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "chrome-headless-shell",
            "google-chrome")  # fmt: skip
APT_PACKAGES = ("chromium-headless-shell", "chromium")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--remote-debugging-pipe")  # fmt: skip
VIEWPORT = (1280, 900)
MAX_SHOT_HEIGHT = 12000  # pixels: a screenshot of a longer page is cut there
SKIPPED_SCHEMES = ("http", "https", "mailto", "data", "javascript", "about", "blob")

# in the page, once loaded: wait for every image to decode (or fail), then list the images and
# every href/src with its URL as the browser resolved it
INSPECT = """(async () => {
  if (document.readyState !== "complete") {
    await new Promise((done) => addEventListener("load", done, {once: true}));
  }
  const imgs = [...document.images];
  await Promise.all(imgs.map((i) => i.decode().catch(() => null)));
  const links = [];
  for (const e of document.querySelectorAll("[href], [src]")) {
    for (const a of ["href", "src"]) {
      if (e.hasAttribute(a)) {
        const v = e.getAttribute(a);
        links.push({tag: e.tagName.toLowerCase(), attr: a, value: v,
                    url: new URL(v, document.baseURI).href});
      }
    }
  }
  return {
    href: location.href,
    title: document.title,
    images: imgs.map((i) => ({src: i.getAttribute("src"), url: i.currentSrc || i.src,
                              complete: i.complete, width: i.naturalWidth})),
    links,
    width: document.documentElement.scrollWidth,
    height: document.documentElement.scrollHeight,
  };
})()"""


class BrowserError(Exception):
    """The browser could not be started or did not answer."""


def find_chromium():
    """The Chromium executable: ``$SEQNET_CHROMIUM``, else the first of ``BROWSERS`` on the
    PATH; None when there is none."""
    if os.environ.get("SEQNET_CHROMIUM"):
        return os.environ["SEQNET_CHROMIUM"]
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def install_chromium():
    """Install Debian's headless Chromium with apt-get when there is none and we may (root);
    the executable, or (None, why not)."""
    found = find_chromium()
    if found:
        return found, None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return None, ("no Chromium: install one (apt-get install chromium-headless-shell) or "
                      "set SEQNET_CHROMIUM")  # fmt: skip
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
    for package in APT_PACKAGES:
        done = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", package],
                              env=env, capture_output=True, timeout=900)  # fmt: skip
        if done.returncode == 0 and find_chromium():
            return find_chromium(), None
    return None, f"no Chromium, and apt-get could not install any of {', '.join(APT_PACKAGES)}"


class Browser:
    """Headless Chromium driven over the DevTools pipe (fd 3: to the browser, fd 4: from it;
    each message JSON ended by a NUL byte). A context manager; one page at a time."""

    def __init__(self, executable=None, timeout=60.0):
        self.executable = executable or find_chromium()
        if not self.executable:
            raise BrowserError("no Chromium found")
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="seqnet-chromium-")
        to_r, self._to = os.pipe()
        self._from, from_w = os.pipe()

        def fds():  # in the child: its pipe ends on fds 3 and 4 (whatever numbers they had)
            a, b = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_r, from_w))
            os.dup2(a, 3)
            os.dup2(b, 4)

        self._log = open(Path(self.profile) / "stderr.log", "w+b")  # noqa: SIM115
        self.process = subprocess.Popen(
            [self.executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log,
            preexec_fn=fds, pass_fds=(3, 4), start_new_session=True,
        )  # fmt: skip
        os.close(to_r)
        os.close(from_w)
        self._buffer, self._next, self.events = b"", 0, []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.process.poll() is None:
            with contextlib.suppress(BrowserError):
                self.call("Browser.close", timeout=5)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # the wrapper script and Chromium
                self.process.wait()
        for fd in (self._to, self._from):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def _read(self, deadline):
        """The next message from the browser."""
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from], [], [], left)[0]:
                raise BrowserError("the browser did not answer in time")
            chunk = os.read(self._from, 1 << 20)
            if not chunk:
                self._log.seek(0)
                said = self._log.read().decode(errors="replace").strip().splitlines()[-3:]
                raise BrowserError(f"the browser closed the pipe (exit {self.process.poll()}): "
                                   + " / ".join(said))  # fmt: skip
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method, params=None, session=None, timeout=None):
        """Send one command; its result (events meanwhile go to ``events``)."""
        self._next += 1
        message = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        try:
            os.write(self._to, json.dumps(message).encode() + b"\0")
        except OSError as e:
            raise BrowserError(f"the browser is gone ({e})") from None
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method, session=None, since=0, timeout=None):
        """The first event ``method`` (of ``session``) from ``events[since]`` on, seen already
        or arriving."""
        deadline = time.monotonic() + (timeout or self.timeout)
        seen = since
        while True:
            for e in self.events[seen:]:
                if e.get("method") == method and (session is None or e.get("sessionId") == session):
                    return e
            seen = len(self.events)
            self.events.append(self._read(deadline))


@dataclass
class PageCheck:
    """What opening one page found. ``problems``: empty when the page is sound."""

    page: Path
    title: str = ""
    images: int = 0
    links: int = 0
    failed_loads: list = field(default_factory=list)  # "url: error"
    console_errors: list = field(default_factory=list)
    broken_images: list = field(default_factory=list)  # src of images not decoded
    missing_links: list = field(default_factory=list)  # local href/src with no file
    screenshot: Path = None

    @property
    def problems(self):
        return (
            [f"failed load: {x}" for x in self.failed_loads]
            + [f"console error: {x}" for x in self.console_errors]
            + [f"image not decoded: {x}" for x in self.broken_images]
            + [f"missing file: {x}" for x in self.missing_links]
        )


def _local_path(url):
    """The file a file:// URL names (without its query and fragment); None for other schemes."""
    parts = urlsplit(url)
    return Path(unquote(parts.path)) if parts.scheme == "file" else None


def check_page(page, screenshot=True, browser=None, settle=0.3):
    """Open the HTML file ``page`` from disk in headless Chromium and check it (see
    ``PageCheck``). ``screenshot``: True writes ``<page stem>.screenshot.png`` beside the page,
    a path writes it there, False none. ``browser``: a ``Browser`` to reuse (else one is
    started and closed). ``settle``: seconds to wait after the load for late errors."""
    page = Path(page).resolve()
    if not page.is_file():
        raise FileNotFoundError(page)
    own = browser is None
    browser = browser or Browser()
    try:
        return _check(browser, page, screenshot, settle)
    finally:
        if own:
            browser.close()


def _check(browser, page, screenshot, settle):
    target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    try:
        return _check_in(browser, target, page, screenshot, settle)
    finally:
        browser.call("Target.closeTarget", {"targetId": target})


def _check_in(browser, target, page, screenshot, settle):
    attached = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})
    session = attached["sessionId"]
    start = len(browser.events)
    for domain in ("Page", "Runtime", "Network", "Log"):
        browser.call(f"{domain}.enable", session=session)
    width, height = VIEWPORT
    browser.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                 "deviceScaleFactor": 1, "mobile": False}, session)  # fmt: skip
    nav = browser.call("Page.navigate", {"url": page.as_uri()}, session)
    result = PageCheck(page)
    if nav.get("errorText"):
        result.failed_loads.append(f"{page.as_uri()}: {nav['errorText']}")
        return result
    browser.wait_for("Page.loadEventFired", session, since=start)
    found = browser.call("Runtime.evaluate", {"expression": INSPECT, "awaitPromise": True,
                         "returnByValue": True}, session)  # fmt: skip
    if "exceptionDetails" in found:
        raise BrowserError(f"the page inspection failed: {found['exceptionDetails']}")
    info = found["result"]["value"]
    if unquote(info["href"]) != unquote(page.as_uri()):
        raise BrowserError(f"the browser shows {info['href']}, not {page.as_uri()}")
    time.sleep(settle)
    browser.call("Runtime.evaluate", {"expression": "1"}, session)  # collects late events
    result.title = info["title"]
    result.images, result.links = len(info["images"]), len(info["links"])
    result.broken_images = [
        i["src"] for i in info["images"] if not (i["complete"] and i["width"] > 0)
    ]
    for link in info["links"]:
        path = _local_path(link["url"])
        if path is None:
            if urlsplit(link["url"]).scheme not in SKIPPED_SCHEMES:
                result.missing_links.append(f"{link['value']} (not a file)")
        elif not path.exists():
            result.missing_links.append(f"<{link['tag']} {link['attr']}={link['value']!r}>")
    _collect_events(browser.events[start:], session, result)
    if screenshot:
        shot = page.with_name(page.stem + ".screenshot.png") if screenshot is True else screenshot
        height = min(max(info["height"], VIEWPORT[1]), MAX_SHOT_HEIGHT)
        browser.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height,
                     "deviceScaleFactor": 1, "mobile": False}, session)  # fmt: skip
        data = browser.call("Page.captureScreenshot", {"format": "png"}, session)["data"]
        Path(shot).write_bytes(base64.b64decode(data))
        result.screenshot = Path(shot)
    return result


def _collect_events(events, session, result):
    urls = {}
    for e in events:
        if e.get("sessionId") != session:
            continue
        method, p = e.get("method"), e.get("params", {})
        if method == "Network.requestWillBeSent":
            urls[p["requestId"]] = p["request"]["url"]
        elif method == "Network.loadingFailed":
            result.failed_loads.append(f"{urls.get(p['requestId'], '?')}: {p.get('errorText')}")
        elif method == "Network.responseReceived" and p["response"].get("status", 0) >= 400:
            result.failed_loads.append(f"{p['response']['url']}: HTTP {p['response']['status']}")
        elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
            result.console_errors.append(text)
        elif method == "Runtime.exceptionThrown":
            details = p["exceptionDetails"]
            result.console_errors.append(
                details.get("exception", {}).get("description") or details.get("text", "")
            )
        elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
            entry = p["entry"]
            result.console_errors.append(f"{entry.get('text')} ({entry.get('url', '')})")


# --- the tests -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    executable, why = install_chromium()
    if not executable:
        pytest.skip(why)
    b = Browser(executable)
    try:
        b.call("Browser.getVersion")
    except BrowserError as e:
        b.close()
        pytest.skip(f"Chromium ({executable}) does not start: {e}")
    yield b
    b.close()


def test_the_checker_finds_what_is_broken(browser, tmp_path):
    """The negative check: a missing image, a link to a missing file, a console error and a
    script error are each reported; the sound page beside them is clean."""
    tmp_path = tmp_path / "a report"  # a space in the path, as a user's folder may have
    tmp_path.mkdir()
    Image.new("RGB", (20, 10), (200, 40, 40)).save(tmp_path / "ok.png")
    (tmp_path / "bad.html").write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>bad</title></head><body>'
        '<img src="ok.png"><img src="thumbs/nope.jpg"><a href="missing.mp4">video</a>'
        '<script>console.error("boom"); notDefined();</script></body></html>'
    )
    (tmp_path / "good.html").write_text(
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>good</title></head><body>'
        '<img src="ok.png" alt="ok"><a href="ok.png#top">ok</a> <a href="#x">here</a>'
        '<a href="https://example.com/">away</a></body></html>'
    )
    bad = check_page(tmp_path / "bad.html", browser=browser)
    assert bad.images == 2 and bad.broken_images == ["thumbs/nope.jpg"]
    assert any("thumbs/nope.jpg: net::ERR_FILE_NOT_FOUND" in x for x in bad.failed_loads)
    assert bad.missing_links == ["<img src='thumbs/nope.jpg'>", "<a href='missing.mp4'>"]
    assert "boom" in bad.console_errors and any("notDefined" in x for x in bad.console_errors)
    good = check_page(tmp_path / "good.html", browser=browser)
    assert good.problems == [] and good.images == 1 and good.links == 4
    assert good.screenshot == tmp_path / "good.screenshot.png"
    with Image.open(good.screenshot) as shot:
        assert shot.format == "PNG" and shot.size == VIEWPORT
    with pytest.raises(FileNotFoundError):
        check_page(tmp_path / "none.html", browser=browser)


def _assert_sound(check):
    assert check.problems == [], "\n".join(check.problems)
    assert check.screenshot.is_file() and check.screenshot.stat().st_size > 1000


ws = _run_tests.ws  # a tiny untrained model, a 6-frame video and query crops


def test_seqnet_run_report(browser, ws, tmp_path):
    out = tmp_path / "run"
    result = _run_tests.seqnet_run(ws, ws / "clip.mp4", out, "--topk", "3")
    assert result.exit_code == 0, result.output
    check = check_page(out / "index.html", browser=browser)
    _assert_sound(check)
    # the timeline, and per query its crop, per hit (three) its crop and frame, and per
    # appearance shown its crop, frame and strip
    queries = json.loads((out / "matches.json").read_text())["queries"]
    seen = [a for q in queries for a in q["appearances"] if "thumb" in a]
    assert len(queries) == 2 and all(len(q["hits"]) == 3 for q in queries) and seen
    assert check.images == 1 + 2 * (1 + 3 * 2) + sum(2 + len(a["strip"]) for a in seen)
    assert check.screenshot == out / "index.screenshot.png"
    (out / "thumbs" / "q1_002.jpg").unlink()  # the same page with one frame gone
    broken = check_page(out / "index.html", screenshot=False, browser=browser)
    assert broken.broken_images == ["thumbs/q1_002.jpg"] and broken.screenshot is None
    assert len(broken.missing_links) == 2  # the <img> and the <a> around it


def test_seqnet_search_report(browser, ws, tmp_path, monkeypatch):
    from tests.test_apps_search import search

    monkeypatch.setenv("SEQNET_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "search"
    results = search(ws, out)
    check = check_page(out / "index.html", browser=browser)
    _assert_sound(check)
    assert check.images == 1 + 2 * len(results["matches"])  # the query, per match 2

"""Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe): no
websocket library, no port, and the browser reports page errors, failed loads and image sizes
as structured events instead of log lines to grep."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

# The flags the issue names, plus the pipe. Chromium reads commands on fd 3, answers on fd 4.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def require_chromium() -> str:
    """The browser's path; skips the test without one, or fails it where browser tests are required."""
    binary = chromium_binary()
    if binary is None:
        if os.environ.get("REQUIRE_BROWSER_TESTS") == "1":
            pytest.fail("chromium is not installed: `make browser-deps` (apt-get install chromium)")
        pytest.skip("chromium is not installed (make browser-deps); make test requires it")
    return binary


def artifacts_dir() -> Path:
    """Where browser tests leave screenshots. CI uploads this folder; locally it is beside the
    checkout's other ignored outputs."""
    path = Path(os.environ.get("TEST_ARTIFACTS_DIR") or ROOT / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


class ChromiumError(RuntimeError):
    pass


@dataclass
class PageVisit:
    title: str
    images: list[dict[str, Any]]
    headings: list[str]
    requests: list[str]
    errors: list[str] = field(default_factory=list)
    screenshot: bytes = b""


class Chromium:
    def __init__(self, binary: str, profile: Path, log: Path) -> None:
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        # posix_spawn's dup2 puts the pipe ends on fds 3 and 4 in the child without a preexec
        # hook, which is unsafe in a threaded test process.
        actions = [
            (os.POSIX_SPAWN_DUP2, to_child_r, 3),
            (os.POSIX_SPAWN_DUP2, from_child_w, 4),
            (os.POSIX_SPAWN_DUP2, out, 1),
            (os.POSIX_SPAWN_DUP2, out, 2),
        ]
        argv = [binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"]
        self.pid = os.posix_spawn(binary, argv, dict(os.environ), file_actions=actions, setpgroup=0)
        for fd in (to_child_r, from_child_w, out):
            os.close(fd)
        self._next_id = 0
        self._buffer = b""
        self.events: list[dict[str, Any]] = []
        self.log = log

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_child], [], [], left)[0]:
                raise ChromiumError(f"no answer from Chromium in time; its log: {self.log}")
            chunk = os.read(self._from_child, 1 << 20)
            if not chunk:
                raise ChromiumError(f"Chromium closed the DevTools pipe; its log: {self.log}")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 60
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") != self._next_id:
                self.events.append(answer)
                continue
            if "error" in answer:
                raise ChromiumError(f"{method}: {answer['error']}")
            return answer.get("result", {})

    def wait_event(self, method: str, session: str, after: int, timeout: float = 60) -> dict[str, Any]:
        """The first ``method`` event for ``session`` among events from index ``after`` on."""
        deadline = time.monotonic() + timeout
        for event in self.events[after:]:
            if event.get("method") == method and event.get("sessionId") == session:
                return event
        while True:
            event = self._read_message(deadline)
            self.events.append(event)
            if event.get("method") == method and event.get("sessionId") == session:
                return event

    def close(self) -> None:
        with contextlib.suppress(ChromiumError, OSError):
            self.call("Browser.close")
        try:
            for _ in range(50):
                if os.waitpid(self.pid, os.WNOHANG)[0]:
                    break
                time.sleep(0.1)
            else:
                os.killpg(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        for fd in (self._to_child, self._from_child):
            os.close(fd)


PROBE = """JSON.stringify({
  title: document.title,
  headings: [...document.querySelectorAll('h2')].map(h => h.textContent),
  images: [...document.images].map(i => ({alt: i.alt, complete: i.complete,
                                          width: i.naturalWidth, height: i.naturalHeight}))
})"""


class Tab:
    """One page of a Chromium, driven step by step: navigate, fill, click, wait, screenshot; what
    it requested and what went wrong in it are read from its own events."""

    def __init__(self, browser: Chromium, width: int = 1280, height: int = 900) -> None:
        self.browser = browser
        self.width = width
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session: str = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network", "DOM"):
            self.call(f"{domain}.enable")
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        # Events before this index belong to about:blank.
        self.start = len(browser.events)

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return self.browser.call(method, params, session=self.session)

    def navigate(self, url: str) -> None:
        """Opens ``url`` and returns once its load event fired."""
        after = len(self.browser.events)
        navigation = self.call("Page.navigate", {"url": url})
        if navigation.get("errorText"):
            raise ChromiumError(f"navigating to {url}: {navigation['errorText']}")
        self.browser.wait_event("Page.loadEventFired", self.session, after=after)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        answer = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            raise ChromiumError(f"{expression}: {details.get('exception', {}).get('description') or details['text']}")
        return answer["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60) -> Any:
        """Polls ``expression`` until it is truthy; its value. Raises with the page's errors so far."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise ChromiumError(f"still false after {timeout:.0f} s: {expression}; page errors: {self.errors()}")
            time.sleep(0.05)

    def click(self, selector: str) -> None:
        self.evaluate(f"document.querySelector({json.dumps(selector)}).click()")

    def fill(self, selector: str, text: str) -> None:
        """Types ``text`` into an input or textarea, as a user would: focus, then insert."""
        self.evaluate(f"(e => {{ e.focus(); e.select(); }})(document.querySelector({json.dumps(selector)}))")
        self.call("Input.insertText", {"text": text})

    def set_files(self, selector: str, paths: list[Path]) -> None:
        """Chooses files in an <input type=file>, as the file picker would."""
        root = self.call("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
        node = self.call("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        if not node:
            raise ChromiumError(f"no element matches {selector}")
        self.call("DOM.setFileInputFiles", {"nodeId": node, "files": [str(p) for p in paths]})
        self.evaluate(f"document.querySelector({json.dumps(selector)}).dispatchEvent(new Event('change'))")

    def allow_downloads(self, folder: Path) -> None:
        self.browser.call("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(folder)})

    def screenshot(self) -> bytes:
        """The whole page, not only the viewport."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        shot = self.call(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": self.width, "height": min(size["height"], 16000), "scale": 1},
            },
        )
        return base64.b64decode(shot["data"])

    def _events(self) -> list[dict[str, Any]]:
        return [e for e in self.browser.events[self.start :] if e.get("sessionId") == self.session]

    def requests(self) -> list[str]:
        out = []
        for event in self._events():
            if event.get("method") == "Network.requestWillBeSent":
                url = event["params"]["request"]["url"]
                # Inline images are data: URLs of megabytes: their scheme and start are enough. A
                # file: URL is kept whole (cut at 80 characters, a 3-digit pytest-N dir failed).
                out.append(url[:80] if url.startswith("data:") else url)
        return out

    def errors(self) -> list[str]:
        """Exceptions, console errors, error log entries and failed loads, as lines."""
        out = []
        for event in self._events():
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                out.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append(f"console.{params['type']}: {params.get('args')}")
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                out.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
            elif method == "Network.loadingFailed":
                out.append(f"load failed: {params.get('errorText')}")
        return out


def visit(binary: str, url: str, workdir: Path, width: int = 1280) -> PageVisit:
    """Open ``url`` in a fresh profile; collect errors, requests, image sizes and a full-page
    screenshot."""
    browser = Chromium(binary, workdir / "profile", workdir / "chromium.log")
    try:
        tab = Tab(browser, width)
        tab.navigate(url)
        probe = json.loads(tab.evaluate(PROBE))
        return PageVisit(
            title=probe["title"],
            images=probe["images"],
            headings=probe["headings"],
            requests=tab.requests(),
            errors=tab.errors(),
            screenshot=tab.screenshot(),
        )
    finally:
        browser.close()

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

# The flags the issue names, plus the pipe. Chromium reads commands on fd 3, answers on fd 4.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


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


def visit(binary: str, url: str, workdir: Path, width: int = 1280) -> PageVisit:
    """Open ``url`` in a fresh profile; collect errors, requests, image sizes and a full-page
    screenshot."""
    browser = Chromium(binary, workdir / "profile", workdir / "chromium.log")
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.call(f"{domain}.enable", session=session)
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        # Events before this index belong to about:blank.
        start = len(browser.events)
        navigation = browser.call("Page.navigate", {"url": url}, session=session)
        if navigation.get("errorText"):
            raise ChromiumError(f"navigating to {url}: {navigation['errorText']}")
        browser.wait_event("Page.loadEventFired", session, after=start)
        probe = json.loads(
            browser.call("Runtime.evaluate", {"expression": PROBE, "returnByValue": True}, session=session)["result"][
                "value"
            ]
        )
        size = browser.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
        shot = browser.call(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": width, "height": min(size["height"], 16000), "scale": 1},
            },
            session=session,
        )
        result = PageVisit(
            title=probe["title"],
            images=probe["images"],
            headings=probe["headings"],
            requests=[],
            screenshot=base64.b64decode(shot["data"]),
        )
        for event in browser.events[start:]:
            method, params = event.get("method"), event.get("params", {})
            if method == "Network.requestWillBeSent":
                url = params["request"]["url"]
                # Inline images are data: URLs of megabytes: their scheme and start are enough. A
                # file: URL is kept whole (cut at 80 characters, a 3-digit pytest-N dir failed).
                result.requests.append(url[:80] if url.startswith("data:") else url)
            elif method == "Runtime.exceptionThrown":
                result.errors.append(f"exception: {params['exceptionDetails'].get('text')}")
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                result.errors.append(f"console.{params['type']}: {params.get('args')}")
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                result.errors.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
            elif method == "Network.loadingFailed":
                result.errors.append(f"load failed: {params.get('errorText')}")
        return result
    finally:
        browser.close()

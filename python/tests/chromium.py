"""Open a local HTML file in headless Chromium and report what went wrong in it.

Talks the DevTools protocol over `--remote-debugging-pipe` (fd 3 in, fd 4 out,
NUL-terminated JSON), so it needs no websocket library. Collected: console
errors and warnings, uncaught exceptions, browser log errors (such as failed
loads) and every request that is not to a local file or inline data, which a
self-contained report must never make. DNS is mapped to nowhere, so a request
fails instead of leaving the machine.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND",
)
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:", "chrome-error:")


@dataclass
class PageVisit:
    console_errors: list[str] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    log_errors: list[str] = field(default_factory=list)
    remote_requests: list[str] = field(default_factory=list)
    text: str = ""
    screenshot: Path | None = None

    @property
    def problems(self) -> list[str]:
        return self.console_errors + self.exceptions + self.log_errors + self.remote_requests


def chromium_path() -> str | None:
    return CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")


class _Pipe:
    """One DevTools session over the pipe; collects events while waiting for replies."""

    def __init__(self, process: subprocess.Popen, to_browser: int, from_browser: int) -> None:
        self.process, self.to_browser, self.from_browser = process, to_browser, from_browser
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            for reply in self._read(deadline):
                if reply.get("id") == self.next_id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply.get("result", {})
                self.events.append(reply)

    def wait_for(self, method: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not any(event.get("method") == method for event in self.events):
            try:
                self.events.extend(self._read(deadline))
            except TimeoutError:
                return False
        return True

    def _read(self, deadline: float) -> list[dict[str, Any]]:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no answer from chromium")
            ready, _, _ = select.select([self.from_browser], [], [], left)
            if ready:
                chunk = os.read(self.from_browser, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"chromium exited ({self.process.poll()})")
                self.buffer += chunk
        *messages, self.buffer = self.buffer.split(b"\0")
        return [json.loads(message) for message in messages if message]


def visit(path: Path, user_data_dir: Path, settle_seconds: float = 2.0, timeout: float = 60.0,
          screenshot: Path | None = None, viewport: tuple[int, int] = (1400, 1300)) -> PageVisit:
    """Load `path` and collect what a user would see in the console, plus any remote request;
    with `screenshot`, also a PNG of the page in a `viewport` (width, height) without scrollbars,
    from the same browser run."""
    binary = chromium_path()
    if binary is None:
        raise FileNotFoundError("chromium not found: run `make browser`")
    commands_read, commands_write = os.pipe()
    replies_read, replies_write = os.pipe()

    def wire_fds() -> None:  # in the child: the pipe ends on fds 3 and 4, as chromium expects
        high_in, high_out = os.dup(commands_read), os.dup(replies_write)
        os.dup2(high_in, 3)
        os.dup2(high_out, 4)

    process = subprocess.Popen(
        [binary, *FLAGS, f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe", "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        pass_fds=(3, 4), preexec_fn=wire_fds,
    )
    os.close(commands_read)
    os.close(replies_write)
    pipe = _Pipe(process, commands_write, replies_read)
    try:
        return _visit(pipe, path, settle_seconds, timeout, screenshot, viewport)
    finally:
        try:
            pipe.send("Browser.close", timeout=5)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        os.close(commands_write)
        os.close(replies_read)


def _visit(pipe: _Pipe, path: Path, settle_seconds: float, timeout: float, screenshot: Path | None,
           viewport: tuple[int, int]) -> PageVisit:
    target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        pipe.send(f"{domain}.enable", session=session)
    if screenshot is not None:  # a fixed page size, so the screenshot's pixel counts do not depend on defaults
        width, height = viewport
        pipe.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
        pipe.send("Emulation.setScrollbarsHidden", {"hidden": True}, session=session)
    pipe.send("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
    if not pipe.wait_for("Page.loadEventFired", timeout):
        raise TimeoutError(f"{path} did not finish loading in {timeout:.0f} s")
    time.sleep(settle_seconds)  # let the report's scripts render after the load event
    text = pipe.send("Runtime.evaluate", {"expression": "document.body.innerText", "returnByValue": True},
                     session=session)["result"].get("value", "")
    found = _collect(pipe.events, text)
    if screenshot is not None:
        shot = pipe.send("Page.captureScreenshot", {"format": "png"}, session=session)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        found.screenshot = screenshot
    return found


def _collect(events: list[dict[str, Any]], text: str) -> PageVisit:
    found = PageVisit(text=text)
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert", "warning"):
            found.console_errors.append(
                f"console.{params['type']}: " + " ".join(str(arg.get("value", arg.get("description", "")))
                                                         for arg in params.get("args", []))
            )
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            found.exceptions.append(details.get("exception", {}).get("description") or details.get("text", ""))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            found.log_errors.append(params["entry"].get("text", ""))
        elif method == "Network.requestWillBeSent":
            url = params.get("request", {}).get("url", "")
            if not url.startswith(LOCAL_SCHEMES):
                found.remote_requests.append(url)
    return found

"""A real headless Chromium driven over the Chrome DevTools protocol (no extra package:
the ``websockets`` client the tests already use).

``Chromium(tmp, capture_wav=...)`` starts Debian's ``chromium`` with a fake microphone
that plays ``capture_wav`` once from the moment a page opens it (each new
``getUserMedia`` starts the file again); ``await browser.open(url)`` gives a
:class:`Page` to evaluate JavaScript in, poll, and screenshot. Console messages and
uncaught exceptions are kept for failure messages.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import websockets

# the voxloop page's state (``window.voxloop.snapshot()``), and what a timeout prints of
# it: everything but its log, then the log's last 20 lines
SNAPSHOT = "window.voxloop && window.voxloop.snapshot()"
DESCRIBE = (f"(() => {{ const s = {SNAPSHOT}; if (!s) return null;"
            " const log = s.log.slice(-20); delete s.log; return {...s, log}; })()")
# Chromium is started through this, so it gets SIGTERM when the process that started it
# exits, killed or not (prctl PR_SET_PDEATHSIG survives exec): a killed pytest leaves no
# browser behind. A parent already gone before the prctl is caught by the ppid check. (The
# signal follows the starting *thread*: start it from the main thread, not a worker.)
DIE_WITH_PARENT = ("import ctypes, os, signal, sys; "
                   "ctypes.CDLL(None).prctl(1, signal.SIGTERM); "  # 1: PR_SET_PDEATHSIG
                   "os.getppid() == int(sys.argv[1]) or sys.exit('parent gone'); "
                   "os.execv(sys.argv[2], sys.argv[2:])")
INSTALL_HINT = ("no Chromium: scripts/bootstrap.sh installs Debian's 'chromium' package "
                "(apt-get install chromium)")


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Chromium:
    def __init__(self, folder: Path, capture_wav: Path | None = None,
                 size: tuple[int, int] = (900, 860), allow_mic: bool = True,
                 fake_mic: bool = True) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        profile = self.folder / "profile"
        args = [chromium_path(), "--headless", "--no-sandbox", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--remote-debugging-port=0", f"--user-data-dir={profile}",
                f"--window-size={size[0]},{size[1]}",
                "--autoplay-policy=no-user-gesture-required"]
        if fake_mic:  # else the machine's own devices (none on a server)
            args.append("--use-fake-device-for-media-stream")
        if allow_mic:  # say yes to the microphone prompt (without it, headless says no)
            args.append("--use-fake-ui-for-media-stream")
        if capture_wav is not None:  # %noloop: play the file once per capture, then silence
            args.append(f"--use-file-for-fake-audio-capture={capture_wav}%noloop")
        (profile / "DevToolsActivePort").unlink(missing_ok=True)  # a reused profile's
        self.log_path = self.folder / "chromium.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", DIE_WITH_PARENT, str(os.getpid()), *args, "about:blank"],
            stdout=self._log, stderr=subprocess.STDOUT)
        try:
            self.ws_url = self._devtools_url(profile / "DevToolsActivePort", 60.0)
        except BaseException:  # no object comes back to close it
            self.kill()
            raise
        self.ws: websockets.ClientConnection | None = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None
        self.console: list[str] = []

    def _devtools_url(self, port_file: Path, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited ({self.proc.returncode}):\n"
                                   + self.log_path.read_text()[-3000:])
            lines = port_file.read_text().split() if port_file.exists() else []
            if len(lines) >= 2:
                return f"ws://127.0.0.1:{lines[0]}{lines[1]}"
            time.sleep(0.1)
        raise RuntimeError("chromium did not open its DevTools port:\n"
                           + self.log_path.read_text()[-3000:])

    async def connect(self) -> Chromium:
        self.ws = await websockets.connect(self.ws_url, max_size=2**28, open_timeout=60)
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            if "id" in message and message["id"] in self._waiting:
                self._waiting.pop(message["id"]).set_result(message)
            elif message.get("method") == "Runtime.consoleAPICalled":
                args = message["params"]["args"]
                self.console.append(f"console.{message['params']['type']}: " + " ".join(
                    str(a.get("value", a.get("description", ""))) for a in args))
            elif message.get("method") == "Runtime.exceptionThrown":
                details = message["params"]["exceptionDetails"]
                self.console.append("exception: " + details.get("exception", {}).get(
                    "description", details.get("text", "")))

    async def call(self, method: str, params: dict | None = None, session: str | None = None,
                   timeout_s: float = 60.0) -> dict:
        i = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        self._waiting[i] = future
        message = {"id": i, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        await self.ws.send(json.dumps(message))
        reply = await asyncio.wait_for(future, timeout_s)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    async def open(self, url: str) -> Page:
        target = await self.call("Target.createTarget", {"url": "about:blank"})
        attached = await self.call("Target.attachToTarget", {
            "targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"])
        await page.call("Runtime.enable")
        await page.call("Page.enable")
        await page.call("Page.navigate", {"url": url})
        return page

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.ws is not None:
            await self.ws.close()
        self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(20)
        self._log.close()


class Page:
    """``describe``: a JavaScript expression whose value a timeout's message shows (what
    the page held when the wait gave up), or None."""

    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser, self.session = browser, session
        self.describe: str | None = None

    async def call(self, method: str, params: dict | None = None) -> dict:
        return await self.browser.call(method, params, self.session)

    async def evaluate(self, expression: str):
        """The value of a JavaScript expression (awaited if it is a promise)."""
        result = await self.call("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float, what: str = "",
                       every_s: float = 0.25):
        """Poll ``expression`` until it is truthy; return its value."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                value = await self.evaluate(expression)
            except RuntimeError:  # the page is still loading
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout_s:g} s for {what or expression}; "
                                   + await self._described() + "browser console:\n"
                                   + "\n".join(self.browser.console[-30:]))
            await asyncio.sleep(every_s)

    async def _described(self) -> str:
        if self.describe is None:
            return ""
        try:  # a hung page must not hide the timeout it explains
            held = await asyncio.wait_for(self.evaluate(self.describe), 5.0)
            return f"the page held {json.dumps(held)}; "
        except Exception as error:  # whatever failed: say so, and keep the timeout's message
            return f"the page could not be described ({error!r}); "

    async def screenshot(self, path: Path, down_to: str | None = "body > *") -> Path:
        """A PNG of the page, cut below the last element ``down_to`` selects (+ 16 px)."""
        params = {"format": "png", "captureBeyondViewport": False}
        if down_to is not None:
            bottom = await self.evaluate(
                f"Math.max(...[...document.querySelectorAll({down_to!r})].map("
                "e => e.getBoundingClientRect().bottom))")
            width = await self.evaluate("document.documentElement.clientWidth")
            params["clip"] = {"x": 0, "y": 0, "width": width, "height": bottom + 16, "scale": 1}
            params["captureBeyondViewport"] = True
        shot = await self.call("Page.captureScreenshot", params)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

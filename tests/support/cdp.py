"""A minimal Chrome DevTools Protocol driver for headless Chromium (tests only).

    with Browser(chromium_path, profile_dir) as browser:
        page = browser.page()
        page.navigate(url)
        page.wait_for_text(["Functional:qa"], timeout=60)
        png = page.screenshot()

Chromium runs with ``--remote-debugging-port=0`` (it writes the port it picked to
``<user-data-dir>/DevToolsActivePort``) and a fresh ``--user-data-dir``; the page is driven over one WebSocket (``websockets``' sync
client). Only what the UI test needs: navigate, evaluate, screenshot.
"""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import time
import urllib.request

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
)


class Page:
    def __init__(self, websocket_url):
        from websockets.sync.client import connect

        # Entered as a context manager (what websockets >= 17.1 asks for), exited in close().
        self._connection = connect(websocket_url, max_size=64 * 1024 * 1024, open_timeout=30)
        self._socket = self._connection.__enter__()
        self._ids = itertools.count(1)

    def call(self, method, timeout=60, **params):
        message_id = next(self._ids)
        self._socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self._socket.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            if reply.get("id") == message_id:  # events (no id) are ignored
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def navigate(self, url, width=1600, height=1000):
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        self.call("Page.enable")
        self.call("Page.navigate", url=url)

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def text(self):
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def html(self):
        return self.evaluate("document.documentElement.outerHTML") or ""

    def wait_for_text(self, needles, timeout=60.0, interval=0.5):
        """Poll the page's text until every needle is in it; returns the missing ones."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.text()
            missing = [needle for needle in needles if needle not in text]
            if not missing or time.monotonic() > deadline:
                return missing
            time.sleep(interval)

    def screenshot(self):
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def close(self):
        self._connection.__exit__(None, None, None)


class Browser:
    def __init__(self, chromium, profile_dir):
        self.chromium = chromium
        self.profile_dir = profile_dir
        self.process = None
        self.port = None
        self._pages = []

    def __enter__(self):
        import os

        os.makedirs(self.profile_dir, exist_ok=True)
        self.log_path = os.path.join(self.profile_dir, "chromium.log")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [self.chromium, *FLAGS, "--remote-debugging-port=0",
                 f"--user-data-dir={self.profile_dir}", "about:blank"],
                stdout=log, stderr=subprocess.STDOUT,
            )
        # Chromium writes the port it picked to <user-data-dir>/DevToolsActivePort.
        port_file = os.path.join(self.profile_dir, "DevToolsActivePort")
        deadline = time.monotonic() + 90
        while self.port is None and time.monotonic() < deadline and self.process.poll() is None:
            try:
                with open(port_file) as handle:
                    first = handle.readline().strip()
                self.port = int(first) if first else None
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        if self.port is None:
            self.__exit__(None, None, None)
            with open(self.log_path, errors="replace") as handle:
                raise RuntimeError(f"chromium did not open its DevTools port:\n{handle.read()[-3000:]}")
        return self

    def page(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10) as reply:
            targets = json.load(reply)
        target = next(t for t in targets if t.get("type") == "page")
        page = Page(target["webSocketDebuggerUrl"])
        self._pages.append(page)
        return page

    def __exit__(self, *exc_info):
        for page in self._pages:
            try:
                page.close()
            except Exception:
                pass
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return False

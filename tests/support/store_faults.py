"""Tracking stores that misbehave on purpose, and the app's control requests.

``FaultyStore``: a tracking URL whose behaviour the test chooses, as a whole (nothing
listening, HTTP 500, answers after a delay, or a proxy to a real ``mlflow server``) and
for span writes alone (``writes``: failing with 500, slow, hanging, or held until the
test releases them) while ``/health`` and everything else pass through. ``Control``
serves an app's ``CONTROL`` requests (``app_processes.APP``): ``URL/<action>`` runs the
test's function for it, then answers.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from process_watch import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Control:
    """``URL/<action>`` runs ``actions[action]()`` in the test process, then answers."""

    def __init__(self, actions: dict):
        self.actions = dict(actions)
        self.errors: list = []
        control = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                try:
                    control.actions[self.path.strip("/")]()
                except BaseException as exc:  # reported by the test (control.errors)
                    control.errors.append(exc)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self):
        self._server.shutdown()
        self._server.server_close()


class FaultyStore:
    """A tracking store URL whose behaviour the test (or the app) chooses.

    ``mode`` (the whole store): ``proxy`` (forward to ``upstream``, a real server's port),
    ``error`` (HTTP 500 to every request, ``/health`` included), ``slow`` (answer 503
    after ``delay`` seconds), ``down`` (nothing listens: connection refused).
    ``writes`` (span writes only, in ``proxy`` mode; everything else passes through):
    ``pass``, ``error`` (HTTP 500), ``slow`` (forwarded, answered after ``delay``),
    ``hang`` (never answered while the store lives), ``hold`` (kept until ``release()``,
    then forwarded)."""

    SPAN_WRITE = "/v1/traces"  # MLflow's REST store sends log_spans there (OTLP)

    def __init__(self, mode, upstream=None, delay=10.0, writes="pass"):
        self.mode = mode
        self.writes = writes
        self.upstream = upstream
        self.delay = delay
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests = 0
        self.span_writes = 0  # span writes forwarded and answered 200
        self.held = 0  # span writes held (``hold``)
        self._release = threading.Event()
        self._closed = threading.Event()
        self._server = None
        self._switching = threading.Lock()
        self.set_mode(mode)

    def down_once_spans_landed(self):
        """Go down once a span write went through (the app's first spans landed)."""
        wait_until(lambda: self.span_writes, 240, "a span write")
        self.set_mode("down")

    def set_mode(self, mode):
        with self._switching:
            self.mode = mode
            if mode == "down" and self._server is not None:
                self._server.shutdown()
                self._server.server_close()
                self._server = None
            elif mode != "down" and self._server is None:
                self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
                self._server.daemon_threads = True
                threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def release(self):
        """Forward the held span writes, and pass the next ones through."""
        self.writes = "pass"
        self._release.set()

    def close(self):
        self._closed.set()
        self._release.set()
        self.set_mode("down")

    def _handler(self):
        store = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self):
                store.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if store.mode == "proxy":
                    if store.SPAN_WRITE in self.path and store.writes != "pass":
                        return self._span_write_fault(body)
                    return self._forward(body)
                if store.mode == "slow":
                    time.sleep(store.delay)
                    return self._reply(503, b'{"error_code": "TEMPORARILY_UNAVAILABLE"}')
                return self._reply(500, b'{"error_code": "INTERNAL_ERROR", "message": "boom"}')

            def _span_write_fault(self, body):
                writes = store.writes
                if writes == "error":
                    return self._reply(500, b'{"error_code": "INTERNAL_ERROR", "message": "no spans"}')
                if writes == "hang":
                    store._closed.wait()
                    return None
                if writes == "hold":
                    store.held += 1
                    store._release.wait()
                elif writes == "slow":
                    time.sleep(store.delay)
                return self._forward(body)

            def _reply(self, status, body, headers=()):
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _forward(self, body):
                connection = http.client.HTTPConnection("127.0.0.1", store.upstream, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                connection.request(self.command, self.path, body=body, headers=headers)
                reply = connection.getresponse()
                data = reply.read()
                keep = [
                    (k, v) for k, v in reply.getheaders()
                    if k.lower() not in ("content-length", "transfer-encoding", "connection")
                ]
                connection.close()
                if reply.status == 200 and store.SPAN_WRITE in self.path:
                    store.span_writes += 1
                try:
                    self._reply(reply.status, data, keep)
                except OSError:  # the writer is gone (killed): the write landed anyway
                    pass

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

        return Handler

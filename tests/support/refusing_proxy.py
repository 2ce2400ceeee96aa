"""An HTTP proxy in front of a real MLflow server that refuses some of its endpoints.

`RefusingProxy(upstream, refused=[regex, ...])` forwards every request to `upstream`
(method, path, body, headers) and relays the answer, except requests whose path matches
one of `refused`: those get ``403 PERMISSION_DENIED`` in MLflow's error format, like a
server whose access rules or version refuse that API. `refused_paths` lists what was
refused. A context manager with `.url`, `.start()`, `.stop()`; standard library only.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class RefusingProxy:
    def __init__(self, upstream: str, refused):
        self.upstream = urlparse(upstream)
        self.refused = [re.compile(pattern) for pattern in refused]
        self.refused_paths: list[str] = []
        self._lock = threading.Lock()
        self._server = None
        self._thread = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self):
        if self._server is None:
            self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
            self._server.daemon_threads = True
            self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
            self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def refuses(self, path: str) -> bool:
        if any(pattern.search(path) for pattern in self.refused):
            with self._lock:
                self.refused_paths.append(path)
            return True
        return False


def _handler_for(proxy: RefusingProxy):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):
            pass

        def _relay(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if proxy.refuses(self.path.split("?", 1)[0]):
                payload = json.dumps({
                    "error_code": "PERMISSION_DENIED", "message": "refused by the test proxy",
                }).encode()
                self.send_response(403)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
            connection = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=120)
            try:
                connection.request(self.command, self.path, body=body, headers=headers)
                reply = connection.getresponse()
                data = reply.read()
            finally:
                connection.close()
            self.send_response(reply.status)
            for key, value in reply.getheaders():
                if key.lower() not in _HOP_HEADERS:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _relay

    return Handler

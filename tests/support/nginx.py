"""A real nginx reverse proxy on 127.0.0.1, in front of an upstream such as ``mlflow server``.

Import with ``tests/support`` on ``sys.path`` (``import nginx``). ``NginxProxy(upstream,
tls=make_tls_files(...), token="t0ken")`` (a context manager; or ``.start()`` /
``.stop()``) runs the Debian ``nginx`` binary in the foreground (``daemon off``) with its
own prefix, config, pid file, logs and temp dirs in a temporary directory (no system
config is read), listening on a free unprivileged port of 127.0.0.1; ``.url`` is
``https://127.0.0.1:PORT`` (``http://`` without `tls`). Options: `tls` (a
`tls.TlsFiles`) terminates TLS with its server certificate; `token` answers 401 to every
request, ``/health`` included, whose header is not exactly ``Authorization: Bearer
<token>``; `require_client_cert` (needs `tls`) makes nginx verify a client certificate
signed by the same CA (mutual TLS; nginx answers 400 without one). Request bodies of any
size are streamed upstream (``client_max_body_size 0``, no request buffering) and proxy
timeouts are 10 minutes. When running as root the workers stay root, so they can use
the 0700 temp dirs. `server_config` replaces the generated ``server`` block (and the
token ``map``) with your own text inside ``http { }``, ``{port}`` standing for the free
port (e.g. the example proxy of examples/deploy/ rendered for a test; `url`'s scheme then
follows `tls`). ``unavailable()`` says why nginx cannot run here (no binary:
``apt-get install nginx``), or None; `NginxProxy` raises `ServiceUnavailable` then, for
``skip_or_fail`` (switch ``TEST_REQUIRE_NGINX``).
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from support_base import ServiceUnavailable, free_port, start_process, stop_process_group, tail

REQUIRE_ENV = "TEST_REQUIRE_NGINX"
START_TIMEOUT = float(os.environ.get("TEST_NGINX_TIMEOUT", "60"))
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]+")


def nginx_binary() -> str | None:
    """The nginx executable (PATH, then Debian's /usr/sbin), or None."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def unavailable() -> str | None:
    if nginx_binary() is None:
        return "nginx not found (Debian: apt-get install nginx)"
    return None


def _user_directive() -> str:
    if os.geteuid() != 0:
        return ""  # only the superuser's master switches the workers' user
    return f"user {pwd.getpwuid(0).pw_name} {grp.getgrgid(0).gr_name};"


class NginxProxy:
    """nginx proxying ``.url`` to `upstream` (``http://host:port``); see the module."""

    def __init__(self, upstream: str, *, tls=None, token: str | None = None,
                 require_client_cert: bool = False, workdir: str | Path | None = None,
                 extra_server_config: str = "", server_config: str | None = None):
        reason = unavailable()
        if reason:
            raise ServiceUnavailable(reason, REQUIRE_ENV)
        parts = urlsplit(upstream)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"upstream must be http(s)://host:port, not {upstream!r}")
        if token is not None and not _TOKEN.fullmatch(token):
            raise ValueError("token: letters, digits and ._~+/=- only")
        if require_client_cert and tls is None:
            raise ValueError("require_client_cert needs tls")
        self.upstream = f"{parts.scheme}://{parts.netloc}"
        self.tls = tls
        self.token = token
        self.require_client_cert = require_client_cert
        self.extra_server_config = extra_server_config
        self.server_config = server_config
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="synalinks-obs-nginx-"))
        self.conf_path = self.workdir / "nginx.conf"
        self.error_log = self.workdir / "error.log"
        self.access_log = self.workdir / "access.log"
        self.port = None
        self._process = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def _config(self) -> str:
        d = self.workdir
        listen = f"listen 127.0.0.1:{self.port}{' ssl' if self.tls else ''};"
        tls = ""
        if self.tls:
            tls = (f"ssl_certificate {self.tls.server_cert};\n"
                   f"        ssl_certificate_key {self.tls.server_key};\n"
                   "        ssl_protocols TLSv1.2 TLSv1.3;")
            if self.require_client_cert:
                tls += (f"\n        ssl_client_certificate {self.tls.ca_cert};\n"
                        "        ssl_verify_client on;\n        ssl_verify_depth 2;")
        auth_map = auth = ""
        if self.token is not None:
            auth_map = ('map $http_authorization $bearer_ok {\n'
                        f'        default 0;\n        "Bearer {self.token}" 1;\n    }}')
            auth = ('if ($bearer_ok = 0) {\n'
                    '            return 401 "missing or wrong bearer token\\n";\n        }')
        if self.server_config is not None:
            servers = self.server_config.replace("{port}", str(self.port))
        else:
            servers = self._server_block(listen, tls, auth_map, auth)
        return f"""\
{_user_directive()}
daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {self.error_log} info;
events {{ worker_connections 512; }}
http {{
    access_log {self.access_log};
    client_body_temp_path {d}/tmp/client_body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    default_type application/octet-stream;
    client_max_body_size 0;
    client_body_timeout 600s;
    send_timeout 600s;
    keepalive_timeout 600s;
    proxy_connect_timeout 60s;
    proxy_send_timeout 600s;
    proxy_read_timeout 600s;
    proxy_request_buffering off;
    proxy_buffering off;
    proxy_http_version 1.1;
    {servers}
}}
"""

    def _server_block(self, listen, tls, auth_map, auth) -> str:
        return f"""{auth_map}
    server {{
        {listen}
        {tls}
        {auth}
        {self.extra_server_config}
        location / {{
            proxy_pass {self.upstream};
            proxy_set_header Host $http_host;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}"""

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def start(self, timeout: float = START_TIMEOUT) -> NginxProxy:
        """Write the config, start nginx and wait until it accepts connections. A port
        taken meanwhile by someone else is retried with another one. A no-op when
        already running (so ``with proxy.start():`` starts it once)."""
        if self.running:
            return self
        (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            self.port = free_port()
            self.conf_path.write_text(self._config())
            command = [nginx_binary(), "-p", str(self.workdir), "-c", str(self.conf_path),
                       "-e", str(self.error_log)]
            with open(self.workdir / "nginx.out", "ab") as out:
                self._process = start_process(command, cwd=self.workdir, stdout=out,
                                              stderr=subprocess.STDOUT)
            deadline = time.monotonic() + timeout
            while not self._listening():
                if self._process.poll() is not None:
                    break
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"nginx on {self.url} not listening after {timeout}s:\n"
                                       f"{self.log_tail()}")
                time.sleep(0.1)
            else:
                return self
            log = self.log_tail()
            self._process = None
            if "Address already in use" not in log or attempt == 2:
                raise RuntimeError(f"nginx exited before listening:\n{log}")
        raise AssertionError("unreachable")

    def log_tail(self, lines: int = 40) -> str:
        """The end of nginx's error log and console output."""
        return "\n".join(filter(None, (tail(self.error_log, lines),
                                       tail(self.workdir / "nginx.out", lines))))

    def stop(self) -> None:
        """Stop nginx (its process group) and remove its directory if it made it."""
        stop_process_group(self._process)
        self._process = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> NginxProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

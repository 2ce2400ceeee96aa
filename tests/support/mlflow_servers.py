"""``mlflow server`` subprocesses on 127.0.0.1: plain, or with MLflow's basic-auth app.

Import with ``tests/support`` on ``sys.path`` (``import mlflow_servers``). ``MlflowServer()``
(a context manager; or ``.start()`` / ``.stop()``) runs ``python -m mlflow server`` with the
tests' own Python (or `python`, e.g. an older MLflow's venv: ``old_mlflow.py``) in a work
directory (temporary unless given) on a free port; ``.url`` is ``http://127.0.0.1:PORT``.
Defaults: SQLite backend ``<workdir>/mlflow.db`` (or `backend_store_uri`, e.g. PostgreSQL
from ``tests/postgres.py``), ``--serve-artifacts`` to ``<workdir>/artifacts`` with
``--default-artifact-root mlflow-artifacts:/``, ``--workers 1`` (`workers`; each imports
all of MLflow) and MLflow's job runner off (``jobs=True``: seven more processes importing
MLflow, ~10 s of CPU at start, needed only for server-side jobs such as scheduled scorers);
`extra_args` are appended. ``basic_auth=True`` adds ``--app-name basic-auth`` (needs
``pip install 'mlflow[auth]'``, i.e. Flask-WTF; else `ServiceUnavailable`, switch
``TEST_REQUIRE_MLFLOW_AUTH``) with its own ``basic_auth.ini`` (``MLFLOW_AUTH_CONFIG_PATH``),
auth database ``<workdir>/basic_auth.db``, admin `admin_username` / `admin_password`, a
random ``MLFLOW_FLASK_SERVER_SECRET_KEY`` (its CSRF protection requires one) and good
password checks cached `auth_cache_seconds` (0: every request re-hashes, ~1 s on a busy
machine); ``create_user()`` adds a user through the REST API, ``request()`` makes an admin
REST call, ``credentials_env()`` gives a user's ``MLFLOW_TRACKING_USERNAME`` /
``_PASSWORD``. ``start()`` waits for ``GET /health`` (public even with basic auth) to
answer 200, up to ``TEST_MLFLOW_SERVER_TIMEOUT`` seconds (240), retrying on another port if
the chosen one was taken meanwhile; ``stop()`` kills the whole process group. The server's
output goes to ``.log_path``; errors quote its end.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from support_base import ServiceUnavailable, free_port, start_process, stop_process_group, tail

START_TIMEOUT = float(os.environ.get("TEST_MLFLOW_SERVER_TIMEOUT", "240"))
REQUIRE_AUTH_ENV = "TEST_REQUIRE_MLFLOW_AUTH"
ADMIN_USERNAME = "admin"
# MLflow wants >= 12 characters and refuses the old shipped default ("password1234").
ADMIN_PASSWORD = "admin-password-for-tests"
# Credentials and tracking settings of the tests' own process must not reach the server.
_DROPPED_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                "MLFLOW_TRACKING_TOKEN", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID",
                "MLFLOW_AUTH_CONFIG_PATH", "MLFLOW_AUTH_ADMIN_USERNAME",
                "MLFLOW_AUTH_ADMIN_PASSWORD")


def auth_unavailable(python: str = sys.executable) -> str | None:
    """Why `python` cannot run ``--app-name basic-auth`` (no Flask-WTF), or None."""
    probe = subprocess.run([python, "-c", "import flask_wtf"], capture_output=True,
                           timeout=120, check=False)
    if probe.returncode != 0:
        return f"MLflow's basic-auth app needs Flask-WTF (pip install 'mlflow[auth]') in {python}"
    return None


class MlflowServer:
    """A real ``mlflow server`` subprocess bound to 127.0.0.1; see the module."""

    def __init__(self, workdir: str | Path | None = None, *, python: str = sys.executable,
                 backend_store_uri: str | None = None, workers: int = 1,
                 basic_auth: bool = False, admin_username: str = ADMIN_USERNAME,
                 admin_password: str = ADMIN_PASSWORD, auth_cache_seconds: int = 300,
                 jobs: bool = False, extra_args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None):
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="synalinks-obs-mlflow-"))
        self.python = str(python)
        self.artifacts_dir = self.workdir / "artifacts"
        self.log_path = self.workdir / "server.log"
        self.backend_store_uri = backend_store_uri or f"sqlite:///{self.workdir / 'mlflow.db'}"
        self.workers = workers
        self.basic_auth = basic_auth
        self.admin_username = admin_username
        self.admin_password = admin_password
        self.auth_cache_seconds = auth_cache_seconds
        self.jobs = jobs
        self.extra_args = list(extra_args)
        self.extra_env = dict(env or {})
        self.port = None
        self.killed_on_stop: list[str] = []
        self._process = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    uri = url

    def _command(self) -> list[str]:
        args = [self.python, "-m", "mlflow", "server", "--host", "127.0.0.1",
                "--port", str(self.port), "--workers", str(self.workers),
                "--backend-store-uri", self.backend_store_uri,
                "--serve-artifacts", "--default-artifact-root", "mlflow-artifacts:/",
                "--artifacts-destination", str(self.artifacts_dir)]
        if self.basic_auth:
            args += ["--app-name", "basic-auth"]
        return args + self.extra_args

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
        if self.python != sys.executable:
            # Another interpreter (e.g. an old MLflow's venv) must not see our paths.
            for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
                env.pop(name, None)
        # No network here: litellm, imported by the server, would fetch its price table.
        env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "true" if self.jobs else "false"
        if self.basic_auth:
            config = self.workdir / "basic_auth.ini"
            config.write_text(
                "[mlflow]\n"
                "default_permission = READ\n"
                f"database_uri = sqlite:///{self.workdir / 'basic_auth.db'}\n"
                f"admin_username = {self.admin_username}\n"
                f"admin_password = {self.admin_password}\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
                f"auth_cache_ttl_seconds = {self.auth_cache_seconds}\n"
            )
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(config)
            # The auth app's CSRF protection refuses to start without a static key.
            env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_hex(16))
        return {**env, **self.extra_env}

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=5) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def start(self, timeout: float | None = None) -> MlflowServer:
        """Launch the server and wait until ``GET /health`` answers 200 (a no-op when
        already running, so ``with server.start():`` starts it once)."""
        if self.running:
            return self
        timeout = START_TIMEOUT if timeout is None else timeout
        if self.basic_auth:
            reason = auth_unavailable(self.python)
            if reason:
                raise ServiceUnavailable(reason, REQUIRE_AUTH_ENV)
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        for attempt in range(3):
            self.port = free_port()
            with open(self.log_path, "ab") as log:
                log.write(f"\n==> {' '.join(self._command())}\n".encode())
                log.flush()
                self._process = start_process(self._command(), cwd=self.workdir,
                                              env=self._env(), stdout=log,
                                              stderr=subprocess.STDOUT)
            while not self._healthy():
                if self._process.poll() is not None:
                    break
                if time.monotonic() > deadline:
                    self.stop(remove=False)
                    raise TimeoutError(f"mlflow server on {self.url} not healthy after "
                                       f"{timeout}s:\n{self.log_tail()}")
                time.sleep(0.25)
            else:
                return self
            code, self._process = self._process.returncode, None
            if "Address already in use" not in self.log_tail() or attempt == 2:
                raise RuntimeError(f"mlflow server exited with {code} before becoming "
                                   f"healthy:\n{self.log_tail()}")
        raise AssertionError("unreachable")

    def stop(self, remove: bool = True) -> None:
        """Kill the server's process group (SIGTERM; SIGKILL after 15 s, noted in the
        log); remove its work dir if it made it."""
        killed = stop_process_group(self._process)
        if killed and self.log_path.parent.exists():
            with open(self.log_path, "a") as log:
                log.write("==> still running 15 s after SIGTERM, killed:\n  "
                          + "\n  ".join(killed) + "\n")
        self.killed_on_stop = killed
        self._process = None
        if remove and self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def __enter__(self) -> MlflowServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- basic auth ------------------------------------------------------------------

    def credentials_env(self, username: str | None = None,
                        password: str | None = None) -> dict[str, str]:
        """``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD`` for a client (default: admin)."""
        return {"MLFLOW_TRACKING_USERNAME": username or self.admin_username,
                "MLFLOW_TRACKING_PASSWORD": password or self.admin_password}

    def request(self, method: str, path: str, payload: dict | None = None, *,
                username: str | None = None, password: str | None = None,
                timeout: float = 60) -> tuple[int, dict | str]:
        """One REST call (as admin with basic auth) -> (HTTP status, JSON or text body);
        HTTP errors are returned, not raised."""
        headers = {"Content-Type": "application/json"}
        if self.basic_auth or username:
            pair = f"{username or self.admin_username}:{password or self.admin_password}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(self.url + path, data=data, headers=headers,
                                         method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                status, body = reply.status, reply.read().decode()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read().decode(errors="replace")
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    def create_user(self, username: str, password: str, *, admin: bool = False) -> dict:
        """Create a basic-auth user (password >= 12 characters) as the admin, through
        ``POST /api/2.0/mlflow/users/create`` (what ``AuthServiceClient.create_user``
        sends); `admin` also makes it an admin. Returns the user's JSON."""
        if not self.basic_auth:
            raise RuntimeError("create_user needs MlflowServer(basic_auth=True)")
        status, body = self.request("POST", "/api/2.0/mlflow/users/create",
                                    {"username": username, "password": password})
        if status != 200:
            raise RuntimeError(f"creating user {username!r} answered {status}: {body}")
        if admin:
            status, answer = self.request("PATCH", "/api/2.0/mlflow/users/update-admin",
                                          {"username": username, "is_admin": True})
            if status != 200:
                raise RuntimeError(f"making {username!r} admin answered {status}: {answer}")
        return body["user"]

    def grant_experiment_permission(self, experiment_id: str, username: str,
                                    permission: str = "EDIT") -> None:
        """Give ``username`` ``permission`` on an experiment, as the admin: what
        ``AuthServiceClient.grant_user_permission`` sends (MLflow >= 3.17), else what
        ``create_experiment_permission`` sends (older servers answer the first with 404)."""
        status, body = self.request("POST", "/api/3.0/mlflow/users/permissions/grant", {
            "username": username, "resource_type": "experiment", "resource_id": experiment_id,
            "permission": permission,
        })
        if status == 404:
            status, body = self.request("POST", "/api/2.0/mlflow/experiments/permissions/create", {
                "experiment_id": experiment_id, "username": username, "permission": permission,
            })
        if status != 200:
            raise RuntimeError(f"granting {permission} to {username!r} answered {status}: {body}")

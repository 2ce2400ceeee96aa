"""Shared pytest fixtures and session-wide environment isolation.

Importing this module (which pytest does before collecting any test) pins
the environment every test runs in:

- ``LITELLM_LOCAL_MODEL_COST_MAP=True``: litellm prices calls from its bundled
  model table instead of fetching it from GitHub (no network here);
- ``SYNALINKS_HOME`` points at a throw-away directory, since importing
  synalinks writes under it;
- ``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME`` and
  ``MLFLOW_EXPERIMENT_ID`` are removed, so every test names its tracking
  store and experiment explicitly.
- the tests run in a scratch working directory (``_scratch_cwd``): MLflow puts
  the artifacts of a SQLite store's experiments under ``./mlruns`` of the
  working directory, which would otherwise be the checkout.

mlflow writes those variables back itself (``mlflow.set_tracking_uri`` and
``mlflow.set_experiment`` export them for subprocesses), so the autouse
`_isolate_mlflow_globals` fixture undoes a test's global MLflow choices after
it: active runs ended, tracking URI (which also resets the tracer provider)
and active experiment cleared, the variables removed again.

synalinks and mlflow are imported lazily inside the fixtures that need them:
collection stays fast and the variables above are set before either loads.
The same environment is inherited by the ``mlflow server`` subprocesses.

Fixtures:
    fake_llm_server  (session)  the `FakeLLM` server, started once.
    fake_llm         (function) the same server, faults and request log reset.
    lm_factory       (function) ``lm_factory(**overrides)`` builds a
                                `synalinks.LanguageModel` aimed at `fake_llm`.
    lm               (function) ``lm_factory()`` with the defaults.
    sqlite_uri       (function) ``sqlite:///<tmp_path>/mlflow.db``.
    mlflow_server    (session)  a real ``mlflow server`` subprocess.
    mlflow_server_factory (function) ``factory(*extra_args)`` starts more.
    wheel_python, run_py, zygote: real app processes (``tests/support/app_fixtures.py``).

Tests using a real MLflow server are marked ``server`` automatically.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from app_fixtures import run_py, wheel_python, zygote  # noqa: F401  (fixtures, see there)
from fake_llm import FakeLLM

os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
# Strict mode: an internal error of synalinks-obs raises instead of being logged, here and
# in every subprocess the tests start, so a broken guard fails a test. A test that
# provokes internal errors on purpose asks for the `lenient` fixture.
os.environ["SYNALINKS_OBS_STRICT"] = "1"
_SYNALINKS_HOME = tempfile.mkdtemp(prefix="synalinks-home-")
os.environ["SYNALINKS_HOME"] = _SYNALINKS_HOME
MLFLOW_GLOBAL_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID")
for _name in MLFLOW_GLOBAL_ENV:
    os.environ.pop(_name, None)

SERVER_FIXTURES = {"mlflow_server", "mlflow_server_factory"}
# `mlflow server` boots uvicorn and migrates its store: slow when the machine is busy.
SERVER_START_TIMEOUT = float(os.environ.get("TEST_MLFLOW_SERVER_TIMEOUT", "240"))
FAKE_MODEL = "openai/gpt-4o-mini"


def _synalinks_minor():
    from importlib.metadata import version

    major, minor = (int(part) for part in version("synalinks").split(".")[:2])
    return major, minor


# Synalinks 0.9.x (the oldest supported): fit() validates after every training batch,
# hands callbacks no dataset sizes and reports no finish_reason for an LM call.
SYNALINKS_09 = _synalinks_minor() < (0, 10)


@pytest.fixture
def lenient(monkeypatch):
    """Internal errors are logged, not raised (for tests that provoke them on purpose)."""
    from synalinks_obs import reporting

    monkeypatch.delenv("SYNALINKS_OBS_STRICT", raising=False)
    reporting.strict_mode(False)
    yield
    reporting.strict_mode(None)


@pytest.fixture(scope="session", autouse=True)
def _scratch_cwd(tmp_path_factory):
    """Every test (and the subprocesses it starts without a ``cwd`` of their own) runs in
    a throw-away directory, so nothing MLflow writes relative to the working directory
    (a SQLite store's artifact root, ``./mlruns``) lands in the checkout."""
    before = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(before)


@pytest.fixture(autouse=True)
def _fresh_warnings():
    """Each test counts synalinks-obs' once-only warnings from zero."""
    from synalinks_obs import reporting

    reporting.forget()
    yield


@pytest.fixture(autouse=True)
def _fresh_exporter():
    """The process-wide exporter (its drop counters, its stores' states, whether it runs
    an exporter process) does not outlive the test that made it, so what a test counts
    does not depend on which tests ran before it on the same worker. Left alone while
    tracing is still on (a class-scoped activation)."""
    yield
    from synalinks_obs.runtime import RUNTIME

    exporter = RUNTIME.exporter
    if exporter is None or RUNTIME.tracer is not None or RUNTIME.hook_tracer is not None:
        return
    RUNTIME.exporter = None
    try:
        exporter.shutdown(timeout=30, report=False)
    except Exception:  # a test that broke it on purpose: it is dropped all the same
        pass


def pytest_unconfigure(config):
    shutil.rmtree(_SYNALINKS_HOME, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)


@pytest.fixture(autouse=True)
def _isolate_mlflow_globals():
    yield
    if "mlflow" in sys.modules:
        import mlflow
        import mlflow.tracking.fluent

        while mlflow.active_run():
            mlflow.end_run()
        mlflow.set_tracking_uri(None)
        # No public API clears the experiment chosen by `mlflow.set_experiment`.
        mlflow.tracking.fluent._active_experiment_id = None
    for name in MLFLOW_GLOBAL_ENV:
        os.environ.pop(name, None)


# -- fake LLM ---------------------------------------------------------------


@pytest.fixture(scope="session")
def fake_llm_server():
    """One `FakeLLM` per test session (per xdist worker)."""
    with FakeLLM() as server:
        yield server


@pytest.fixture
def fake_llm(fake_llm_server):
    """The session `FakeLLM`, with faults and request log cleared around
    the test (so ``request_count`` counts this test's requests only)."""
    fake_llm_server.reset()
    yield fake_llm_server
    fake_llm_server.reset()


@pytest.fixture
def lm_factory(fake_llm):
    """Build a `synalinks.LanguageModel` talking to `fake_llm`.

    ``lm_factory(**overrides)`` returns
    ``synalinks.LanguageModel(model="openai/gpt-4o-mini",
    api_base=fake_llm.base_url, api_key="sk-test", **overrides)``.

    Pricing: nothing special is needed. ``api_key`` is not a constructor
    argument of `LanguageModel`; it lands in ``default_kwargs`` and is
    forwarded to every ``litellm.acompletion`` call (so no ``OPENAI_API_KEY``
    is needed). litellm prices the response from the ``model`` it echoes
    (``gpt-4o-mini``) and its ``usage`` block, so ``lm.last_call_cost`` and
    ``current_call_usage()["cost"]`` are non-zero with a plain ``api_base``.

    Failure handling: a call is attempted ``retry`` times (default 5, with 1 s,
    2 s, 4 s... waits between attempts) and every attempt is itself retried
    twice on HTTP 5xx by the OpenAI SDK inside litellm; when all fail the LM
    returns ``None`` instead of raising. For fault-injection tests pass
    ``retry=1, max_retries=0``: one attempt, exactly one HTTP request.
    """
    import synalinks

    def build(**overrides):
        options = {
            "model": FAKE_MODEL,
            "api_base": fake_llm.base_url,
            "api_key": "sk-test",
            **overrides,
        }
        return synalinks.LanguageModel(**options)

    return build


@pytest.fixture
def lm(lm_factory):
    """A `synalinks.LanguageModel` on `fake_llm` with synalinks' defaults.
    See `lm_factory` for how it is built and priced."""
    return lm_factory()


# -- MLflow stores ----------------------------------------------------------


@pytest.fixture
def sqlite_uri(tmp_path):
    """A tracking URI for a fresh SQLite store in the test's tmp dir."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _option_name(arg):
    return arg.split("=", 1)[0]


class MlflowServer:
    """A real ``mlflow server`` subprocess bound to 127.0.0.1.

    Defaults: SQLite backend ``<workdir>/srv.db``, ``--serve-artifacts`` with
    ``--default-artifact-root mlflow-artifacts:/`` and
    ``--artifacts-destination <workdir>/artifacts``. `extra_args` are appended
    and replace any default option they name; ``--no-serve-artifacts`` drops
    ``--serve-artifacts`` and makes the default artifact root the
    ``file://`` URI of `artifacts_dir` (clients then write there directly).
    The server runs in its own process group (uvicorn workers and the job
    runner included), its output goes to `log_path`.
    """

    def __init__(self, workdir, extra_args=()):
        self.workdir = Path(workdir)
        self.artifacts_dir = self.workdir / "artifacts"
        self.log_path = self.workdir / "server.log"
        self.port = _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.args = self._build_args(list(extra_args))
        self._process = None

    def _build_args(self, extra):
        serve = "--no-serve-artifacts" not in extra
        defaults = {
            "--backend-store-uri": f"sqlite:///{self.workdir / 'srv.db'}",
            "--default-artifact-root": (
                "mlflow-artifacts:/" if serve else self.artifacts_dir.as_uri()
            ),
            "--artifacts-destination": str(self.artifacts_dir),
        }
        given = {_option_name(arg) for arg in extra}
        args = ["--host", "127.0.0.1", "--port", str(self.port)]
        if "--workers" not in given:
            # One worker: each extra worker imports all of mlflow again (seconds of CPU on
            # a 2-core CI machine) and a test client never needs the concurrency.
            args += ["--workers", "1"]
        for option, value in defaults.items():
            if option not in given:
                args += [option, value]
        if serve and "--serve-artifacts" not in given:
            args.append("--serve-artifacts")
        return args + extra

    def _healthy(self):
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as reply:
                return reply.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _log_tail(self, lines=40):
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def start(self, timeout=SERVER_START_TIMEOUT):
        """Launch the server and wait until ``GET /health`` answers 200."""
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", *self.args],
                # MLflow's job runner: seven more processes importing MLflow, not needed here.
                env=dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with {self._process.returncode} "
                    f"before becoming healthy:\n{self._log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(
                    f"mlflow server on {self.uri} not healthy after {timeout}s:\n"
                    f"{self._log_tail()}"
                )
            time.sleep(0.25)
        return self

    def stop(self, timeout=15.0):
        """Terminate the whole process group (SIGTERM, then SIGKILL)."""
        if self._process is None:
            return
        group = self._process.pid
        try:
            os.killpg(group, signal.SIGTERM)
            self._process.wait(timeout)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            self._process.wait()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.killpg(group, signal.SIGKILL)
        self._process = None

    def kill(self):
        """SIGKILL the whole server (a crash); ``start()`` brings it back on the same port
        and database."""
        if self._process is None:
            return
        try:
            os.killpg(self._process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._process.wait()
        self._process = None

    @property
    def pid(self):
        """The ``mlflow server`` process id, also its process group id."""
        return self._process.pid if self._process else None

    @property
    def running(self):
        return self._process is not None and self._process.poll() is None


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server shared by the session: ``.uri``,
    ``.port``, ``.artifacts_dir``, ``.log_path`` (see `MlflowServer`)."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    yield server
    server.stop()


@pytest.fixture
def mlflow_server_factory(tmp_path_factory):
    """``factory(*extra_args, timeout=SERVER_START_TIMEOUT)`` starts another
    `MlflowServer` (e.g. ``factory("--no-serve-artifacts")``); all are stopped
    after the test. Each start takes 20-45 s here (4 uvicorn workers importing
    mlflow; ``"--workers", "1"`` is faster) and each stop ~5 s."""
    servers = []

    def start(*extra_args, timeout=SERVER_START_TIMEOUT):
        server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"), extra_args)
        servers.append(server)
        return server.start(timeout)

    yield start
    for server in servers:
        server.stop()

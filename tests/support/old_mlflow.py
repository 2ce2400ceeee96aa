"""An older MLflow's ``mlflow server`` (default 3.4.0), from a venv built once and cached.

Import with ``tests/support`` on ``sys.path`` (``import old_mlflow``). ``old_mlflow_python(
version)`` returns the Python of a venv holding ``mlflow[auth]==<version>`` (plus, for the
default version, ``sqlalchemy<2.1``, which 3.4.0 needs), building it on first use with the
tests' own interpreter (``sys.executable -m venv``, then that venv's pip) in
``~/.cache/synalinks-obs-tests/mlflow-<version>-py<X.Y>-venv`` (``TEST_CACHE_DIR``
overrides the parent; the directory is outside the repo and survives test runs). A lock
file next to it (``fcntl.flock``) makes a second pytest worker wait for the first one's
build instead of building too, and a marker file written last (``build_info()`` reads it,
with the build's duration) tells a finished venv from a half-built one, which is rebuilt.
The first build downloads MLflow and its dependencies (a few minutes; the pip log is kept
next to the venv); later calls return at once. ``OldMlflowServer(version=..., **kwargs)``
is an ``mlflow_servers.MlflowServer`` run by that venv's Python, with the same options
(basic auth, backend URI, workers...). A failed build (e.g. no package index) raises
`ServiceUnavailable` with the log's end, for ``skip_or_fail`` (``TEST_REQUIRE_OLD_MLFLOW``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mlflow_servers import MlflowServer
from support_base import ServiceUnavailable, tail

DEFAULT_VERSION = "3.4.0"
# Extra pins an old version needs with today's packages.
PINS = {"3.4.0": ("sqlalchemy<2.1",)}
REQUIRE_ENV = "TEST_REQUIRE_OLD_MLFLOW"
BUILD_TIMEOUT = float(os.environ.get("TEST_OLD_MLFLOW_BUILD_TIMEOUT", "1800"))
_MARKER = "synalinks-obs-venv.json"


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "synalinks-obs-tests"
    return Path(os.environ.get("TEST_CACHE_DIR") or default)


def requirements_for(version: str, extra: tuple[str, ...] = ()) -> list[str]:
    return [f"mlflow[auth]=={version}", *PINS.get(version, ()), *extra]


def venv_dir(version: str = DEFAULT_VERSION, extra: tuple[str, ...] = ()) -> Path:
    """Where the venv of `version` (and `extra` requirements) lives."""
    name = f"mlflow-{version}-py{sys.version_info[0]}.{sys.version_info[1]}"
    if extra:
        name += "-" + hashlib.sha256("\n".join(extra).encode()).hexdigest()[:8]
    return cache_dir() / f"{name}-venv"


def build_info(version: str = DEFAULT_VERSION, extra: tuple[str, ...] = ()) -> dict | None:
    """The finished venv's marker (version, requirements, build_seconds...), or None."""
    marker = venv_dir(version, extra) / _MARKER
    try:
        return json.loads(marker.read_text())
    except (OSError, ValueError):
        return None


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _lock(path: Path, timeout: float):
    handle = open(path, "w")
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return handle
        except BlockingIOError:
            if time.monotonic() > deadline:
                handle.close()
                raise TimeoutError(
                    f"{path} still locked after {timeout}s (another build?)") from None
            time.sleep(1)


def _run(command, log_path: Path, timeout: float):
    with open(log_path, "ab") as log:
        log.write(f"\n==> {' '.join(map(str, command))}\n".encode())
        log.flush()
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                              env=env, stdin=subprocess.DEVNULL, check=False).returncode


def old_mlflow_python(version: str = DEFAULT_VERSION, extra: tuple[str, ...] = (), *,
                      timeout: float = BUILD_TIMEOUT) -> Path:
    """The Python of the cached venv with MLflow `version`, built first if needed."""
    venv = venv_dir(version, extra)
    if build_info(version, extra) and _python(venv).exists():
        return _python(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    log_path = venv.parent / f"{venv.name}.build.log"
    with _lock(venv.parent / f"{venv.name}.lock", timeout):
        if build_info(version, extra) and _python(venv).exists():
            return _python(venv)  # built by another worker while we waited
        shutil.rmtree(venv, ignore_errors=True)
        log_path.write_text("")
        requirements = requirements_for(version, extra)
        started = time.monotonic()
        deadline = started + timeout
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(_python(venv)), "-m", "pip", "install", "--disable-pip-version-check",
             "--no-input", *requirements],
            [str(_python(venv)), "-c",
             f"import mlflow, flask_wtf; assert mlflow.__version__ == {version!r}, "
             "mlflow.__version__"],
        ]
        for step in steps:
            try:
                code = _run(step, log_path, max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                code = "timeout"
            if code != 0:
                shutil.rmtree(venv, ignore_errors=True)
                raise ServiceUnavailable(
                    f"building the MLflow {version} venv failed ({code}) at "
                    f"{' '.join(step[:4])} ...; log {log_path}:\n{tail(log_path, 30)}",
                    REQUIRE_ENV,
                )
        info = {"version": version, "requirements": requirements,
                "python": sys.version.split()[0],
                "build_seconds": round(time.monotonic() - started, 1),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (venv / _MARKER).write_text(json.dumps(info, indent=1))
    return _python(venv)


class OldMlflowServer(MlflowServer):
    """``mlflow server`` of MLflow `version` (cached venv); other arguments as
    `MlflowServer`. The venv is built in ``__init__`` if needed (see the module)."""

    def __init__(self, workdir=None, *, version: str = DEFAULT_VERSION,
                 extra: tuple[str, ...] = (), **kwargs):
        self.version = version
        super().__init__(workdir, python=str(old_mlflow_python(version, extra)), **kwargs)

"""A new database store's schema, set up one process at a time.

MLflow's tracking store creates a new database's tables and runs its migrations the first
time a process opens it, without a lock: processes that open the same *new* database at
once race (one fails with "table _alembic_tmp_... already exists", another finds a
half-migrated schema). MLflow's other stores guard the same step with a file lock; the
patched ``_initialize_tables`` / ``_verify_schema`` (``patching.mlflow_hooks``) take
``database_lock`` here, in every process synalinks-obs runs in (``guard_schema_setup``
applies them, through the patch registry, when MLflow's db utilities are imported).

The lock is an advisory ``flock`` on a file named after the database (a hash of its path
or URL) in a private per-user directory (``$XDG_RUNTIME_DIR`` or the temporary
directory, ``synalinks-obs-<uid>``, mode 0700, refused if another user owns it). It is
taken with a timeout (``LOCK_TIMEOUT``): past it, one line says so and the schema step
goes on without it, so a hung process can never block the app's MLflow calls for ever.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
import time

from synalinks_obs import reporting, uris
from synalinks_obs.compat import mlflow as mlflow_compat
from synalinks_obs.runtime import RUNTIME

try:
    import fcntl
except ImportError:  # not POSIX: no lock (MLflow's own behaviour)
    fcntl = None

LOCK_TIMEOUT = 30.0  # seconds a process waits for another's schema set-up
GROUP = "mlflow"
_log = reporting.logger(__name__)


def lock_directory() -> str | None:
    """The private directory of this user's lock files (created 0700), or None."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    uid = os.getuid() if hasattr(os, "getuid") else 0
    path = os.path.join(base, f"synalinks-obs-{uid}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != uid or info.st_mode & 0o077:
        reporting.warn_once(
            ("lock dir", path),
            "synalinks-obs: %s is not a private directory of this user; database schema "
            "set-up is not serialised", path, log=_log,
        )
        return None
    return path


@contextlib.contextmanager
def database_lock(tracking_uri, timeout: float = LOCK_TIMEOUT):
    """Hold this user's lock for a database store (a no-op for servers), at most
    ``timeout`` seconds of waiting."""
    key = uris.database_key(tracking_uri)
    directory = lock_directory() if key is not None and fcntl is not None else None
    if directory is None:
        yield
        return
    digest = hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:20]
    lock_path = os.path.join(directory, f"{digest}.lock")
    try:
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except OSError:
        yield
        return
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    reporting.warn_once(
                        ("lock timeout", lock_path),
                        "synalinks-obs: waited %g s for another process's schema set-up of "
                        "%s (lock %s); going on without the lock", timeout,
                        uris.display(tracking_uri), lock_path, log=_log,
                    )
                    break
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def serialised(initialize, verify, tables_exist):
    """Replacements of MLflow's ``_initialize_tables`` and ``_verify_schema`` that run
    under ``database_lock`` (table creation checks again once it has the lock)."""

    def _initialize_tables(engine, *args, **kwargs):
        with database_lock(str(engine.url)):
            if tables_exist(engine):  # another process made them while we waited
                return None
            return initialize(engine, *args, **kwargs)

    def _verify_schema(engine, *args, **kwargs):
        with database_lock(str(engine.url)):
            return verify(engine, *args, **kwargs)

    _initialize_tables.__wrapped__ = initialize
    _verify_schema.__wrapped__ = verify
    return _initialize_tables, _verify_schema


def _serialise_schema_setup(db_utils) -> None:
    registry = RUNTIME.patches
    functions = mlflow_compat.db_utils_schema_functions(db_utils)
    if functions is None or registry.is_patched(db_utils, "_initialize_tables"):
        return
    initialize, verify = serialised(*functions)
    registry.apply(db_utils, "_initialize_tables", initialize, GROUP)
    registry.apply(db_utils, "_verify_schema", verify, GROUP)


def guard_schema_setup() -> None:
    """Serialise schema set-up once MLflow's database utilities are imported (now if
    they already are). Idempotent; reverted by ``uninstrument()``."""
    import sys

    module = sys.modules.get(mlflow_compat.DB_UTILS_MODULE)
    if module is not None:
        _serialise_schema_setup(module)
        return
    from synalinks_obs import importhook

    importhook.when_imported(mlflow_compat.DB_UTILS_MODULE, _serialise_schema_setup)

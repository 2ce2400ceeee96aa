"""A throw-away PostgreSQL server on 127.0.0.1, from the distribution's own binaries.

``PostgresServer().start()`` runs ``initdb`` in a fresh directory under /tmp, starts
``postgres`` on a free loopback port with ``pg_ctl`` (unix socket in that directory too),
and creates a database and role like the seed's compose file (``mlflow``/``mlflow``,
database ``mlflow``); ``.uri`` is then ``postgresql://mlflow:mlflow@127.0.0.1:PORT/mlflow``.
``stop()`` stops it (``-m immediate``) and removes the directory.

PostgreSQL refuses to run as root: as root the commands run as the distribution's
``postgres`` user (created by Debian's ``postgresql`` package), which owns the directory.

``unavailable()`` says why a server cannot be had here (no binaries, root without a
``postgres`` user, no ``psycopg2`` for MLflow), or None.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile

USER = PASSWORD = DATABASE = "mlflow"


def _bin_dir() -> str | None:
    found = shutil.which("pg_ctl")
    if found:
        return os.path.dirname(os.path.realpath(found))
    # Debian keeps the server binaries out of PATH, one directory per major version.
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return os.path.dirname(candidates[0]) if candidates else None


def _run_as() -> str | None:
    """The user to run PostgreSQL as (None: the current one)."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return ""
    return "postgres"


def unavailable() -> str | None:
    if _bin_dir() is None:
        return "PostgreSQL server binaries not found (Debian: apt-get install postgresql)"
    if _run_as() == "":
        return "running as root and there is no 'postgres' user to run PostgreSQL as"
    try:
        _driver()
    except ImportError as exc:
        return f"no driver for postgresql:// URIs ({exc}; pip install 'psycopg[binary]')"
    return None


def _driver():
    """The DB-API module SQLAlchemy (hence MLflow) uses for ``postgresql://`` URIs:
    psycopg 3 since SQLAlchemy 2.1, psycopg2 before."""
    from sqlalchemy.dialects import registry

    dialect = registry.load("postgresql")
    load = getattr(dialect, "import_dbapi", None) or dialect.dbapi
    return load()


def connect(uri):
    """A DB-API connection to ``uri`` with the driver MLflow uses."""
    return _driver().connect(uri)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresServer:
    def __init__(self):
        self.bin = _bin_dir()
        self.user = _run_as()
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="synalinks-obs-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "postgres.log")
        self.uri = f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}"
        self.started = False

    def _run(self, *args, timeout=120):
        kwargs = {}
        if self.user:
            kwargs = {"user": self.user, "group": self.user}
        return subprocess.run(
            [os.path.join(self.bin, args[0]), *args[1:]],
            capture_output=True, text=True, timeout=timeout, cwd=self.dir,
            env={**os.environ, "PGPASSWORD": PASSWORD, "LC_ALL": "C"}, check=False, **kwargs,
        )

    def _check(self, result, what):
        if result.returncode != 0:
            log = ""
            if os.path.exists(self.log):
                with open(self.log, errors="replace") as handle:
                    log = handle.read()[-2000:]
            raise RuntimeError(
                f"{what} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n{log}"
            )

    def start(self):
        if self.user:
            import pwd

            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        password_file = os.path.join(self.dir, "pw")
        with open(password_file, "w") as handle:
            handle.write(PASSWORD + "\n")
        if self.user:
            os.chown(password_file, entry.pw_uid, entry.pw_gid)
        self._check(
            self._run("initdb", "-D", self.data, "-U", USER, f"--pwfile={password_file}",
                      "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8",
                      "--no-sync", "--no-instructions"),
            "initdb",
        )
        options = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._check(
            self._run("pg_ctl", "-D", self.data, "-o", options, "-l", self.log, "-w", "-t", "120",
                      "start", timeout=180),
            "pg_ctl start",
        )
        self.started = True
        self._check(
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, DATABASE),
            "createdb",
        )
        return self

    def stop(self):
        if self.started:
            self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop", timeout=60)
            self.started = False
        shutil.rmtree(self.dir, ignore_errors=True)

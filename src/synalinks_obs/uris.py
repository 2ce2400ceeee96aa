"""Tracking URIs: the one resolver every component uses (launcher, tracer, hooks, training,
doctor), so that one store is always one destination.

- ``resolve(explicit)``: the URI traces go to, and where it came from: an explicit value
  (``enable(tracking_uri=...)``, ``--tracking-uri``), then ``MLFLOW_TRACKING_URI``, then
  the default, ``sqlite:///<working directory>/mlflow.db``. Local locations are made
  absolute (a child process in another directory, or an app that changes directory,
  writes to the same store).
- A ``file:`` URI or plain path is an MLflow *file store*: MLflow 3 writes no spans there
  (it has no ``log_spans``), so ``file_store_problem`` says so in one line with the fix,
  and tracing is not started. MLflow's own default would still pick ``./mlruns`` when it
  holds file-store experiments; ours never does (traces go to ``mlflow.db`` beside it).
- ``display(uri)``: the URI without the userinfo part (``user:password@``), for every
  line synalinks-obs prints or stores.

Standard library only, no MLflow import: the launcher resolves before anything heavy loads.
"""

from __future__ import annotations

import os
from typing import NamedTuple
from urllib.parse import unquote, urlsplit, urlunsplit

DEFAULT_DB = "mlflow.db"
SERVER_SCHEMES = ("http", "https")
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")
# MLflow URIs without "://" that are not paths.
_NAMED_STORES = ("databricks", "databricks-uc", "uc")


class Resolution(NamedTuple):
    uri: str
    source: str  # "explicit", "MLFLOW_TRACKING_URI" or "default"


def scheme(uri) -> str:
    """The URI's scheme without a driver (``postgresql+psycopg`` -> ``postgresql``)."""
    if not isinstance(uri, str) or ":" not in uri:
        return ""
    head = uri.split(":", 1)[0].split("+", 1)[0].lower()
    if len(head) == 1:  # a Windows drive letter, a path
        return ""
    return head if head.replace("-", "").replace(".", "").isalnum() else ""


def is_http(uri) -> bool:
    return scheme(uri) in SERVER_SCHEMES


def is_file_store(uri) -> bool:
    """A ``file:`` URI or a plain path: MLflow's file store (cannot hold traces)."""
    if not isinstance(uri, str) or not uri.strip():
        return False
    found = scheme(uri)
    return found == "file" or (found == "" and uri.split(":", 1)[0] not in _NAMED_STORES)


def sqlite_path(uri) -> str | None:
    """The absolute database file of a ``sqlite:///relative`` / ``sqlite:////absolute`` URI."""
    prefix = "sqlite:///"
    if not isinstance(uri, str) or not uri.startswith(prefix):
        return None
    path = unquote(uri[len(prefix):].split("?", 1)[0])
    if not path or path == ":memory:":
        return None
    return os.path.abspath(path)


def database_key(uri) -> str | None:
    """What names a database store (sqlite file path or database URL); None otherwise."""
    path = sqlite_path(uri)
    if path is not None:
        return path
    return uri if scheme(uri) in DATABASE_SCHEMES and scheme(uri) != "sqlite" else None


def absolute(uri: str, cwd: str | None = None) -> str:
    """A relative sqlite URI or local path made absolute (other URIs unchanged)."""
    cwd = cwd or os.getcwd()
    if uri.startswith("sqlite:///"):
        path, sep, query = uri[len("sqlite:///"):].partition("?")
        if path and not path.startswith("/") and path != ":memory:":
            return "sqlite:///" + os.path.normpath(os.path.join(cwd, path)) + sep + query
        return uri
    if is_file_store(uri) and scheme(uri) != "file":
        from pathlib import Path

        return Path(os.path.normpath(os.path.join(cwd, uri))).as_uri()
    return uri


def default_uri(cwd: str | None = None) -> str:
    """Where traces go when no URI is given: ``mlflow.db`` in the working directory."""
    return "sqlite:///" + os.path.join(cwd or os.getcwd(), DEFAULT_DB)


def resolve(explicit: str | None = None, cwd: str | None = None, environment: bool = True) -> Resolution:
    """The tracking URI traces go to (absolute), and where it came from.

    ``environment=False`` when ``explicit`` already is the validated settings value (which
    took ``MLFLOW_TRACKING_URI`` into account, and dropped it if it was bad)."""
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if explicit and explicit.strip():
        explicit = explicit.strip()
        return Resolution(absolute(explicit, cwd), "MLFLOW_TRACKING_URI" if explicit == env else "explicit")
    if env and environment:
        return Resolution(absolute(env, cwd), "MLFLOW_TRACKING_URI")
    return Resolution(default_uri(cwd), "default")


def file_store_problem(uri: str, setting: str = "MLFLOW_TRACKING_URI") -> str | None:
    """One line saying why a file store cannot take traces and what to use; None if fine."""
    if not is_file_store(uri):
        return None
    path = uri
    if scheme(uri) == "file":
        path = unquote(urlsplit(uri).path) or uri
    folder = os.path.dirname(os.path.abspath(path.rstrip("/"))) or os.getcwd()
    return (
        f"synalinks-obs: {setting}={display(uri)} is an MLflow file store, which cannot hold "
        f"traces (MLflow 3 writes spans to database and server stores only); tracing is off. "
        f"Use a database, e.g. {setting}=sqlite:///{os.path.join(folder, DEFAULT_DB)}, "
        "or an MLflow server (http://host:5000)"
    )


def legacy_mlruns_note(cwd: str | None = None) -> str | None:
    """A note when ``./mlruns`` holds file-store experiments MLflow would default to."""
    mlruns = os.path.join(cwd or os.getcwd(), "mlruns")
    try:
        with os.scandir(mlruns) as entries:
            legacy = any(
                entry.is_dir() and entry.name.isdigit()
                and os.path.lexists(os.path.join(entry.path, "meta.yaml"))
                for entry in entries
            )
    except OSError:
        return None
    if not legacy:
        return None
    return (
        f"synalinks-obs: {mlruns} is an MLflow file store (it cannot hold traces); traces go "
        f"to {default_uri(cwd)}: open them with `mlflow ui --backend-store-uri "
        f"sqlite:///{DEFAULT_DB}`"
    )


def display(uri) -> str:
    """``uri`` without credentials: the userinfo part and secret-looking query values."""
    if not isinstance(uri, str):
        return str(uri)
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        from synalinks_obs.redaction import mask_query

        query = mask_query(query)
    if netloc == parts.netloc and query == parts.query:
        return uri
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def same_store(a, b) -> bool:
    """Whether two URIs name the same store (relative and absolute forms alike)."""
    if a == b:
        return True
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    return absolute(a) == absolute(b)

"""Can this process open a local sqlite store? Asked once, before anything waits on it.

MLflow opens a sqlite store lazily and, when it cannot (a read-only directory, a file
owned by another user, a file that is not a database), retries for most of a minute,
logging each attempt: an app traced into such a store would pay the whole exit flush
budget and print dozens of lines. ``sqlite_store_problem`` answers from the file system
alone (standard library, no file created): the database file, or for a new one the
nearest existing directory MLflow would create it under, must be readable and writable
by this user (``os.access``, which also sees read-only mounts), and an existing file
must start with SQLite's header. Tracing start-up (``activation._start``) and the doctor
ask it; a problem is one line naming the setting, the reason and the fix.
"""

from __future__ import annotations

import os

from synalinks_obs import uris

SQLITE_HEADER = b"SQLite format 3\x00"


def _nearest_existing(path: str) -> str:
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _writable_dir(directory: str) -> bool:
    return os.path.isdir(directory) and os.access(directory, os.W_OK | os.X_OK)


def _not_writable(what: str, path: str) -> str:
    try:
        read_only = bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        read_only = False
    return f"{what} is on a read-only file system" if read_only else f"{what} is not writable by this user"


def sqlite_reason(path: str) -> str | None:
    """Why the sqlite database ``path`` cannot be opened for writing; None if it can."""
    directory = os.path.dirname(path)
    if os.path.isdir(path):
        return f"{path} is a directory"
    if os.path.exists(path):
        if not os.access(path, os.R_OK | os.W_OK):
            return _not_writable(path, path)
        if not _writable_dir(directory):  # sqlite writes its journal beside the file
            return _not_writable(f"its directory {directory}", directory)
        try:
            with open(path, "rb") as handle:
                head = handle.read(len(SQLITE_HEADER))
        except OSError as exc:
            return f"{path} cannot be read ({exc.strerror})"
        if head and head != SQLITE_HEADER[: len(head)]:
            return f"{path} is not an SQLite database"
        return None
    existing = _nearest_existing(directory)
    if not os.path.isdir(existing):
        return f"{existing} is not a directory"
    if not _writable_dir(existing):
        return _not_writable(f"the directory {existing}", existing)
    return None


def sqlite_store_problem(uri, setting: str = "MLFLOW_TRACKING_URI") -> str | None:
    """One line saying why the sqlite store ``uri`` cannot be used, and the fix; None if
    it can (or ``uri`` is not a sqlite file)."""
    path = uris.sqlite_path(uri)
    if path is None:
        return None
    reason = sqlite_reason(path)
    if reason is None:
        return None
    return (
        f"synalinks-obs: {setting}={uris.display(uri)} cannot be opened: {reason}; tracing is "
        f"off. Use a location this user can write ({setting}=sqlite:///DIR/{uris.DEFAULT_DB}) "
        "or an MLflow server (http://host:5000)"
    )

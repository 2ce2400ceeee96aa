"""Small helpers shared by the test-support services in ``tests/support/``.

Import with ``tests/support`` on ``sys.path`` (``import support_base``). Holds: `free_port`
(a free TCP port on 127.0.0.1), `ServiceUnavailable` (raised by a service whose binary or
Python package is missing, with the reason and how to install it), `skip_or_fail` (the one
place a missing service turns into ``pytest.skip``, or into a failure when the service's
``TEST_REQUIRE_*`` environment switch is ``1``, as in CI), `start_process` (``Popen`` in a
new session, i.e. its own process group) and `stop_process_group` (SIGTERM, then SIGKILL,
to that group: the process and everything it spawned; groups still running when the
interpreter exits are stopped then too, so a test that forgot ``stop()`` leaks nothing
past the session) and `tail` (the end of a log file, for error messages).
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import time
from pathlib import Path


class ServiceUnavailable(RuntimeError):
    """A service cannot run here: a binary or package is missing. ``require_env`` names
    the environment switch that makes `skip_or_fail` fail instead of skipping."""

    def __init__(self, reason: str, require_env: str):
        super().__init__(reason)
        self.reason = reason
        self.require_env = require_env


def skip_or_fail(reason: str | ServiceUnavailable, require_env: str | None = None):
    """``pytest.skip(reason)``, or ``pytest.fail`` when ``os.environ[require_env] == "1"``.

    Pass a `ServiceUnavailable` alone (its ``require_env`` is used) or a reason and the
    switch, e.g. ``skip_or_fail(nginx.unavailable(), "TEST_REQUIRE_NGINX")``."""
    import pytest

    if isinstance(reason, ServiceUnavailable):
        require_env = require_env or reason.require_env
        reason = reason.reason
    if require_env and os.environ.get(require_env) == "1":
        pytest.fail(f"{reason} ({require_env}=1: required here)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail(path: str | os.PathLike, lines: int = 40) -> str:
    """The last `lines` lines of a text file ('' when it does not exist)."""
    path = Path(path)
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


_RUNNING: set[subprocess.Popen] = set()


def start_process(command: list[str], **popen_kwargs) -> subprocess.Popen:
    """``subprocess.Popen(command, start_new_session=True, stdin=DEVNULL, **popen_kwargs)``,
    remembered so that it is stopped at interpreter exit if nobody stopped it before."""
    popen_kwargs.setdefault("stdin", subprocess.DEVNULL)
    process = subprocess.Popen(command, start_new_session=True, **popen_kwargs)
    _RUNNING.add(process)
    return process


@atexit.register
def _stop_leftovers():
    for process in list(_RUNNING):
        stop_process_group(process, timeout=5.0)


def _group_members(group: int) -> list[str]:
    members = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getpgid(int(pid)) == group:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                members.append(f"{pid} {cmdline.decode(errors='replace')[:100]}")
        except (OSError, ValueError):
            continue
    return members


def stop_process_group(process: subprocess.Popen | None, timeout: float = 15.0) -> list[str]:
    """Stop `process` and its whole process group: SIGTERM, wait up to `timeout`
    seconds for the group to be gone, then SIGKILL. The process must have been started
    with ``start_new_session=True`` (its pid is then its group id), e.g. by
    `start_process`. Returns the members that needed SIGKILL ("pid command"), if any."""
    if process is None:
        return []
    _RUNNING.discard(process)
    group = process.pid
    try:
        os.killpg(group, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    killed = []
    while True:
        process.poll()  # reap our own child; the others are reaped by init
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            break
        if time.monotonic() > deadline:
            killed = _group_members(group)
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
            break
        time.sleep(0.1)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    return killed

"""Watching an app's processes from the test: its exporter process, peak memory, audit.

``exporter_processes(pid)``: the exporter processes an app process started (children
running ``synalinks_obs.store.worker``); ``kill_exporter_process`` SIGKILLs one;
``PeakMemory`` samples the peak RSS (``VmHWM``) of an app and of its exporter process
until the app exits. ``started_exporter``, ``store_connections`` and
``calls_connecting_to`` read the app's ``AUDIT`` record (``app_processes.APP``).
Linux ``/proc`` only.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

EXPORTER_MARK = b"synalinks_obs.store.worker"  # in the exporter process's command line


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout} s")
        time.sleep(0.05)


def started_exporter(audit) -> bool:
    """Whether an app's audit record shows it started the exporter process."""
    return any(
        event == "subprocess.Popen" and any(EXPORTER_MARK.decode() in arg for arg in args)
        for event, args in audit
    )


def calls_connecting_to(audit, url) -> list:
    """Connections the app's calls (its main thread, before its exit) made to ``url``."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    return [args for event, args in audit if event == "socket.connect from the app's calls" and args[1] == port]


def store_connections(audit, path) -> list:
    """The ``sqlite3.connect`` calls of an app's audit record that opened ``path``."""
    target = os.path.realpath(path)
    return [args for event, args in audit
            if event == "sqlite3.connect" and os.path.realpath(args) == target]


def children(pid) -> list[int]:
    """The direct children of a process (every thread's)."""
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
            except OSError:
                pass
    except OSError:
        pass
    return found


def exporter_processes(pid) -> list[int]:
    """The exporter processes an app process started (its children running store.worker)."""
    found = []
    for child in children(pid):
        try:
            if EXPORTER_MARK in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except OSError:
            pass
    return found


def peak_rss_kb(pid) -> int | None:
    """``VmHWM`` (peak resident set) of a live process, in kB; None once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def alive(pid) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


class PeakMemory:
    """Samples the peak RSS of an app process and of its exporter process(es) until the
    app exits (``VmHWM`` only grows, so a late sample is exact for what came before)."""

    def __init__(self, pid, every=0.05):
        self.pid = pid
        self.app_kb = 0
        self.exporter_kb: dict[int, int] = {}
        self._every = every
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self):
        while True:
            value = peak_rss_kb(self.pid)
            if value is None:
                return
            self.app_kb = max(self.app_kb, value)
            for child in exporter_processes(self.pid):
                peak = peak_rss_kb(child)
                if peak is not None:
                    self.exporter_kb[child] = max(self.exporter_kb.get(child, 0), peak)
            time.sleep(self._every)

    def join(self, timeout=60):
        self._thread.join(timeout)
        return self

    @property
    def exporter_peak_kb(self) -> int:
        assert self.exporter_kb, "no exporter process was seen"
        return max(self.exporter_kb.values())


def kill_exporter_process(app_pid, timeout=240):
    """SIGKILL the exporter process of an app process (waits for it to exist)."""
    wait_until(lambda: exporter_processes(app_pid), timeout, "an exporter process")
    (pid,) = exporter_processes(app_pid)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), 30, f"the end of exporter process {pid}")
    return pid

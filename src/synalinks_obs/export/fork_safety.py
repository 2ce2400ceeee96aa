"""The exporter around ``os.fork``: nothing of ours is copied mid-operation.

Before a fork (``export.service`` registers ``os.register_at_fork`` hooks) the exporter
thread finishes what it does and exits, at most a short timeout, so the child copies no
lock held mid-operation and Python sees a single-threaded process (no warning about
forking a threaded app because of us). The parent's thread comes back with its next span
or flush; the child forgets the parent's queue, thread and exporter process (the parent
writes its own spans) and starts its own on its first span. A mixin of ``Exporter``.
"""

from __future__ import annotations

import os
import time

from synalinks_obs.export.thread_state import State


class ForkSafety:
    """``Exporter``'s fork hooks (uses its ``_thread``, ``_lock``, ``state``, ``_wake``,
    ``sinks``, ``_reset`` and wake-up descriptors)."""

    def before_fork(self, timeout: float) -> bool:
        """Let the exporter thread finish what it is doing and exit, at most ``timeout``
        seconds, so the fork copies no lock held mid-operation and Python sees a
        single-threaded process; True when it did."""
        thread = self._thread
        if thread is None or self._pid != os.getpid() or not thread.is_alive():
            return True
        with self._lock:
            if self.state is not State.RUNNING:
                return True
            self.state = State.PARKING
        self._wake()
        thread.join(timeout)
        if thread.is_alive():
            return False
        if thread.native_id is not None:
            # join() returns a moment before the OS thread is gone, and Python counts
            # OS threads to decide whether to warn about forking a threaded process.
            task = f"/proc/self/task/{thread.native_id}"
            deadline = time.monotonic() + 0.5
            while os.path.exists(task) and time.monotonic() < deadline:
                time.sleep(0.0005)
        return True

    def after_fork_in_parent(self) -> None:
        """The thread comes back with the next span or flush (not from here: Python 3.13
        counts threads after these hooks and would warn that the app forked a
        multi-threaded process); at exit the queue is written inline."""
        with self._lock:
            if self.state is State.PARKING:
                thread = self._thread
                if thread is None or not thread.is_alive():
                    self._thread = None
                    self.state = State.IDLE
                else:  # it did not step aside in time: it simply goes on
                    self.state = State.RUNNING

    def after_fork_in_child(self, parked: bool) -> None:
        """Forget the parent's queue, thread and exporter process (the parent writes its
        own spans); this process starts its own on its first span."""
        process = self.sinks.process
        old_fds = (self._wake_r, self._wake_w)
        known = dict(self._experiment_ids)  # facts about the stores, still true here
        self._reset(mlflow_unsafe=not parked and self.settings.export_process)
        self._experiment_ids = known
        for fd in old_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        if process is not None:
            process.forget_in_child()

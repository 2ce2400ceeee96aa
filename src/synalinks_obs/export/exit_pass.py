"""The exporter's last pass at exit, and the one line that says what was not written.

``write_late_spans`` writes the spans finished after the exit flush (threads still
running when ``main`` returned) from the exiting thread, within what is left of the exit
budget, or counts them; ``report`` prints the one line: how many spans were not written,
why, and where they were kept (the spool) or could have been. A mixin of ``Exporter``.
"""

from __future__ import annotations

import collections
import os
import time

from synalinks_obs import reporting
from synalinks_obs.export.thread_state import State

QUEUE_FULL = "queue full (the exporter is slower than the app)"


class ExitPass:
    """``Exporter``'s exit pass (uses its queue, lock, sinks, deadline and drop counts)."""

    def write_late_spans(self, timeout: float | None = None) -> None:
        """The last pass at exit: spans finished after ``shutdown`` (threads still running
        when ``main`` returned) are written inline within what is left of the exit
        budget, or counted; then the one exit line."""
        if self._pid != os.getpid():
            return
        thread = self._thread
        if self._queue and thread is not None and thread.is_alive():  # the first pass is stuck
            self._drop(len(self._queue), "finished after the exit flush, which timed out")
            self._queue.clear()
        elif self._queue:
            left = (self._deadline - time.monotonic()) if self._deadline else (
                self.settings.flush_timeout if timeout is None else timeout
            )
            if left > 0:
                with self._lock:
                    self.state = State.STOPPING
                self._write_inline(left)
                with self._lock:
                    self.state = State.STOPPED
            else:
                self._drop(len(self._queue), "finished after the exit flush, past its budget")
                self._queue.clear()
        self.report()

    def _write_inline(self, budget: float) -> None:
        """Write what is queued from this thread (at exit no thread can be started)."""
        if not (self._has_work() or self.sinks.all()):
            return
        if self.sinks.process is None and not self.sinks.mlflow_unsafe:
            self.sinks.process_tried = True  # not worth an interpreter now
        try:
            self._run(deadline=time.monotonic() + budget)
        except Exception as exc:
            self._report_close_error(exc)
        left = len(self._queue) + self._busy
        self._queue.clear()
        if left:
            self._drop(left, f"exit flush timed out after {budget:g} s")

    def report(self) -> None:
        """Print the one line saying how many spans were not written, why, and where
        they were kept (the spool) or could have been."""
        dropped = collections.Counter(self.drop_reasons())
        if self.last_problem and dropped.get(QUEUE_FULL):
            # the queue filled before the store's problem was known: the store held it up
            full = f"{self.last_problem}; buffer full ({self.settings.max_queue_spans} spans)"
            dropped[full] += dropped.pop(QUEUE_FULL)
        spooled = self.sinks.spool_reasons()
        reasons = dropped + spooled
        total = sum(reasons.values())
        if total:
            detail = "; ".join(f"{n} {why}" for why, n in reasons.most_common())
            line = f"synalinks-obs: {total} span(s) were not written to MLflow ({detail})"
            kept = sum(spooled.values())
            if kept:
                line += (
                    f"; {kept} kept in {self.settings.spool_dir}: written by the next process "
                    "that traces into the same store, or now with `python -m synalinks_obs "
                    "flush-spool`"
                )
            if sum(dropped.values()) and not self.settings.spool_dir:
                line += "; set SYNALINKS_OBS_SPOOL_DIR to keep such spans for the next run"
            reporting.say(line)
            self._drop_reasons.clear()
            self.sinks.lost.clear()
            self.sinks.gone_spooled.clear()

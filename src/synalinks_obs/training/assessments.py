"""Writes a run's per-example feedback to its traces, on a thread of its own.

A trace reaches the store a moment after its call ends (the exporter writes in batches,
perhaps from another process), and MLflow only accepts an assessment on a trace it
holds. So ``AssessmentWriter`` queues what ``feedback.RunObserver`` matched and writes it
in the background with MLflow's own tracing client (``log_assessment``, and the trace
tags ``synalinks.epoch`` / ``synalinks.phase`` that ``search_traces`` filters on): an item
waits ``DELAY`` seconds first, and a trace the store does not hold yet is asked again
later (backing off up to ``MAX_RETRY_AFTER``), so its reads do not force the exporter to
flush (``patching.mlflow_hooks``). ``close`` writes what is left once the
Monitor has flushed the traces, within a bounded time (a trace still missing is asked
again for ``CLOSE_WINDOW`` seconds at most). Best effort: the first other failure (a store
that refuses assessments) costs one warning and the rest of the run's feedback, never
the training.
"""

from __future__ import annotations

import collections
import threading
import time

from synalinks_obs import reporting
from synalinks_obs.runtime import RUNTIME

DELAY = 1.0  # seconds an item waits: the exporter writes every export_interval (0.5 s)
MAX_RETRY_AFTER = 30.0  # a new store's first write (its schema set-up) can take that long
CLOSE_RETRY_AFTER = 0.25
CLOSE_WINDOW = 10.0
EPOCH_TAG = "synalinks.epoch"
PHASE_TAG = "synalinks.phase"


class _Item:
    __slots__ = ("trace_id", "assessments", "tags", "due", "attempts")

    def __init__(self, trace_id, assessments, tags, due):
        self.trace_id = trace_id
        self.assessments = list(assessments)
        self.tags = dict(tags)
        self.due = due
        self.attempts = 0


def _missing_trace(exc) -> bool:
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


class AssessmentWriter:
    def __init__(self, tracking_uri, run_id: str, warn):
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self._warn = warn  # warn(key, message): the Monitor's one-warning-per-kind
        self._items: collections.deque = collections.deque()
        self._tagged: set = set()  # trace ids whose epoch/phase tags were written
        self._condition = threading.Condition()
        self._closing = False
        self._close_deadline = 0.0  # while closing, missing traces are asked again until then
        self._broken = False
        self._busy = False
        self._thread = None
        self._client = None
        self.written = 0
        self.lost = 0

    def add(self, trace_id: str, assessments, epoch, phase) -> None:
        with self._condition:
            if self._broken or self._closing:
                self.lost += len(assessments)
                return
            tags = {PHASE_TAG: phase}
            if phase != "evaluation":  # a standalone evaluate() has no epochs
                tags[EPOCH_TAG] = str(epoch)
            self._items.append(_Item(trace_id, assessments, tags, time.monotonic() + DELAY))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="synalinks-obs-feedback", daemon=True
                )
                self._thread.start()
            self._condition.notify()

    def close(self, timeout: float, quiet: bool = False) -> None:
        """Write what is queued (no more waiting: the traces were flushed), within
        ``timeout`` seconds; what is left then is counted as lost (said in one warning,
        unless ``quiet``: the traces themselves could not be written, already said)."""
        deadline = time.monotonic() + timeout
        with self._condition:
            self._closing = True
            self._close_deadline = time.monotonic() + min(timeout, CLOSE_WINDOW)
            for item in self._items:
                item.due = 0.0
            self._condition.notify_all()
            while (self._items or self._busy) and self._thread is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    break
                self._condition.wait(min(left, 0.2))
            left_over = sum(len(item.assessments) for item in self._items)
            self._items.clear()
            self.lost += left_over
            self._condition.notify_all()
        if left_over and not self._broken and not quiet:
            self._warn(
                "feedback",
                f"synalinks-obs: {left_over} feedback assessment(s) of run {self.run_id} were "
                f"not written within {timeout:g} s; training went on",
            )

    # -- the writer thread -----------------------------------------------------------
    def _next(self):
        with self._condition:
            while True:
                if self._closing and not self._items:
                    return None
                now = time.monotonic()
                due = next((item for item in self._items if item.due <= now), None)
                if due is not None:  # the oldest item due (a retried one may wait longer)
                    self._items.remove(due)
                    self._busy = True
                    return due
                wait = min(item.due for item in self._items) - now if self._items else None
                self._condition.wait(wait if wait is None else max(wait, 0.01))

    def _run(self) -> None:
        me = threading.get_ident()
        RUNTIME.self_waiting_threads.add(me)  # it asks again for a trace not written yet
        try:
            self._write_until_closed()
        finally:
            RUNTIME.self_waiting_threads.discard(me)

    def _write_until_closed(self) -> None:
        while (item := self._next()) is not None:
            try:
                self._write(item)
            finally:
                with self._condition:
                    self._busy = False
                    self._condition.notify_all()

    def _write(self, item) -> None:
        try:
            if self._client is None:
                from synalinks_obs.compat import mlflow as mlflow_compat

                self._client = mlflow_compat.tracing_client(self.tracking_uri)
            while item.assessments:
                self._client.log_assessment(item.trace_id, item.assessments[0])
                item.assessments.pop(0)
                self.written += 1
            if item.trace_id not in self._tagged:
                for key, value in item.tags.items():
                    self._client.set_trace_tag(item.trace_id, key, value)
                self._tagged.add(item.trace_id)
        except Exception as exc:
            if not _missing_trace(exc):
                self._give_up(item, exc)
                return
            item.attempts += 1
            now = time.monotonic()
            with self._condition:
                if not self._closing:
                    item.due = now + min(MAX_RETRY_AFTER, 2.0 ** item.attempts)
                    self._items.append(item)
                    return
                if now < self._close_deadline:
                    item.due = now + CLOSE_RETRY_AFTER
                    self._items.append(item)
                    return
                self.lost += len(item.assessments)
            self._warn(
                "feedback trace",
                f"synalinks-obs: trace {item.trace_id} of run {self.run_id} never reached the "
                "tracking store: its feedback is not written",
            )

    def _give_up(self, item, exc) -> None:
        with self._condition:
            lost = len(item.assessments) + sum(len(i.assessments) for i in self._items)
            self._items.clear()
            self._broken = True
            self._closing = True
            self.lost += lost
        self._warn(
            "feedback",
            f"synalinks-obs: the tracking store did not take the feedback of trace "
            f"{item.trace_id} of run {self.run_id} ({type(exc).__name__}: "
            f"{reporting.first_line(exc)}); {lost} assessment(s) of this run are not "
            "written, training goes on",
        )

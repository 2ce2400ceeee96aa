"""Finished call records -> span batches, off the calling thread: the ``Exporter``.

The calling thread only appends a finished ``CallRecord`` to a bounded queue
(``submit``). One daemon thread per process wakes every ``export_interval`` seconds (or
when a batch is full, a flush is asked for, or a fork is coming), turns the records into
``Wire`` tuples (``export.wire``: payloads serialised, redacted, truncated) and hands them
to a sink (``export.sinks``: the exporter process, or a Writer in this thread),
``SEND_SLICE`` records at a time.

The thread's life is one ``State``: ``IDLE`` (none yet, or it stepped aside for a fork:
the next span or flush starts it again), ``RUNNING``, ``PARKING`` (a fork is coming: it
finishes what it does and exits, so no lock of ours or MLflow's is copied mid-operation),
``STOPPING`` (exit: write what is queued, close the sinks) and ``STOPPED``.

Guarantees: bounded memory (past ``max_queue_spans`` spans queued here, being
serialised, or held for the store by the sinks, new spans are dropped and counted);
what is dropped is reported in one line at exit, never per span; at exit what is queued
is written before threads are torn down, bounded by ``flush_timeout`` (a store known to
be down is not waited for), and spans finished *later* (threads still running after
``main`` returns) are written by a last pass within the same budget, or counted.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import os
import select
import threading
import time

from synalinks_obs import reporting, uris
from synalinks_obs.export.exit_pass import QUEUE_FULL, ExitPass
from synalinks_obs.export.fork_safety import ForkSafety
from synalinks_obs.export.sinks import Sinks
from synalinks_obs.export.thread_state import State
from synalinks_obs.export.wire import record_to_wire
from synalinks_obs.masking import policy_for
from synalinks_obs.store.experiments import resolve_experiment
from synalinks_obs.store.health import StoreUnavailable, probe, rejection

BATCH_SIZE = 2_000  # queued records that wake the exporter thread before its interval
SEND_SLICE = 200  # records serialised and handed to a sink at a time (its Writer merges them)
RESOLVE_RETRY_AFTER = 30.0  # seconds before an experiment that failed to resolve is retried
_log = reporting.logger(__name__)


class Exporter(ExitPass, ForkSafety):
    """The process-wide background exporter (one thread, see the module docstring)."""

    def __init__(self, settings):
        self.settings = settings
        self._reset()

    def _reset(self, mlflow_unsafe: bool = False) -> None:
        self._queue: collections.deque = collections.deque()
        self._lock = threading.Lock()  # state changes: thread start/stop, fork hand-over
        self._progress = threading.Condition(threading.Lock())  # flush() waits on it
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.state = State.IDLE
        self._thread: threading.Thread | None = None
        self._busy = 0  # records taken off the queue but not yet handed to a sink
        self._flush_now = False  # a flush asks for the queue now
        self._holding = False  # records wait for the exporter process to start
        self._deadline = None  # of the exit flush
        self._pid = os.getpid()
        self._experiment_ids: dict[tuple, str] = {}
        self._resolve_failed: dict[tuple, tuple] = {}  # key -> (retry after, the error)
        self.sinks = Sinks(self.settings, self._on_message, mlflow_unsafe)
        self._drop_reasons: collections.Counter = collections.Counter()  # ours (app side)
        self._soon: collections.deque = collections.deque()  # callables for the thread
        self._timers: list = []  # (due, n, callable) heap: call_later
        self._timer_ids = itertools.count()
        self.last_problem = ""
        self._full_reason = QUEUE_FULL
        self.parked = True  # the thread stepped aside before the last fork (see service)

    # -- counters -----------------------------------------------------------------------
    @property
    def exported(self) -> int:
        return self.sinks.exported

    def drop_reasons(self) -> collections.Counter:
        reasons = collections.Counter(self._drop_reasons)
        reasons.update(self.sinks.drop_reasons())
        return reasons

    @property
    def dropped(self) -> int:
        return sum(self.drop_reasons().values())

    # -- calling thread -------------------------------------------------------------------
    def submit(self, record) -> None:
        queue = self._queue
        # queued + being serialised + held by the sinks: all of them count (``_busy``)
        if len(queue) + self._busy + self.sinks.backlog >= self.settings.max_queue_spans:
            self._drop(1, self._full_reason)
            return
        queue.append(record)
        if self._thread is None:
            self._start()
        elif len(queue) == BATCH_SIZE:
            self._wake()

    def configure(self, settings) -> None:
        """New settings from a later ``enable()``; an exporter stopped at exit may run again."""
        self.settings = settings
        self.sinks.settings = settings
        with self._lock:
            if self.state is State.STOPPED and (self._thread is None or not self._thread.is_alive()):
                self.state = State.IDLE
                self._thread = None

    def prestart(self, tracking_uri: str, experiment_name: str) -> None:
        """Start the exporter process now and have it open the store (start-up activation,
        before the first span: see ``activation._prestart_exporter``)."""
        with self._lock:
            if self._thread is not None or self.state is not State.IDLE:
                return
            self.sinks.start_process_now(tracking_uri, experiment_name)

    def known_experiment_id(self, destination) -> str | None:
        """The experiment id of a destination if already resolved (never blocks)."""
        if destination.experiment_id:
            return destination.experiment_id
        return self._experiment_ids.get((destination.tracking_uri, destination.experiment_name))

    def experiment_id_now(self, destination) -> str:
        """The destination's experiment id, resolved (created) on the calling thread when
        not known yet; raises when the store cannot tell.

        For the app's own MLflow code that needs it at once (MLflow asking for its default
        experiment, a user's span inside one of our traces). Spans never wait for it: the
        process that writes them resolves the experiment itself, so the app opens no store
        at start-up. A server is probed first with a short timeout: a store that is down
        fails here at once instead of holding the app's call through MLflow's retries."""
        known = self.known_experiment_id(destination)
        if known is not None:
            return known
        if self.sinks.mlflow_unsafe:
            raise RuntimeError("MLflow cannot be used in this forked process")
        uri = destination.tracking_uri
        key = (uri, destination.experiment_name)
        failed = self._resolve_failed.get(key)
        if failed is not None and time.monotonic() < failed[0]:
            raise failed[1]  # not asked again for a while: a hanging store costs once
        try:
            if uris.is_http(uri):
                probe(uri)
            found = resolve_experiment(uri, destination.experiment_name)
        except Exception as exc:
            self._resolve_failed[key] = (time.monotonic() + RESOLVE_RETRY_AFTER, exc)
            known = exc if isinstance(exc, StoreUnavailable) else rejection(uri, exc)
            why = str(known) if known is not None else f"{type(exc).__name__}: {reporting.first_line(exc)}"
            reporting.warn_once(
                ("resolve", key),
                "synalinks-obs: cannot resolve the experiment %r in %s (%s); the app's own "
                "MLflow traces use MLflow's default experiment meanwhile",
                key[1], uris.display(uri), why, log=_log,
            )
            raise
        self._resolve_failed.pop(key, None)
        self._experiment_ids[key] = found
        return found

    def call_soon(self, fn) -> None:
        """Run ``fn()`` on the exporter thread at its next wake-up (best effort)."""
        self._soon.append(fn)
        if self._thread is None:
            self._start()
        self._wake()

    def call_later(self, delay: float, fn) -> None:
        """Run ``fn()`` on the exporter thread ``delay`` seconds from now (at exit at the
        latest; best effort)."""
        with self._lock:
            heapq.heappush(self._timers, (time.monotonic() + delay, next(self._timer_ids), fn))
        if self._thread is None:
            self._start()
        self._wake()

    def _due_timers(self, everything: bool = False) -> None:
        """Move the timers that are due (all of them at exit) to the soon queue."""
        if not self._timers:
            return
        now = time.monotonic()
        with self._lock:
            while self._timers and (everything or self._timers[0][0] <= now):
                self._soon.append(heapq.heappop(self._timers)[2])

    def _has_work(self) -> bool:
        return bool(self._queue or self._soon)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except OSError:  # full (it will wake anyway) or closed
            pass

    # -- exporter thread ----------------------------------------------------------------
    def _start(self) -> None:
        with self._lock:
            if self.state is not State.IDLE or self._thread is not None:
                return
            thread = threading.Thread(target=self._run, name="synalinks-obs-exporter", daemon=True)
            self._thread = thread
            self.state = State.RUNNING
        try:
            thread.start()
        except RuntimeError:  # interpreter shutting down: no new threads
            with self._lock:
                self._thread = None
                self.state = State.IDLE

    def _run(self, deadline: float | None = None) -> None:
        """The exporter loop (on its thread; at exit, with ``deadline``, inline)."""
        wait = None
        last_send = time.monotonic()
        while True:
            # Records are sent every export_interval (batches), sooner when a batch is
            # full, a flush or the exit asks, or a fork is coming.
            interval = self.settings.export_interval
            state = self.state
            due = (
                state is State.STOPPING or state is State.PARKING or self._flush_now
                or self._soon or (len(self._queue) >= BATCH_SIZE and not self._holding)
            )
            if not due:
                timeout = max(0.005, interval - (time.monotonic() - last_send))
                if wait is not None:
                    timeout = min(timeout, max(wait, 0.005))
                if self._timers:
                    timeout = min(timeout, max(self._timers[0][0] - time.monotonic(), 0.005))
                self._wait(timeout)
            if self.state is State.PARKING and deadline is None:
                return  # a fork is coming: hold no lock, run no code of ours
            stopping = self.state is State.STOPPING
            urgent = stopping or self._flush_now
            self._flush_now = False
            now = time.monotonic()
            try:
                self.sinks.maybe_start_process(len(self._queue), BATCH_SIZE)
                self.sinks.poll(stopping)
                if urgent or now - last_send >= interval or len(self._queue) >= BATCH_SIZE:
                    last_send = now
                    self._send_available(urgent)
                self._due_timers(everything=stopping)
                self._run_soon()
                wait = self.sinks.pump()
                self.sinks.update_backlog()
            except Exception as exc:  # never let the thread die (strict mode: it does)
                reporting.internal_error("the exporter thread", exc)
            with self._progress:
                self._progress.notify_all()
            if stopping and not self._queue:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            if stopping:
                self._wait(0.05)  # the exporter process is starting: wait for its hello
        self.sinks.close(self._deadline or time.monotonic(), self._report_close_error)

    def _report_close_error(self, exc) -> None:
        reporting.warn_once("close", "synalinks-obs: exporter error at exit: %r", exc, log=_log)

    def _wait(self, timeout: float) -> None:
        """Sleep until woken, an answer of the exporter process arrives, or ``timeout``."""
        fds = [self._wake_r, *self.sinks.wait_fds()]
        try:
            select.select(fds, [], [], timeout)
        except (OSError, ValueError):
            time.sleep(min(timeout, 0.05))
        try:
            while os.read(self._wake_r, 4096):
                pass
        except OSError:
            pass

    def _send_available(self, urgent: bool) -> None:
        queue = self._queue
        if not queue:
            return
        # While the exporter process starts, records wait here unless a flush asks for
        # them now or the queue fills up.
        sink = self.sinks.choose(urgent or len(queue) >= self.settings.max_queue_spans // 2,
                                 self._deadline if self.state is State.STOPPING else None)
        self._holding = sink is None
        if sink is None:
            return
        settings = self.settings
        redactor = policy_for(settings)
        while queue:
            # A slice, in ``_busy`` (``submit`` counts it) until the sinks hold it: one
            # slice's JSON, pickle and frame at a time, never a whole batch's.
            self._busy = min(len(queue), SEND_SLICE)
            taken = collections.deque()
            try:
                for _ in range(self._busy):
                    taken.append(queue.popleft())
            except IndexError:  # (taken at exit by ``Sinks.keep_records``)
                pass
            try:
                groups: dict = {}
                while taken:
                    record = taken.popleft()
                    try:
                        wire = record_to_wire(record, settings, redactor)
                    except Exception as exc:
                        self._drop(1, f"internal error converting a span ({type(exc).__name__})")
                        reporting.internal_error("converting a span", exc)
                        continue
                    groups.setdefault(record.trace.destination, []).append(wire)
                record = wire = None
                for destination, wires in groups.items():
                    sink = self.sinks.send(sink, destination, wires)
            finally:
                groups = wires = None
                self.sinks.update_backlog()  # before ``_busy`` stops counting them
                self._busy = 0

    def _run_soon(self) -> None:
        while self._soon:
            fn = self._soon.popleft()
            try:
                fn()
            except Exception as exc:
                reporting.warn_once("soon", "synalinks-obs: deferred task failed: %r", exc, log=_log)

    # -- messages from the sinks ----------------------------------------------------------
    def _on_message(self, kind, *args) -> None:
        if kind == "experiment":
            key, experiment_id = args
            self._experiment_ids[tuple(key)] = experiment_id
        elif kind == "problem":
            self.last_problem = args[0]
            self._full_reason = f"{args[0]}; buffer full ({self.settings.max_queue_spans} spans)"
            _log.info("synalinks-obs: %s; spans are kept and retried", args[0])
        elif kind == "rejected":  # 401/403: retrying with the same credentials cannot help
            self.last_problem = args[0]
            reporting.warn_once(
                ("rejected", args[0]),
                "synalinks-obs: %s; spans to it are dropped (asked again once a minute)",
                args[0], log=_log,
            )
        elif kind == "warning":
            reporting.warn_once(("sink warning", args[0]), "synalinks-obs: %s", args[0], log=_log)

    def _drop(self, count: int, reason: str) -> None:
        if reason not in self._drop_reasons:
            _log.info("synalinks-obs: dropping spans: %s", reason)
        self._drop_reasons[reason] += count

    # -- flushing -----------------------------------------------------------------------
    def _idle(self) -> bool:
        if self._queue or self._busy or self._soon:
            return False
        return self.sinks.idle()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued span is written (at most ``timeout`` seconds).

        Spans held for a store that is failing do not hold the flush up: they are
        retried in the background (and reported at exit if they never get written)."""
        if self._pid != os.getpid():
            return not self._queue
        if self._thread is None:
            if not self._has_work():
                return True
            self._start()  # parked for a fork since the last span
            if self._thread is None:
                return not self._queue
        deadline = time.monotonic() + (self.settings.flush_timeout if timeout is None else timeout)
        self._flush_now = True
        self._wake()
        while not self._idle():
            left = deadline - time.monotonic()
            thread = self._thread
            if left <= 0 or thread is None or not thread.is_alive():
                return self._idle()
            with self._progress:
                self._progress.wait(min(left, 0.05))
        return True

    def shutdown(self, timeout: float | None = None, report: bool = True) -> None:
        """Write what is queued (bounded), stop, and report what could not be written."""
        if self._pid != os.getpid():
            return
        budget = self.settings.flush_timeout if timeout is None else timeout
        self._deadline = time.monotonic() + budget
        with self._lock:
            self.state = State.STOPPING
            thread = self._thread
        self._wake()
        if thread is not None:
            thread.join(max(0.0, self._deadline - time.monotonic()))
            left, why = 0, ""
            if thread.is_alive():  # still writing: what it holds is lost
                why = self.sinks.stuck_reason()
                self.sinks.keep_records(self._queue, f"exit flush timed out after {budget:g} s")
                left += len(self._queue) + self._busy + self.sinks.abandon_local()
                self._queue.clear()
            if not why:
                why = self.sinks.stuck_reason()
            left += self.sinks.abandon_process()
            if left:
                self._drop(left, f"exit flush timed out after {budget:g} s{why}")
        else:
            self._write_inline(budget)
        with self._lock:
            self.state = State.STOPPED
        if report:
            self.report()

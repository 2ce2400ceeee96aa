"""Finished call records -> MLflow spans in the tracking store, off the calling thread.

The calling thread only appends a finished ``CallRecord`` to a bounded queue. One daemon
thread per process wakes every ``export_interval`` seconds (or when a batch is full or
a flush is asked for) and turns the records into plain span tuples
(``record_to_wire``: payloads serialised, redacted and truncated here). The tuples go
to a *sink*:

- by default a separate exporter process (``synalinks_obs._writer``, started at once
  with the same Python): it builds the MLflow spans and writes them with MLflow's
  store-level ``log_spans``, many traces per call. MLflow's CPU-heavy serialisation and
  SQLAlchemy work then runs on another core instead of competing with the app for the
  GIL, and a store that is down, failing or slow is handled there with a short health
  probe and our own backoff (MLflow's process-wide HTTP retry settings stay the user's);
- or, with ``SYNALINKS_OBS_EXPORT_PROCESS=0`` or when that process cannot be started
  (or dies), the same ``Writer`` inside this thread.

Guarantees:
- bounded memory: past ``max_queue_spans`` new spans are dropped and counted (here and
  in the exporter process, whose buffer has the same cap);
- what is dropped is reported in one line at exit (count and reasons), not per span;
  while the store fails, a line is logged at INFO level;
- at interpreter exit, what is queued is written before threads are torn down, bounded
  by ``flush_timeout`` seconds (a store known to be down is not waited for);
- after ``fork()`` the child starts empty: it neither writes nor reports the parent's
  queued spans (the parent does), and starts its own thread and exporter process; in
  the parent the thread, which stepped aside for the fork, comes back with the next
  span or flush, and at exit the queue is written inline (not from the after-fork
  hook: Python 3.13 counts threads after those hooks and would warn that the app
  forked a multi-threaded process; and Python starts no thread at exit).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import pickle
import select
import socket
import subprocess
import sys
import threading
import time
import traceback

from synalinks_obs import _writer
from synalinks_obs._writer import first_line as _first_line
from synalinks_obs._writer import resolve_experiment  # noqa: F401  (used by training)
from synalinks_obs._writer import wire_to_span
from synalinks_obs.payloads import materialize, redactor_for, to_json

_logger = logging.getLogger("synalinks_obs")

BATCH_SIZE = 2_000  # queued records that wake the exporter thread before its interval
PROCESS_AFTER = 2.0  # seconds of spans before the exporter process is started
RESOLVE_RETRY_AFTER = 30.0  # seconds before an experiment that failed to resolve is retried


# Seconds a fork waits for the exporter thread to finish what it is doing and step aside
# (opening a new sqlite store can take that long on a busy machine).
FORK_PARK_TIMEOUT = 60.0
_ABANDONED: list = []  # a forked child's copies of the parent's files: never finalised


class Exporter:
    """The process-wide background exporter (one thread, see the module docstring)."""

    def __init__(self, settings):
        self.settings = settings
        self._reset_state()

    def _reset_state(self):
        self._queue: collections.deque = collections.deque()
        self._lock = threading.Lock()  # thread start/stop and fork hand-over
        self._progress = threading.Condition(threading.Lock())  # flush() waits on it
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None
        self._thread_gone = False  # it stepped aside for a fork
        self._parking = False
        self._busy = 0  # records taken off the queue but not yet handed to a sink
        self._stopping = False
        self._stopped = False
        self._flush_now = False
        self._close_deadline = None
        self._pid = os.getpid()
        self._experiment_ids: dict[tuple, str] = {}
        self._resolve_failed: dict[tuple, tuple] = {}  # key -> (retry after, the error)
        self._process: _ProcessSink | None = None  # the exporter process, once started
        self._process_tried = False
        self._records_since = None  # when spans started waiting (see _maybe_start_process)
        self._holding = False  # records wait for the exporter process to start
        self._local: _LocalSink | None = None  # the Writer in this thread, when needed
        self._lost: collections.Counter = collections.Counter()  # in a dead process
        self._gone_exported = 0  # written by an exporter process that died later
        self._drop_reasons: collections.Counter = collections.Counter()  # ours (app side)
        self._warned: set[str] = set()
        self._soon: collections.deque = collections.deque()  # callables for the thread
        self.last_problem = ""
        # Forked while our thread was inside MLflow: this process must not use MLflow
        # itself (a lock or a connection may be stuck mid-operation); its exporter
        # process does everything.
        self._mlflow_unsafe = False
        self._parked = True

    # -- counters -----------------------------------------------------------------------
    def _sinks(self):
        return [sink for sink in (self._process, self._local) if sink is not None]

    @property
    def exported(self) -> int:
        return self._gone_exported + sum(sink.exported for sink in self._sinks())

    def drop_reasons(self) -> collections.Counter:
        reasons = collections.Counter(self._drop_reasons)
        reasons.update(self._lost)
        for sink in self._sinks():
            reasons.update(sink.dropped)
        return reasons

    @property
    def dropped(self) -> int:
        return sum(self.drop_reasons().values())

    # -- calling thread -------------------------------------------------------------------
    def submit(self, record) -> None:
        queue = self._queue
        if len(queue) >= self.settings.max_queue_spans:
            self._drop(1, "queue full (the exporter is slower than the app)")
            return
        queue.append(record)
        if self._thread is None:
            self._start()
        elif len(queue) == BATCH_SIZE:
            self._wake()

    def known_experiment_id(self, destination) -> str | None:
        """The experiment id of a destination if already resolved (never blocks)."""
        if destination.experiment_id:
            return destination.experiment_id
        return self._experiment_ids.get((destination.tracking_uri, destination.experiment_name))

    def experiment_id_now(self, destination) -> str:
        """The destination's experiment id, resolved (created) on the calling thread
        when not known yet; raises when the store cannot tell.

        For the app's own MLflow code that needs it at once (MLflow asking for its
        default experiment, a user's span inside one of our traces). Spans never wait
        for it: the process that writes them resolves the experiment itself, so the app
        opens no store at start-up (creating a sqlite store costs seconds of CPU).
        A server is probed first with a short timeout: a store that is down fails here
        at once instead of holding the app's call through MLflow's HTTP retries."""
        known = self.known_experiment_id(destination)
        if known is not None:
            return known
        if self._mlflow_unsafe:
            raise RuntimeError("MLflow cannot be used in this forked process")
        uri = destination.tracking_uri
        key = (uri, destination.experiment_name)
        failed = self._resolve_failed.get(key)
        if failed is not None and time.monotonic() < failed[0]:
            raise failed[1]  # not asked again for a while: a hanging store costs once
        try:
            if _writer._is_http(uri):
                _writer.probe(uri)
            found = resolve_experiment(uri, destination.experiment_name)
        except Exception as exc:
            self._resolve_failed[key] = (time.monotonic() + RESOLVE_RETRY_AFTER, exc)
            self._warn_once(
                f"resolve {key}",
                f"synalinks-obs: cannot resolve the experiment {key[1]!r} in {uri} "
                f"({_first_line(exc) if isinstance(exc, _writer.StoreUnavailable) else repr(exc)}); "
                "the app's own MLflow traces use MLflow's default experiment meanwhile",
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
            if self._thread is not None or self._stopped or self._parking:
                return
            thread = threading.Thread(target=self._run, name="synalinks-obs-exporter", daemon=True)
            self._thread = thread
        try:
            thread.start()
        except RuntimeError:  # interpreter shutting down: no new threads
            self._thread = None

    def _maybe_start_process(self) -> None:
        """Start the exporter process once spans have kept coming for a while.

        A short script (or one that traces a handful of calls) is better served by
        writing from this thread at exit than by paying for a second interpreter that
        imports MLflow (~2.5 s of CPU); an app that keeps producing spans gets it."""
        if self._process_tried or not self._queue:
            return
        now = time.monotonic()
        if self._records_since is None:
            self._records_since = now
        if now - self._records_since < PROCESS_AFTER and len(self._queue) < BATCH_SIZE:
            return
        self._process_tried = True
        if not getattr(self.settings, "export_process", True):
            return
        try:
            sink = _ProcessSink(self)
            if sink.start():
                self._process = sink
        except Exception as exc:
            _logger.info("synalinks-obs: cannot start the exporter process (%r)", exc)

    def _run(self, deadline: float | None = None) -> None:
        """The exporter loop (on its thread; at exit, with ``deadline``, inline)."""
        wait = None
        last_send = time.monotonic()
        while True:
            # Records are sent every export_interval (batches), sooner when a batch is
            # full, a flush or the exit asks, or a fork is coming.
            interval = self.settings.export_interval
            now = time.monotonic()
            due = (
                self._stopping or self._flush_now or self._parking or self._soon
                or (len(self._queue) >= BATCH_SIZE and not self._holding)
            )
            if not due:
                timeout = max(0.005, interval - (now - last_send))
                if wait is not None:
                    timeout = min(timeout, max(wait, 0.005))
                self._wait(timeout)
            with self._lock:
                if self._parking:  # a fork is coming: hold no lock, run no code of ours
                    self._thread_gone = True
                    return
            stopping = self._stopping
            urgent = stopping or self._flush_now
            self._flush_now = False
            now = time.monotonic()
            try:
                self._maybe_start_process()
                self._poll_process()
                if urgent or now - last_send >= interval or len(self._queue) >= BATCH_SIZE:
                    last_send = now
                    self._send_available(urgent)
                self._run_soon()
                wait = self._local.pump() if self._local is not None else None
            except Exception as exc:  # never let the thread die
                self._warn_once("exporter", f"synalinks-obs: exporter error: {exc!r}")
            with self._progress:
                self._progress.notify_all()
            if stopping and not self._queue:
                break
            if deadline is not None and time.monotonic() >= deadline:
                break
            if stopping:
                self._wait(0.05)  # the exporter process is starting: wait for its hello
        self._close_sinks()

    def _wait(self, timeout: float) -> None:
        """Sleep until woken, an answer of the exporter process arrives, or ``timeout``."""
        fds = [self._wake_r]
        process = self._process
        if process is not None and not process.finished:
            fds.append(process.ack_fd)
        try:
            select.select(fds, [], [], timeout)
        except (OSError, ValueError):
            time.sleep(min(timeout, 0.05))
        try:
            while os.read(self._wake_r, 4096):
                pass
        except OSError:
            pass

    def _poll_process(self) -> None:
        process = self._process
        if process is None:
            return
        process.poll()
        if process.finished and not process.said_bye and not self._stopping:
            self._process_died(process)

    def _process_died(self, process) -> None:
        """An exporter process that exited unexpectedly: count what it held, go local."""
        lost = process.sent - process.exported - sum(process.dropped.values())
        code = process.process.poll() if process.process is not None else None
        if lost > 0:
            self._lost[f"the exporter process exited (code {code})"] += lost
        self._lost.update(process.dropped)
        self._gone_exported += process.exported
        self._process = None
        process.abandon()
        _logger.info(
            "synalinks-obs: the exporter process exited (code %s); writing spans from the "
            "app's process", code,
        )

    def _sink(self, urgent: bool):
        """Where spans go now: the exporter process once it is ready; until then (if
        they cannot wait) or without it, the Writer in this thread."""
        process = self._process
        if process is not None and not process.finished:
            if process.ready:
                return process
            if not urgent or self._mlflow_unsafe:
                return None  # starting: keep the records a little longer
        elif process is None and not self._process_tried and not urgent:
            if getattr(self.settings, "export_process", True):
                return None  # it may start soon (see _maybe_start_process)
        return self._local_sink()

    def _local_sink(self) -> "_LocalSink":
        if self._local is None:
            self._local = _LocalSink(self)
        return self._local

    def _send_available(self, urgent: bool) -> None:
        queue = self._queue
        if not queue:
            return
        # While the exporter process starts, records wait here unless a flush asks for
        # them now or the queue fills up.
        sink = self._sink(urgent or len(queue) >= self.settings.max_queue_spans // 2)
        self._holding = sink is None
        if sink is None:
            return
        settings = self.settings
        redactor = redactor_for(settings.redact_key_fragments)
        while queue:
            groups: dict = {}
            count = 0
            self._busy = min(len(queue), BATCH_SIZE)  # before they leave the queue (flush)
            try:
                while count < BATCH_SIZE:
                    record = queue.popleft()
                    count += 1
                    try:
                        wire = record_to_wire(record, settings, redactor)
                    except Exception as exc:
                        self._drop(1, f"internal error converting a span ({type(exc).__name__})")
                        self._warn_once(
                            "convert", f"synalinks-obs: cannot convert a span: {exc!r}"
                        )
                        continue
                    groups.setdefault(record.trace.destination, []).append(wire)
            except IndexError:
                pass
            try:
                for destination, wires in groups.items():
                    target = sink
                    try:
                        target.send(destination, wires)
                    except Exception:
                        if target is self._local:
                            raise
                        self._process_died(target)
                        sink = self._local_sink()
                        sink.send(destination, wires)
            finally:
                self._busy = 0

    def _run_soon(self) -> None:
        while self._soon:
            fn = self._soon.popleft()
            try:
                fn()
            except Exception as exc:
                self._warn_once("soon", f"synalinks-obs: deferred task failed: {exc!r}")

    def _close_sinks(self) -> None:
        """At exit: EOF to the exporter process, write what this thread holds, then
        collect the process's last report (all before the deadline)."""
        deadline = self._close_deadline or time.monotonic()
        process, local = self._process, self._local
        if process is not None:
            process.close(deadline)
        if local is not None:
            try:
                local.close(deadline)
            except Exception as exc:
                self._warn_once("close", f"synalinks-obs: exporter error at exit: {exc!r}")
        if process is not None:
            process.wait(deadline)

    # -- messages from the sinks ----------------------------------------------------------
    def _on_message(self, kind, *args) -> None:
        if kind == "experiment":
            key, experiment_id = args
            key = tuple(key)
            self._experiment_ids[key] = experiment_id
        elif kind == "problem":
            self.last_problem = args[0]
            _logger.info("synalinks-obs: %s; spans are kept and retried", args[0])
        elif kind == "warning":
            self._warn_once(args[0], f"synalinks-obs: {args[0]}")

    # -- accounting ---------------------------------------------------------------------
    def _drop(self, count: int, reason: str) -> None:
        if reason not in self._drop_reasons:
            _logger.info("synalinks-obs: dropping spans: %s", reason)
        self._drop_reasons[reason] += count

    def _warn_once(self, key: str, message: str) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        _logger.warning(message)

    # -- flushing -----------------------------------------------------------------------
    def _idle(self) -> bool:
        if self._queue or self._busy or self._soon:
            return False
        return all(sink.idle() for sink in self._sinks())

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

    def shutdown(self, timeout: float | None = None) -> None:
        """Write what is queued (bounded), stop, and report what could not be written."""
        if self._pid != os.getpid():
            return
        budget = self.settings.flush_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        self._close_deadline = deadline
        with self._lock:
            self._stopped = True
            self._stopping = True
            thread = self._thread
        self._wake()
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
            left = 0
            if thread.is_alive():  # still writing: what it holds is lost
                left += len(self._queue) + self._busy
                self._queue.clear()
                if self._local is not None:
                    left += self._local.abandon()
            process = self._process
            if process is not None and not process.said_bye:
                left += process.abandon()
            if left:
                self._drop(left, f"exit flush timed out after {budget:g} s")
        elif self._has_work() or self._sinks():
            # The thread stepped aside for a fork since the last span, and Python starts
            # no thread at exit: write (and close the sinks) from here, same budget.
            if self._process is None:
                self._process_tried = True  # not worth an interpreter now
            try:
                self._run(deadline=deadline)
            except Exception as exc:
                self._warn_once("close", f"synalinks-obs: exporter error at exit: {exc!r}")
            left = len(self._queue) + self._busy
            self._queue.clear()
            if left:
                self._drop(left, f"exit flush timed out after {budget:g} s")
        self.report()

    def report(self) -> None:
        """Print the one line saying how many spans were not written and why."""
        reasons = self.drop_reasons()
        total = sum(reasons.values())
        if total:
            detail = "; ".join(f"{n} {why}" for why, n in reasons.most_common())
            print(
                f"synalinks-obs: {total} span(s) were not written to MLflow ({detail})",
                file=sys.stderr,
                flush=True,
            )

    # -- fork ---------------------------------------------------------------------------
    def _before_fork(self) -> None:
        """Let the exporter thread finish what it is doing and exit, so that the fork
        copies no lock of ours (or MLflow's) held mid-operation, and Python sees a
        single-threaded process (no 'multi-threaded fork' warning because of us)."""
        thread = self._thread
        if thread is None or self._pid != os.getpid() or not thread.is_alive():
            return
        with self._lock:
            self._parking = True
        self._wake()
        thread.join(FORK_PARK_TIMEOUT)
        self._parked = not thread.is_alive()
        if self._parked and thread.native_id is not None:
            # join() returns a moment before the OS thread is gone, and Python counts
            # OS threads to decide whether to warn about forking a threaded process.
            task = f"/proc/self/task/{thread.native_id}"
            deadline = time.monotonic() + 0.5
            while os.path.exists(task) and time.monotonic() < deadline:
                time.sleep(0.0005)

    def _after_fork_in_parent(self) -> None:
        self._parked = True
        with self._lock:
            self._parking = False
            if self._thread_gone:
                self._thread = None
            self._thread_gone = False
        # The thread is not restarted here but by the next span or flush (at exit the
        # queue is written inline): Python 3.13 counts the process's threads after these
        # hooks have run and would warn that the *app* forked a multi-threaded process.

    def _after_fork_in_child(self) -> None:
        """Forget the parent's queue, thread and exporter process (the parent writes its
        own spans); this process starts its own on its first span."""
        process = self._process
        old_fds = (self._wake_r, self._wake_w)
        known = dict(self._experiment_ids)  # facts about the stores, still true here
        unsafe = not self._parked
        self._reset_state()
        self._experiment_ids = known
        self._mlflow_unsafe = unsafe and getattr(self.settings, "export_process", True)
        for fd in old_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        if process is not None:
            process.forget_in_child()
        _dispose_mlflow_engines()


def _dispose_mlflow_engines() -> None:
    """In a forked child: drop the database connections MLflow inherited (SQLAlchemy
    pools must not share connections across processes) without closing the parent's."""
    registry = sys.modules.get("mlflow.tracking._tracking_service.registry")
    if registry is not None and hasattr(registry, "_building_store_lock"):
        registry._building_store_lock = threading.Lock()
    store_module = sys.modules.get("mlflow.store.tracking.sqlalchemy_store")
    store = getattr(store_module, "SqlAlchemyStore", None)
    if store is None:
        return
    try:
        store._engine_map_lock = threading.Lock()
        for engine in list(getattr(store, "_engine_map", {}).values()):
            engine.dispose(close=False)
    except Exception:
        pass


# -- sinks ------------------------------------------------------------------------------


class _LocalSink:
    """The ``Writer`` inside the exporter thread."""

    finished = False

    def __init__(self, exporter: Exporter):
        self.exporter = exporter
        self.writer = _writer.Writer(
            exporter.settings.max_queue_spans, notify=exporter._on_message
        )

    @property
    def exported(self) -> int:
        return self.writer.exported

    @property
    def dropped(self):
        return self.writer.dropped

    def send(self, destination, wires) -> None:
        self.writer.add(destination, len(wires), wires)

    def pump(self):
        return self.writer.pump()

    def idle(self) -> bool:
        return self.writer.pending == self.writer.held

    def close(self, deadline) -> None:
        budget = deadline - time.monotonic()
        self.writer.drain(
            deadline, timeout_reason=f"exit flush timed out after {max(budget, 0):.3g} s"
        )

    def abandon(self) -> int:
        return self.writer.pending


_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)


class _ProcessSink:
    """The exporter process (``synalinks_obs._writer``) and its two channels: a socket
    as its stdin (ours to write: no SIGPIPE) and a pipe for its answers, read by the
    exporter thread without blocking."""

    def __init__(self, exporter: Exporter):
        self.exporter = exporter
        self.process = None
        self.sent = 0
        self.exported = 0
        self.dropped: collections.Counter = collections.Counter()
        self.held = 0  # spans it keeps for a store that is failing
        self.ready = False  # it said hello: mlflow is imported there
        self.said_bye = False
        self.finished = False  # "bye" received or the process is gone
        self.ack_fd = None
        self._socket = None
        self._buffer = b""

    def start(self) -> bool:
        executable = sys.executable
        if not executable:
            return False
        settings = self.exporter.settings
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["SYNALINKS_OBSERVABILITY"] = "0"  # the writer itself is never traced
        env.pop("_SYNALINKS_OBS_RUN", None)
        # Our own health probe and backoff replace MLflow's retry policy (minutes long):
        # only in the exporter process, the app's MLflow settings stay as they are.
        env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        env.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        read_fd, write_fd = os.pipe()
        ours, theirs = socket.socketpair()
        code = (
            "import sys; sys.path.insert(0, sys.argv.pop(1)); "
            "from synalinks_obs._writer import run_and_exit; run_and_exit()"
        )
        debug = _logger.isEnabledFor(logging.DEBUG)
        try:
            self.process = subprocess.Popen(
                [
                    executable, "-c", code, package_parent, str(write_fd),
                    str(settings.flush_timeout), str(settings.max_queue_spans),
                ],
                stdin=theirs.fileno(),
                stdout=subprocess.DEVNULL,
                stderr=None if debug else subprocess.DEVNULL,
                pass_fds=(write_fd,),
                env=env,
                cwd=os.getcwd(),
            )
        except Exception as exc:
            for fd in (read_fd, write_fd):
                os.close(fd)
            ours.close()
            theirs.close()
            _logger.info("synalinks-obs: cannot start the exporter process (%r)", exc)
            return False
        os.close(write_fd)
        theirs.close()
        ours.shutdown(socket.SHUT_RD)
        os.set_blocking(read_fd, False)
        self._socket = ours
        self.ack_fd = read_fd
        return True

    def poll(self) -> None:
        """Read and handle whatever the process has answered (never blocks)."""
        if self.finished:
            return
        while True:
            try:
                data = os.read(self.ack_fd, 1 << 16)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self.finished = True
                break
            self._buffer += data
        buffer = self._buffer
        size = _writer._HEADER.size
        while len(buffer) >= size:
            (length,) = _writer._HEADER.unpack_from(buffer)
            if len(buffer) < size + length:
                break
            message = pickle.loads(buffer[size:size + length])
            buffer = buffer[size + length:]
            self._handle(message)
        self._buffer = buffer

    def _handle(self, message) -> None:
        kind = message[0]
        if kind in ("done", "bye"):
            self.exported = message[1]
            self.dropped = collections.Counter(message[2])
            self.held = message[3]
            if kind == "bye":
                self.said_bye = True
                self.finished = True
        elif kind == "hello":
            self.ready = True
        self.exporter._on_message(*message)

    def _write(self, message) -> None:
        if self.finished:
            raise BrokenPipeError("the exporter process exited")
        self._socket.sendall(_writer.frame(message), _NOSIGNAL)

    def send(self, destination, wires) -> None:
        payload = pickle.dumps(wires, protocol=pickle.HIGHEST_PROTOCOL)
        self._write(("spans", destination, len(wires), payload))
        self.sent += len(wires)

    def idle(self) -> bool:
        if self.finished:
            return True
        return self.exported + sum(self.dropped.values()) + self.held >= self.sent

    def close(self, deadline) -> None:
        """No more spans: tell the process how long it may take, then EOF."""
        if self.sent == 0:  # nothing of ours in it: no reason to wait for it
            self.abandon()
            return
        try:
            left = deadline - time.monotonic()
            # keep a margin for its last report and its exit
            self._write(("close", max(0.0, left * 0.9 - 0.3)))
        except Exception:
            pass
        try:
            self._socket.close()
        except Exception:
            pass

    def wait(self, deadline) -> None:
        """Collect the process's answers until its last one (or the deadline)."""
        while not self.finished:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                select.select([self.ack_fd], [], [], min(left, 0.5))
            except (OSError, ValueError):
                return
            self.poll()
        try:
            self.process.wait(max(0.05, deadline - time.monotonic()))
        except Exception:
            pass

    def abandon(self) -> int:
        """Stop the process now; the number of spans it had not written yet."""
        if self.process is not None and self.process.poll() is None:
            try:
                self.process.kill()
                self.process.wait(1.0)
            except Exception:
                pass
        for close in (lambda: self._socket.close(), lambda: os.close(self.ack_fd)):
            try:
                close()
            except Exception:
                pass
        left = 0 if self.said_bye else self.sent - self.exported - sum(self.dropped.values())
        self.finished = True
        return max(0, left)

    def forget_in_child(self) -> None:
        """In a forked child: close our copies of the parent's channels (raw, so that no
        lock a parent's thread held is touched), and never wait for its process."""
        for fd_of in (lambda: self._socket.fileno(), lambda: self.ack_fd):
            try:
                os.close(fd_of())
            except Exception:
                pass
        _ABANDONED.append(self)  # its socket object would close a reused fd number
        if self.process is not None:
            self.process.returncode = 0  # not our child: never wait for it


_shared: Exporter | None = None


def shared_exporter(settings) -> Exporter:
    """The process-wide exporter, configured with the settings now in force."""
    global _shared
    if _shared is None:
        _shared = Exporter(settings)
    else:
        _shared.settings = settings
        if _shared._stopped and (_shared._thread is None or not _shared._thread.is_alive()):
            _shared._stopped = _shared._stopping = False
            _shared._thread = None
    return _shared


def current_exporter() -> Exporter | None:
    return _shared


def _before_fork() -> None:
    if _shared is not None:
        try:
            _shared._before_fork()
        except Exception:
            pass


def _after_fork_in_parent() -> None:
    if _shared is not None:
        _shared._after_fork_in_parent()


def _after_fork_in_child() -> None:
    if _shared is not None:
        _shared._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


# -- record -> span tuple (exporter thread) ---------------------------------------------

_USAGE_KEYS = ("input_tokens", "output_tokens", "total_tokens", "cost")


def _plain_usage(usage):
    if not isinstance(usage, dict):
        return None, None
    plain = {}
    for key in _USAGE_KEYS:
        value = usage.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            plain[key] = value
    error = usage.get("error")
    return plain, (str(error) if error else None)


def _payloads(record, settings, redactor, lm_error):
    """The JSON text of a record's inputs and outputs (None when not captured)."""
    if not settings.capture_payloads:
        return None, None
    max_chars = settings.max_payload_chars
    inputs = {"data": record.inputs}
    if record.kwargs:
        inputs["kwargs"] = record.kwargs
    error = record.error
    outputs = None if error is not None else {"data": record.outputs}
    if record.span_type == "CHAT_MODEL" and not record.symbolic:
        plain = materialize(record.inputs, redactor)
        messages = _chat_messages(plain)
        if messages is not None:
            inputs = {"messages": messages, **inputs}
        if outputs is not None and record.outputs is not None and not lm_error:
            content = materialize(record.outputs, redactor)
            message = (
                content
                if isinstance(content, dict) and "role" in content
                else {"role": "assistant", "content": json.dumps(content, default=str)}
            )
            outputs = {"choices": [{"index": 0, "message": message}], **outputs}
    inputs_json = to_json(inputs, max_chars, redactor)
    outputs_json = to_json(outputs, max_chars, redactor) if outputs is not None else None
    return inputs_json, outputs_json


def record_to_wire(record, settings, redactor=None):
    """The plain, picklable span tuple of a finished record (see ``_writer.W_*``)."""
    if redactor is None:
        redactor = redactor_for(settings.redact_key_fragments)
    trace = record.trace
    usage, lm_error = _plain_usage(record.usage)
    error = record.error
    error_info = None
    if error is not None:
        try:
            stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        except Exception:
            stack = ""
        error_info = (type(error).__name__, _safe_str(error), stack[-8000:])
    inputs_json, outputs_json = _payloads(record, settings, redactor, lm_error)
    parent_call_id = record.parent_call_id
    return (
        trace.otel_trace_id,
        trace.trace_id,
        record.span_id,
        record.parent_span_id,
        record.name,
        record.start_ns,
        record.end_ns,
        record.span_type,
        record.call_id,
        parent_call_id,
        record.module_class,
        record.module_name,
        record.description,
        bool(record.symbolic),
        float(record.cost),
        usage,
        record.model,
        inputs_json,
        outputs_json,
        error_info,
        lm_error,
        record.parent_span_id is None and not trace.foreign,
        bool(trace.foreign),
    )


def record_to_span(record, settings):
    """Build the immutable MLflow span of a finished record."""
    return wire_to_span(record_to_wire(record, settings))


def _chat_messages(inputs):
    if not inputs:
        return None
    first = inputs[0]
    messages = first.get("messages") if isinstance(first, dict) else None
    return messages if isinstance(messages, list) else None


def _safe_str(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:
        return f"<{type(error).__name__} with an unprintable message>"

"""Where the exporter thread sends span batches: the exporter process, or a local Writer.

- ``ProcessSink`` (``export.process_sink``): the exporter process.
- ``LocalSink``: the same ``store.writer.Writer`` inside the exporter thread, for short
  scripts, ``SYNALINKS_OBS_EXPORT_PROCESS=0``, or when the process cannot be used.
- ``Sinks``: which one is used now. With start-up activation (``SYNALINKS_OBSERVABILITY``,
  the launcher) the process is started when the app starts importing Synalinks
  and opens the store meanwhile (``start_process_now``), so a short script's exit only
  waits for its last spans; otherwise it is started once an app has kept producing
  spans for ``PROCESS_AFTER`` seconds (a short script is then better served by writing
  its few spans from the thread than by a second interpreter importing MLflow, ~2.5 s
  of CPU). While it starts, records wait; a flush writes them from the thread at once,
  except for a process started at start-up (it may be creating the store): that one is
  waited for up to ``START_GRACE`` seconds from its start (at exit, half the flush
  budget at most). Every batch sent to the process is kept (pickled) until the process
  says it is done with it (written, or dropped and counted); if the process dies
  (killed, out of memory), the batches it had not finished are written by the thread,
  which writes locally from then on. MLflow's ``log_spans`` upserts spans by id, so a
  batch the process wrote just before dying is not written twice. ``backlog`` (kept
  batches and the local Writer's) counts against the app's ``max_queue_spans``.
"""

from __future__ import annotations

import collections
import time

from synalinks_obs import reporting
from synalinks_obs.export.process_sink import ProcessSink
from synalinks_obs.store import protocol
from synalinks_obs.store.spool import Spool
from synalinks_obs.store.writer import Writer

PROCESS_AFTER = 2.0  # seconds of spans before the exporter process is started
START_GRACE = 15.0  # seconds a flush waits for a starting exporter process before writing itself
_log = reporting.logger(__name__)


class LocalSink:
    """The ``Writer`` inside the exporter thread."""

    finished = False

    def __init__(self, max_spans: int, notify, spool_dir=None):
        self.writer = Writer(max_spans, notify=notify, spool=Spool(spool_dir) if spool_dir else None)
        self._credentials = protocol.tracking_environment()

    @property
    def exported(self) -> int:
        return self.writer.exported

    @property
    def dropped(self):
        return self.writer.dropped

    @property
    def spooled(self):
        return self.writer.spooled

    def send(self, destination, wires) -> None:
        credentials = protocol.tracking_environment()
        if credentials != self._credentials:  # rotated: refused stores are asked again
            self._credentials = credentials
            self.writer.forget_rejections()
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


class Sinks:
    """The exporter process and the local Writer, and which one takes spans now."""

    def __init__(self, settings, notify, mlflow_unsafe: bool = False):
        self.settings = settings
        self.notify = notify
        self.process: ProcessSink | None = None  # once started
        self.process_tried = False
        self.local: LocalSink | None = None  # made when needed
        self.lost: collections.Counter = collections.Counter()  # in a process that died
        self.gone_exported = 0  # written by an exporter process that died later
        self.gone_spooled: collections.Counter = collections.Counter()
        # Spans held on the sinks' side for the store (kept for the exporter process, or
        # in the local Writer): updated by the exporter thread, read by ``submit``.
        self.backlog = 0
        self._records_since = None  # when spans started waiting
        # Forked while the parent's thread was inside MLflow: this process must not use
        # MLflow itself (a lock or connection may be stuck); its exporter process does.
        self.mlflow_unsafe = mlflow_unsafe

    def all(self) -> list:
        return [sink for sink in (self.process, self.local) if sink is not None]

    @property
    def exported(self) -> int:
        return self.gone_exported + sum(sink.exported for sink in self.all())

    def drop_reasons(self) -> collections.Counter:
        reasons = collections.Counter(self.lost)
        for sink in self.all():
            reasons.update(sink.dropped)
        return reasons

    def spool_reasons(self) -> collections.Counter:
        """Spans kept in the spool directory instead of written, by reason."""
        reasons = collections.Counter(self.gone_spooled)
        for sink in self.all():
            reasons.update(sink.spooled)
        return reasons

    def idle(self) -> bool:
        return all(sink.idle() for sink in self.all())

    def wait_fds(self) -> list:
        process = self.process
        return [process.ack_fd] if process is not None and not process.finished else []

    def start_process_now(self, tracking_uri: str, experiment_name: str) -> None:
        """Start the exporter process at once and have it open the store (start-up)."""
        if self.process_tried or self.mlflow_unsafe or not self.settings.export_process:
            return
        self.process_tried = True
        try:
            sink = ProcessSink(self.settings, self.notify)
            if sink.start():
                self.process = sink
                sink.warming = True
                sink.warm(tracking_uri, experiment_name)
        except Exception as exc:
            _log.info("synalinks-obs: cannot start the exporter process (%r)", exc)

    def maybe_start_process(self, queued: int, batch_size: int) -> None:
        """Start the exporter process once spans have kept coming for a while."""
        if self.process_tried or not queued:
            return
        now = time.monotonic()
        if self._records_since is None:
            self._records_since = now
        if now - self._records_since < PROCESS_AFTER and queued < batch_size and not self.mlflow_unsafe:
            return  # (a process forked mid-MLflow-call cannot write itself: start it now)
        self.process_tried = True
        if not self.settings.export_process:
            return
        try:
            sink = ProcessSink(self.settings, self.notify)
            if sink.start():
                self.process = sink
        except Exception as exc:
            _log.info("synalinks-obs: cannot start the exporter process (%r)", exc)

    def poll(self, stopping: bool) -> None:
        process = self.process
        if process is None:
            return
        process.poll()
        if process.finished and not process.said_bye and not stopping:
            self.process_died(process)

    def process_died(self, process) -> None:
        """An exporter process that exited unexpectedly: what it had not finished is
        written from this thread (MLflow upserts spans: nothing twice), as later spans."""
        code = process.process.poll() if process.process is not None else None
        unfinished = process.take_unacked()
        self.lost.update(process.dropped)
        self.gone_exported += process.exported
        self.gone_spooled.update(process.spooled)
        self.process = None
        process.abandon()
        local = self.local_sink()
        for destination, count, payload in unfinished:
            local.writer.add(destination, count, payload)
        self.update_backlog()
        _log.info(
            "synalinks-obs: the exporter process exited (code %s); writing spans from the "
            "app's process (%d it had not written)", code, sum(batch[1] for batch in unfinished),
        )

    def update_backlog(self) -> None:
        process, local = self.process, self.local
        self.backlog = (process.unacked_spans if process is not None else 0) + (
            local.writer.pending if local is not None else 0
        )

    def choose(self, urgent: bool, deadline: float | None = None):
        """Where spans go now: the exporter process once it is ready; until then (if
        they cannot wait) or without it, the Writer in this thread; None: wait.
        ``deadline``: the end of the exit flush, when it is running. (A process forked
        mid-MLflow-call waits for its own exporter process.)"""
        process = self.process
        if process is not None and not process.finished:
            if process.ready:
                return process
            if not urgent or self.mlflow_unsafe or self._wait_for_start(process, deadline):
                return None  # starting: keep the records a little longer
        elif process is None and not self.process_tried and (not urgent or self.mlflow_unsafe):
            if self.settings.export_process:
                return None  # it may start soon (see maybe_start_process)
        return self.local_sink()

    def _wait_for_start(self, process, deadline) -> bool:
        """Whether spans that cannot wait should still wait for a process started at
        start-up (it may be creating the store, which a local Writer would wait for
        too): for ``START_GRACE`` seconds from its start, and at exit for the first half
        of the flush budget at most; then the thread writes them itself."""
        if not process.warming or process.starting_for() >= START_GRACE:
            return False
        return deadline is None or time.monotonic() < deadline - self.settings.flush_timeout / 2

    def local_sink(self) -> LocalSink:
        if self.local is None:
            self.local = LocalSink(self.settings.max_queue_spans, self.notify, self.settings.spool_dir)
        return self.local

    def send(self, sink, destination, wires):
        """Send to ``sink``; if the process fails, count it dead and write locally. The
        sink to use next."""
        try:
            sink.send(destination, wires)
            return sink
        except Exception:
            if sink is self.local:
                raise
            self.process_died(sink)
            local = self.local_sink()
            local.send(destination, wires)
            return local

    def pump(self):
        return self.local.pump() if self.local is not None else None

    def close(self, deadline, report) -> None:
        """At exit: EOF to the exporter process, write what this thread holds, then
        collect the process's last report (all before the deadline)."""
        process, local = self.process, self.local
        if process is not None:
            process.close(deadline)
        if local is not None:
            try:
                local.close(deadline)
            except Exception as exc:
                report(exc)
        if process is not None:
            process.wait(deadline)
            if process.finished and not process.said_bye and process.unacked:
                # It died during the exit flush: write what it left from here, in budget.
                self.process_died(process)
                try:
                    self.local.close(deadline)
                except Exception as exc:
                    report(exc)

    def keep_records(self, queue, reason: str) -> None:
        """At exit, with the exporter thread stuck in a write: the records still queued go
        to the spool (when there is one) instead of being lost."""
        if not self.settings.spool_dir:
            return
        from synalinks_obs.export.wire import record_to_wire
        from synalinks_obs.masking import policy_for

        policy = policy_for(self.settings)
        groups: dict = {}
        while True:
            try:
                record = queue.popleft()  # the stuck thread may take some too: each once
            except IndexError:
                break
            try:
                groups.setdefault(record.trace.destination, []).append(
                    record_to_wire(record, self.settings, policy)
                )
            except Exception:
                self.lost["internal error converting a span"] += 1
        spool = Spool(self.settings.spool_dir)
        for destination, wires in groups.items():
            try:
                spool.keep(destination.tracking_uri, [(destination, len(wires), wires)])
                self.gone_spooled[reason] += len(wires)
            except Exception as exc:
                self.lost[f"{reason}; cannot keep them in {spool.directory} ({exc!r})"] += len(wires)

    def abandon_local(self) -> int:
        """The local Writer's backlog, given up (exit budget spent); how many spans."""
        return self.local.abandon() if self.local is not None else 0

    def stuck_reason(self) -> str:
        """What held the exit flush up past its budget ('' when not known)."""
        if self.local is not None and self.local.writer.writing is not None:
            return self.local.writer.stuck_reason()
        process = self.process
        if process is not None and not process.said_bye and process.unacked:
            return " (the exporter process had not finished writing)"
        return ""

    def abandon_process(self) -> int:
        """Stop an exporter process that did not say bye; how many spans it held."""
        process = self.process
        if process is None or process.said_bye:
            return 0
        if self.settings.spool_dir:  # the batches it had not finished go to the spool
            process.process_kill_quietly()
            reason = f"exit flush timed out after {self.settings.flush_timeout:g} s"
            spool = Spool(self.settings.spool_dir)
            for destination, count, payload in process.take_unacked():
                try:
                    spool.keep(destination.tracking_uri, [(destination, count, payload)])
                    self.gone_spooled[reason] += count
                except Exception as exc:
                    self.lost[f"{reason}; cannot keep them in {spool.directory} ({exc!r})"] += count
        return process.abandon()

"""Writes span batches to their tracking stores, surviving stores that fail.

``Writer`` owns everything that talks to the tracking store for spans: resolving
(creating) experiments, building MLflow spans from ``Wire`` tuples
(``store.mlflow_spans``), writing them with MLflow's store-level ``log_spans`` in batches
(many traces per call; a server older than MLflow 3.10 is refused in one line:
``store.server_support``), linking traces to training runs, and surviving a store that is
down, failing or slow:

- a backlog capped at ``max_spans`` (what does not fit is dropped and counted);
- for servers a cheap ``GET /health`` probe (``store.health``, short timeout) before
  writing after a failure, then our own backoff (0.5 s doubling up to 5 s) instead of
  MLflow's long retry policy; a batch that still fails when the store looks healthy is
  retried a few times, then dropped (counted, with the reason);
- a store that refuses our credentials (401, or 403 for ``PERMISSION_PATIENCE`` seconds:
  ``store.store_health``) is not asked again for ``REJECTED_RETRY_AFTER`` seconds: its
  spans are dropped with the reason (one line naming the variables to fix), never
  retried in a loop;
- at the end (``drain``) what cannot be written before the deadline is dropped with the
  reason, and a store already known to be down is not waited for; with a spool
  (``store.spool``, ``SYNALINKS_OBS_SPOOL_DIR``) it is kept there instead, and the spool
  of a store is taken over after the first successful write to it.

It runs in the exporter process (``store.worker``), or in the app's exporter thread
when that process cannot be used.
"""

from __future__ import annotations

import collections
import contextlib
import time

from synalinks_obs import reporting, uris
from synalinks_obs.compat import mlflow as mlflow_compat
from synalinks_obs.store.chunks import Chunk, split_chunk
from synalinks_obs.store.experiments import resolve_experiment
from synalinks_obs.store.health import PROBE_TIMEOUT, StoreUnavailable, probe, rejection
from synalinks_obs.store.mlflow_spans import needs_trace_info, root_trace_info_of
from synalinks_obs.store.otlp import OtlpRoute
from synalinks_obs.store.schema_lock import guard_schema_setup
from synalinks_obs.store.server_support import check_server_version
from synalinks_obs.store.store_health import StoreHealth

BATCH_SPANS = 5_000  # most spans per log_spans call
DRAIN_MARGIN = 1.5  # at exit, a batch is started only if 1.5x its expected time is left
MAX_ATTEMPTS = 4  # writes of one batch to a store that looks healthy
SCHEMA_LOGGER = "mlflow.store.db.utils"  # "Creating initial MLflow database tables..."


@contextlib.contextmanager
def _quiet_schema_setup():
    """MLflow logs two INFO lines on stderr when it creates a new database's tables: not
    the app's output when it is our writer that opens the store (the app's own MLflow
    calls, outside this block, log as usual)."""
    import logging

    logger = logging.getLogger(SCHEMA_LOGGER)
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


class Writer(StoreHealth):
    """Writes span tuples to their destinations; see the module docstring."""

    def __init__(self, max_spans: int, notify=None, spool=None):
        self.max_spans = max_spans
        self.spool = spool  # store.spool.Spool, or None: what cannot be written is dropped
        self.spooled: collections.Counter = collections.Counter()  # reason -> spans kept
        self._adopted: set = set()  # stores whose spool files this writer took over
        self.out_of_time = False  # the last pump left batches that would end past its deadline
        self._chunks: collections.deque[Chunk] = collections.deque()
        self.pending = 0  # spans in the backlog
        self.exported = 0
        self.dropped: collections.Counter = collections.Counter()
        self._stores: dict = {}
        self._experiment_ids: dict = {}
        self._clients: dict = {}
        self._versions_checked: set = set()  # tracking URIs whose server version passed
        self._notify = notify or (lambda *message: None)
        self.otlp = OtlpRoute(self._notify)  # MLflow's OTLP settings (store.otlp)
        # Tags of the batches done with since the caller last took them (written, or
        # dropped and counted): the exporter process reports them, so the app knows
        # which batches it no longer needs to keep for a resend.
        self.finished_tags: list = []
        self.warmed = False  # warm_up() has run (the store opened, or found failing)
        self.writing = None  # (tracking URI, monotonic start) of the write in progress

    @property
    def held(self) -> int:
        """Spans waiting for a store that is failing (retried in the background)."""
        held = 0
        for chunk in self._chunks:
            state = self._stores.get(chunk.destination.tracking_uri)
            if state is not None and state.failures and not state.healthy:
                held += chunk.count
        return held

    # -- intake -------------------------------------------------------------------------
    def add(self, destination, count: int, payload, tag=None) -> None:
        state = self._stores.get(destination.tracking_uri)
        if state is not None and time.monotonic() < state.rejected_until:
            self._drop(count, state.reason)
            if tag is not None:
                self.finished_tags.append(tag)
            return
        if self.pending + count > self.max_spans:
            self.refuse(destination, count, tag)
            return
        self._chunks.append(Chunk(destination, count, payload, tag))
        self.pending += count

    def refuse(self, destination, count: int, tag=None) -> None:
        """A batch that does not fit in ``max_spans``: dropped and counted."""
        self._drop(count, self._full_reason(destination))
        if tag is not None:
            self.finished_tags.append(tag)

    def _full_reason(self, destination) -> str:
        state = self._stores.get(destination.tracking_uri)
        if state is not None and state.reason:
            return f"{state.reason}; buffer full ({self.max_spans} spans)"
        return f"the tracking store is slower than the app; buffer full ({self.max_spans} spans)"

    def _drop(self, count: int, reason: str) -> None:
        if count:
            self.dropped[reason] += count

    # -- experiments --------------------------------------------------------------------
    def experiment_id(self, destination) -> str:
        if destination.experiment_id:
            return destination.experiment_id
        key = (destination.tracking_uri, destination.experiment_name)
        found = self._experiment_ids.get(key)
        if found is None:
            self._check_store(destination.tracking_uri)
            with _quiet_schema_setup():  # the first call opens (creates) the store
                found = resolve_experiment(*key)
            self._experiment_ids[key] = found
            self._notify("experiment", key, found)
        return found

    def warm_up(self, tracking_uri, experiment_name) -> None:
        """Open the store and resolve the experiment before the first span arrives (the
        exporter process at start-up), so that the app's first and last writes do not
        pay for it. A store that fails here counts as failing (backoff, one reason)."""
        key = (tracking_uri, experiment_name)
        try:
            self._check_store(tracking_uri)
            if key not in self._experiment_ids:
                with _quiet_schema_setup():
                    found = resolve_experiment(*key)
                self._experiment_ids[key] = found
                self._notify("experiment", key, found)
            self._client(tracking_uri)
        except Exception as exc:
            refused = rejection(tracking_uri, exc) if uris.is_http(tracking_uri) else None
            if refused is not None:  # a refused password: said once, not retried for a while
                self._rejected(tracking_uri, refused, [], 0)
            else:
                self._failed(tracking_uri, exc)
            return
        finally:
            self.warmed = True
        self._adopt_spool(tracking_uri)

    def _adopt_spool(self, uri) -> None:
        """Take over the spool files of a store that just worked (once per store)."""
        if self.spool is None or uri in self._adopted:
            return
        self._adopted.add(uri)
        try:
            batches = self.spool.claim(uri)
        except Exception as exc:
            self._notify("warning", f"cannot read the spool {self.spool.directory} ({exc!r})")
            return
        self.take_spooled(batches)

    def take_spooled(self, batches) -> None:
        """Add batches claimed from the spool (``Spool.claim``) to the backlog."""
        for destination, count, payload, claim in batches:
            self._adopted.add(destination.tracking_uri)
            self._chunks.append(Chunk(destination, count, payload, claim=claim))
            self.pending += count

    # -- writing ------------------------------------------------------------------------
    def _client(self, tracking_uri):
        client = self._clients.get(tracking_uri)
        if client is None:
            guard_schema_setup()
            with _quiet_schema_setup():
                client = mlflow_compat.tracing_client(tracking_uri)
            self._clients[tracking_uri] = client
        return client

    def pump(self, deadline: float | None = None, stop=None) -> float | None:
        """Write what can be written now. Returns None when the backlog is empty, else
        the seconds until a store that failed may be tried again. With ``deadline`` (the
        exit), a batch that would not be written before it, at the store's recent pace,
        is not started (``out_of_time``); ``stop()`` true: return before the next batch."""
        now = time.monotonic()
        blocked: list[Chunk] = []
        wait = None
        self.out_of_time = False
        while self._chunks:
            if stop is not None and stop():
                break
            first = self._chunks.popleft()
            destination = first.destination
            state = self._state(destination.tracking_uri)
            if now < state.rejected_until:
                self._done_with([first], first.count, state.reason)
                continue
            if now < state.next_try:
                blocked.append(first)
                delay = state.next_try - now
                wait = delay if wait is None else min(wait, delay)
                continue
            limit = BATCH_SPANS
            pace = state.span_seconds * DRAIN_MARGIN
            if deadline is not None and pace:
                limit = min(limit, int((deadline - now) / pace))
                if limit < 1:
                    blocked.append(first)
                    self.out_of_time = True
                    continue
                if first.count > limit:
                    first = split_chunk(self._chunks, first, limit)
            batch = [first]
            count = first.count
            while self._chunks and count < limit:
                nxt = self._chunks[0]
                if nxt.destination != destination or count + nxt.count > limit:
                    break
                batch.append(self._chunks.popleft())
                count += nxt.count
            if not self._write(destination, batch, count):
                blocked.extend(batch)
                wait = 0.0 if wait is None else wait
            now = time.monotonic()
        self._chunks.extend(blocked)
        if not self._chunks:
            return None
        return max(0.0, wait or 0.0)

    def _write(self, destination, batch, count) -> bool:
        """True when the batch is done (written or dropped for good)."""
        uri = destination.tracking_uri
        forwarder = self.otlp.forwarder()
        if forwarder is not None and not forwarder.dual:  # MLflow's settings: OTLP only
            self.otlp.forward(forwarder, batch)
            self.pending -= count
            self.exported += count
            self._settle(batch)
            return True
        try:
            self._check_store(uri)
            experiment_id = self.experiment_id(destination)
            client = self._client(uri)  # (opening the store is not the write's pace)
            if uri not in self._versions_checked:
                check_server_version(uri, client)
                self._versions_checked.add(uri)
            started = time.monotonic()
            wires, otel_spans = self.otlp.forward(forwarder, batch)
            from mlflow.entities import Span

            self.writing = (uri, time.monotonic())
            try:
                client.log_spans(experiment_id, [Span(span) for span in otel_spans])
            finally:
                self.writing = None
            state = self._state(uri)
            pace = (time.monotonic() - started) / max(1, count)
            state.span_seconds = pace if not state.span_seconds else 0.5 * (state.span_seconds + pace)
        except Exception as exc:
            refused = rejection(uri, exc) if uris.is_http(uri) else None
            if refused is not None:
                return self._rejected(uri, refused, batch, count)
            was_healthy = self._failed(uri, exc)
            if isinstance(exc, StoreUnavailable) or not was_healthy and uris.is_http(uri):
                return False  # the store is down: keep the batch for later
            for chunk in batch:
                chunk.attempts += 1
            if max(chunk.attempts for chunk in batch) >= MAX_ATTEMPTS:
                self._done_with(batch, count, f"{type(exc).__name__}: {reporting.first_line(exc)}")
                return True
            return False
        self._ok(uri)
        # before the batch counts as written (flush): run links, trace metadata the app set
        self._finish_traces(destination, experiment_id, wires)
        self.pending -= count
        self.exported += count
        self._settle(batch)
        return True

    def _done_with(self, batch, count, reason, keep: bool = False) -> None:
        """Give up on a batch: kept in the spool when ``keep`` and there is one, else
        dropped (counted with ``reason``)."""
        self.pending -= count
        if keep and self.spool is not None and count:
            try:
                self.spool.keep(
                    batch[0].destination.tracking_uri,
                    [(chunk.destination, chunk.count, chunk.payload) for chunk in batch],
                )
                self.spooled[reason] += count
            except Exception as exc:
                self._drop(count, f"{reason}; cannot keep them in {self.spool.directory} ({exc!r})")
        else:
            self._drop(count, reason)
        self._settle(batch)

    def _settle(self, batch) -> None:
        for chunk in batch:
            tag = chunk.settled()
            if tag is not None:
                self.finished_tags.append(tag)

    def _finish_traces(self, destination, experiment_id, wires) -> None:
        """Give finished roots what ``log_spans`` cannot write: a run's traces MLflow's
        source-run metadata (see ``synalinks_obs.training``), and the metadata, client
        request id, previews, state or assessments the app set on a trace.

        The finished trace info (same times, state and name as ``log_spans`` derived from
        the spans) is sent again through the store's ``start_trace``, which merges it
        into the existing trace.
        """
        run_id = destination.run_id
        client = None
        for wire in wires:
            if not wire.trace_root or (run_id is None and not needs_trace_info(wire)):
                continue
            client = client or self._client(destination.tracking_uri)
            try:
                client.start_trace(root_trace_info_of(wire, experiment_id, run_id))
            except Exception as exc:
                what = f"link traces to run {run_id}" if run_id is not None else "write trace metadata"
                self._notify(
                    "warning",
                    f"cannot {what} ({type(exc).__name__}: {reporting.first_line(exc)}); "
                    "the spans were written",
                )
                return

    def drain(
        self, deadline: float, wait_for_down_stores: bool = False,
        timeout_reason: str = "exit flush timed out",
    ) -> None:
        """Write the backlog until ``deadline``; spool or drop (and count) what is left.

        A store already known to be down gets one more probe, not the whole budget
        (unless ``wait_for_down_stores``)."""
        if not wait_for_down_stores:
            for uri, state in list(self._stores.items()):
                if time.monotonic() < state.rejected_until:
                    self._drop_destination_uri(uri, state.reason, keep=True)
                elif not state.healthy and state.failures and uris.is_http(uri):
                    try:
                        probe(uri, timeout=min(PROBE_TIMEOUT, max(0.1, deadline - time.monotonic())))
                        state.next_try = 0.0
                    except StoreUnavailable as exc:
                        state.reason = str(exc)
                        self._drop_destination_uri(uri, state.reason, keep=True)
        while self._chunks:
            wait = self.pump(deadline)
            if wait is None or self.out_of_time:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(wait, left))
        left: dict = {}
        while self._chunks:
            chunk = self._chunks.popleft()
            state = self._stores.get(chunk.destination.tracking_uri)
            reason = state.reason if state is not None and state.reason else timeout_reason
            left.setdefault((chunk.destination.tracking_uri, reason), []).append(chunk)
        for (_, reason), chunks in left.items():
            self._done_with(chunks, sum(chunk.count for chunk in chunks), reason, keep=True)

    def stuck_reason(self) -> str:
        """Why a deadline passed while this writer was busy: '' or ' (a write to ...)'."""
        writing = self.writing
        if writing is None:
            return ""
        uri, since = writing
        return f" (a write to {uris.display(uri)} had not returned after {time.monotonic() - since:.0f} s)"

    def _drop_destination_uri(self, uri, reason, keep: bool = False) -> None:
        kept = collections.deque()
        mine = []
        for chunk in self._chunks:
            if chunk.destination.tracking_uri == uri:
                mine.append(chunk)
            else:
                kept.append(chunk)
        self._chunks = kept
        if mine:
            self._done_with(mine, sum(chunk.count for chunk in mine), reason, keep=keep)

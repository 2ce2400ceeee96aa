"""Finished call records -> MLflow spans in the tracking store, off the calling thread.

The calling thread only appends a finished ``CallRecord`` to a bounded queue. One daemon
thread per process wakes every ``export_interval`` seconds (or when a batch is full),
turns the records into ``mlflow.entities.Span`` objects, and writes them with MLflow's
store-level ``log_spans``: many spans of many traces in one call, which creates the trace
rows as needed. Spans therefore stream out during the run.

Guarantees:
- bounded memory: past ``max_queue_spans`` new spans are dropped and counted;
- a store that fails is reported once (what was dropped and why), not once per span;
- at interpreter exit, what is queued is flushed before threads are torn down, bounded
  by ``flush_timeout`` seconds, and anything left is reported;
- after ``fork()`` the child gets a fresh queue and thread (the parent's are not copied).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import sys
import threading
import time
import traceback

from synalinks_obs.payloads import to_json

_logger = logging.getLogger("synalinks_obs")

BATCH_SIZE = 2_000


class Exporter:
    """The process-wide background exporter."""

    def __init__(self, settings):
        self.settings = settings
        self._reset_state()

    def _reset_state(self):
        self._queue: collections.deque = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._busy = 0  # records taken off the queue but not yet written
        self._stopping = False
        self._pid = os.getpid()
        self._experiment_ids: dict[tuple, str] = {}
        self._clients: dict = {}
        self.exported = 0
        self.dropped = 0
        self._drop_reasons: collections.Counter = collections.Counter()
        self._warned: set[str] = set()
        self._prefetch: collections.deque = collections.deque()
        self._soon: collections.deque = collections.deque()  # callables for the thread

    # -- calling thread -------------------------------------------------------------
    def submit(self, record) -> None:
        if self._pid != os.getpid():  # forked child: never reuse the parent's thread
            self._reset_state()
        queue = self._queue
        if len(queue) >= self.settings.max_queue_spans:
            self._drop(1, "queue full (the tracking store is slower than the app)")
            return
        queue.append(record)
        if self._thread is None:
            self._start()
        elif len(queue) >= BATCH_SIZE:
            with self._cond:
                self._cond.notify()

    def known_experiment_id(self, destination) -> str | None:
        """The experiment id of a destination if already resolved (never blocks)."""
        if destination.experiment_id:
            return destination.experiment_id
        return self._experiment_ids.get((destination.tracking_uri, destination.experiment_name))

    def prefetch(self, destination, then=None) -> None:
        """Resolve (create) a destination's experiment in the background, then call
        ``then(experiment_id)`` on the exporter thread if given."""
        if self._thread is None:
            self._start()
        self._prefetch.append((destination, then))
        with self._cond:
            self._cond.notify()

    def call_soon(self, fn) -> None:
        """Run ``fn()`` on the exporter thread at its next wake-up (best effort)."""
        if self._thread is None:
            self._start()
        self._soon.append(fn)
        with self._cond:
            self._cond.notify()

    def _run_soon(self) -> None:
        while self._soon:
            fn = self._soon.popleft()
            try:
                fn()
            except Exception as exc:
                self._warn_once("soon", f"synalinks-obs: deferred task failed: {exc!r}")

    # -- exporter thread --------------------------------------------------------------
    def _start(self) -> None:
        with self._cond:
            if self._thread is not None:
                return
            thread = threading.Thread(target=self._run, name="synalinks-obs-exporter", daemon=True)
            self._thread = thread
        thread.start()

    def _run(self) -> None:
        interval = self.settings.export_interval
        while True:
            with self._cond:
                if not (self._queue or self._prefetch or self._soon or self._stopping):
                    self._cond.wait(interval)
                stopping = self._stopping
            try:
                while self._prefetch:
                    destination, then = self._prefetch.popleft()
                    experiment_id = self._experiment_id(destination)
                    if then is not None:
                        then(experiment_id)
                self._export_available()
                self._run_soon()
            except Exception as exc:  # never let the thread die
                self._warn_once("exporter", f"synalinks-obs: exporter error: {exc!r}")
            if stopping and not self._queue:
                return

    def _export_available(self) -> None:
        queue = self._queue
        while queue:
            batch = []
            try:
                while len(batch) < BATCH_SIZE:
                    batch.append(queue.popleft())
            except IndexError:
                pass
            self._busy = len(batch)
            try:
                self._write(batch)
            finally:
                self._busy = 0

    def _write(self, records) -> None:
        groups: dict[tuple, list] = collections.defaultdict(list)
        for record in records:
            destination = record.trace.destination
            groups[destination].append(record)
        for destination, group in groups.items():
            try:
                experiment_id = self._experiment_id(destination)
                spans = [self._to_span(record) for record in group]
                self._client(destination.tracking_uri).log_spans(experiment_id, spans)
                self.exported += len(spans)
            except Exception as exc:
                self._drop(len(group), f"{type(exc).__name__}: {_first_line(exc)}")
                continue
            if destination.run_id is not None:
                self._link_to_run(destination, experiment_id, group)

    def _link_to_run(self, destination, experiment_id, records) -> None:
        """Give each finished root of a run's traces MLflow's source-run metadata.

        ``log_spans`` cannot write trace metadata, so the finished trace info (same
        times, state and name as ``log_spans`` derived from the spans) is sent again with
        ``mlflow.sourceRun`` through the store's ``start_trace``, which merges it into the
        existing trace. ``mlflow.search_traces(run_id=...)`` and the run's Traces tab then
        find the trace (see ``synalinks_obs.training``).
        """
        client = self._client(destination.tracking_uri)
        for record in records:
            if record.parent_span_id is not None or record.trace.foreign:
                continue
            try:
                client.start_trace(root_trace_info(record, experiment_id, destination.run_id))
            except Exception as exc:
                self._warn_once(
                    "run link",
                    f"synalinks-obs: cannot link traces to run {destination.run_id} "
                    f"({type(exc).__name__}: {_first_line(exc)}); the spans were written",
                )

    def _client(self, tracking_uri):
        client = self._clients.get(tracking_uri)
        if client is None:
            from mlflow.tracing.client import TracingClient

            client = self._clients[tracking_uri] = TracingClient(tracking_uri)
        return client

    def _experiment_id(self, destination) -> str:
        if destination.experiment_id:
            return destination.experiment_id
        key = (destination.tracking_uri, destination.experiment_name)
        found = self._experiment_ids.get(key)
        if found is None:
            found = self._experiment_ids[key] = resolve_experiment(*key)
        return found

    # -- conversion -------------------------------------------------------------------
    def _to_span(self, record):
        return record_to_span(record, self.settings)

    # -- accounting -----------------------------------------------------------------
    def _drop(self, count: int, reason: str) -> None:
        self.dropped += count
        self._drop_reasons[reason] += count
        self._warn_once(
            reason,
            f"synalinks-obs: dropping spans: {reason}; the app is not affected "
            "(a total is reported at exit)",
        )

    def _warn_once(self, key: str, message: str) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        _logger.warning(message)

    # -- flushing ---------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued span is written (at most ``timeout`` seconds)."""
        if self._pid != os.getpid() or self._thread is None:
            return not self._queue
        deadline = time.monotonic() + (self.settings.flush_timeout if timeout is None else timeout)
        with self._cond:
            self._cond.notify()
        while self._queue or self._busy or self._soon:
            if time.monotonic() >= deadline or not self._thread.is_alive():
                return False
            time.sleep(0.01)
        return True

    def shutdown(self, timeout: float | None = None) -> None:
        """Flush (bounded), stop the thread, and report what could not be written."""
        flushed = self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if not flushed:
            left = len(self._queue) + self._busy
            self._queue.clear()
            if left:
                self._drop(left, f"exit flush timed out after {self.settings.flush_timeout:g}s")
        if self.dropped:
            reasons = "; ".join(f"{n} {why}" for why, n in self._drop_reasons.items())
            print(
                f"synalinks-obs: {self.dropped} span(s) were not written to MLflow ({reasons})",
                file=sys.stderr,
            )


_shared: Exporter | None = None


def shared_exporter(settings) -> Exporter:
    """The process-wide exporter, configured with the settings now in force."""
    global _shared
    if _shared is None:
        _shared = Exporter(settings)
    else:
        _shared.settings = settings
    return _shared


def current_exporter() -> Exporter | None:
    return _shared


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


def resolve_experiment(tracking_uri, experiment_name) -> str:
    """Id of the named experiment in the store, created when missing (race-safe)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    try:
        return client.create_experiment(experiment_name)
    except MlflowException:  # another process created it first
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            raise
        return experiment.experiment_id


# -- record -> MLflow span ------------------------------------------------------------

_RESOURCE = None


def _resource():
    global _RESOURCE
    if _RESOURCE is None:
        from opentelemetry.sdk.resources import Resource

        _RESOURCE = Resource({"service.name": "synalinks-obs"})
    return _RESOURCE


def _uuid(value: int) -> str:
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_USAGE_KEYS = ("input_tokens", "output_tokens", "total_tokens")


def record_to_span(record, settings):
    """Build the immutable MLflow span of a finished record (exporter thread)."""
    from mlflow.entities import Span
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    trace = record.trace
    flags = TraceFlags(TraceFlags.SAMPLED)
    context = SpanContext(trace.otel_trace_id, record.span_id, False, flags)
    parent = (
        SpanContext(trace.otel_trace_id, record.parent_span_id, False, flags)
        if record.parent_span_id is not None
        else None
    )
    error = record.error
    usage = record.usage or {}
    lm_error = usage.get("error") if isinstance(usage, dict) else None
    success = error is None and not lm_error
    duration = (record.end_ns - record.start_ns) / 1e9
    dumps = json.dumps
    attributes = {
        "mlflow.traceRequestId": dumps(trace.trace_id),
        "mlflow.spanType": dumps(record.span_type),
        "synalinks.call_id": dumps(_uuid(record.call_id)),
        "synalinks.parent_call_id": dumps(
            _uuid(record.parent_call_id) if record.parent_call_id is not None else ""
        ),
        "synalinks.module": dumps(record.module_class),
        "synalinks.module_name": dumps(record.module_name),
        "synalinks.module_description": dumps(record.description),
        "synalinks.is_symbolic": dumps(bool(record.symbolic)),
        "synalinks.duration": dumps(duration),
        "synalinks.success": dumps(success),
        "synalinks.cost": dumps(float(record.cost)),
    }
    fragments = settings.redact_key_fragments
    max_chars = settings.max_payload_chars
    if settings.capture_payloads:
        inputs = {"data": record.inputs}
        if record.kwargs:
            inputs["kwargs"] = record.kwargs
        outputs = None if error is not None else {"data": record.outputs}
        if record.span_type == "CHAT_MODEL" and not record.symbolic:
            messages = _chat_messages(record.inputs)
            if messages is not None:
                inputs = {"messages": messages, **inputs}
            if outputs is not None and record.outputs is not None and not lm_error:
                content = record.outputs
                message = (
                    content
                    if isinstance(content, dict) and "role" in content
                    else {"role": "assistant", "content": dumps(content, default=str)}
                )
                outputs = {"choices": [{"index": 0, "message": message}], **outputs}
        attributes["mlflow.spanInputs"] = to_json(inputs, max_chars, fragments)
        if outputs is not None:
            attributes["mlflow.spanOutputs"] = to_json(outputs, max_chars, fragments)
    if record.span_type == "CHAT_MODEL":
        model = record.model or ""
        attributes["mlflow.llm.model"] = dumps(model)
        attributes["mlflow.llm.provider"] = dumps(model.split("/")[0] if "/" in model else "")
        attributes["mlflow.message.format"] = dumps("openai")
        if "input_tokens" in usage:
            attributes["mlflow.chat.tokenUsage"] = dumps(
                {key: int(usage.get(key) or 0) for key in _USAGE_KEYS}
            )
        if isinstance(usage.get("cost"), (int, float)):
            attributes["mlflow.llm.cost"] = dumps({"total_cost": float(usage["cost"])})
    if parent is None and not trace.foreign:
        attributes["mlflow.traceTag.mlflow.traceName"] = dumps(record.name)
    events = []
    status = Status(StatusCode.OK)
    if error is not None or lm_error:
        if error is not None:
            exc_type = type(error).__name__
            message = _safe_str(error)
            stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        else:
            exc_type, message, stack = "RuntimeError", str(lm_error), ""
        event_attributes = {"exception.type": exc_type, "exception.message": message}
        if stack:
            event_attributes["exception.stacktrace"] = stack[-8000:]
        events.append(Event("exception", event_attributes, timestamp=record.end_ns))
        status = Status(StatusCode.ERROR, f"{exc_type}: {message}"[:1000])
    otel_span = ReadableSpan(
        name=record.name,
        context=context,
        parent=parent,
        resource=_resource(),
        attributes=attributes,
        events=events,
        kind=SpanKind.INTERNAL,
        status=status,
        start_time=record.start_ns,
        end_time=record.end_ns,
    )
    return Span(otel_span)


def root_trace_info(record, experiment_id, run_id):
    """The finished ``TraceInfo`` of a root record, with ``mlflow.sourceRun`` = ``run_id``."""
    from mlflow.entities.trace_info import TraceInfo
    from mlflow.entities.trace_location import TraceLocation
    from mlflow.entities.trace_state import TraceState
    from mlflow.tracing.constant import TraceMetadataKey, TraceTagKey

    usage = record.usage if isinstance(record.usage, dict) else {}
    failed = record.error is not None or bool(usage.get("error"))
    return TraceInfo(
        trace_id=record.trace.trace_id,
        trace_location=TraceLocation.from_experiment_id(experiment_id),
        request_time=record.start_ns // 1_000_000,
        execution_duration=(record.end_ns - record.start_ns) // 1_000_000,
        state=TraceState.ERROR if failed else TraceState.OK,
        trace_metadata={TraceMetadataKey.SOURCE_RUN: run_id},
        tags={TraceTagKey.TRACE_NAME: record.name},
    )


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

"""The tracer in force while tracing is on: settings, destinations, trace creation.

``Tracer`` is what the patched ``Module.__call__`` talks to. It decides where a new trace
goes (the enabled destination, or a per-context override such as a training run), samples
whole traces, joins a user's MLflow trace when a call runs inside one, and hands finished
records to the exporter. It also registers our root traces with MLflow's in-memory trace
manager, so that spans a user opens with ``mlflow.start_span`` inside a module call are
accepted by MLflow as children of ours.
"""

from __future__ import annotations

import logging
import sys
import time

from synalinks_obs import _writer, spans
from synalinks_obs.export import shared_exporter
from synalinks_obs.payloads import capture_args
from synalinks_obs.spans import IDS, Destination, TraceRecord

_logger = logging.getLogger("synalinks_obs")

# Sampled traces whose root call is running: OpenTelemetry trace id -> (trace, tracer).
_LIVE: dict = {}


def _install_lazy_registration(manager_class) -> None:
    """Make MLflow's trace manager register our live traces when it looks them up.

    MLflow's span processor accepts a span started inside one of our calls (a user's
    ``mlflow.start_span`` / ``@mlflow.trace``) only if it finds the span's trace in its
    in-memory manager, through ``get_mlflow_trace_id_from_otel_id``. Instead of
    registering every trace up front, that lookup registers ours the first time it
    misses. Patched once at class level; the original is kept in ``__wrapped__``.
    """
    original = getattr(manager_class, "get_mlflow_trace_id_from_otel_id", None)
    if original is None or getattr(original, "_synalinks_obs", False):
        return

    def get_mlflow_trace_id_from_otel_id(self, otel_trace_id):
        found = original(self, otel_trace_id)
        if found is None:
            live = _LIVE.get(otel_trace_id)
            if live is not None and not live[0].registered:
                trace, tracer = live
                found = tracer._register_with_mlflow(trace, self)
        return found

    get_mlflow_trace_id_from_otel_id._synalinks_obs = True
    get_mlflow_trace_id_from_otel_id.__wrapped__ = original
    manager_class.get_mlflow_trace_id_from_otel_id = get_mlflow_trace_id_from_otel_id


class Tracer:
    def __init__(self, settings, tracking_uri: str):
        self.settings = settings
        self.capture_payloads = settings.capture_payloads
        self.sample_rate = settings.sample_rate
        self.destination = Destination(tracking_uri, settings.experiment_name)
        self.exporter = shared_exporter(settings)
        # MLflow code in this process (the app's own included) creates a new database
        # store's schema one process at a time, as our exporter process does.
        _writer.guard_schema_setup()
        self._usage_getters: dict[type, object] = {}
        self._reported: set[str] = set()
        from mlflow.tracing.trace_manager import InMemoryTraceManager

        self._trace_manager_class = InMemoryTraceManager
        _install_lazy_registration(InMemoryTraceManager)
        spans.configure_context()

    # -- traces -----------------------------------------------------------------------
    def new_trace(self, args=(), destination=None) -> TraceRecord:
        """A new trace; ``destination`` (a Monitor hook's) wins over every other."""
        if destination is None:
            destination = spans.DESTINATION_OVERRIDE.get() or spans.run_destination_fallback()
            if destination is None:
                destination = self.destination
            elif destination.run_id is not None and args and capture_args(args)[1]:
                # Program building (symbolic calls) stays in the tracing experiment, even
                # while a training run is active.
                destination = self.destination
        rng = IDS.rng
        sampled = self.sample_rate >= 1.0 or rng.random() < self.sample_rate
        trace = TraceRecord(rng.getrandbits(128) or 1, destination, sampled)
        if sampled:
            _LIVE[trace.otel_trace_id] = (trace, self)  # registered with MLflow on demand
        return trace

    def _register_with_mlflow(self, trace: TraceRecord, manager=None) -> str | None:
        """Register a live trace in MLflow's in-memory trace manager; its MLflow id.

        Only done when MLflow looks the trace up, i.e. when a user's MLflow span starts
        inside one of our calls (see ``_install_lazy_registration``): building MLflow's
        trace info for every trace would cost the calling thread ~80 us per trace.
        """
        try:
            # The user's MLflow call needs it now; MLflow itself would look it up here.
            experiment_id = self.exporter.experiment_id_now(trace.destination)
        except Exception:  # the store cannot tell (the exporter said why, once)
            return None
        try:
            from mlflow.entities.trace_info import TraceInfo
            from mlflow.entities.trace_location import TraceLocation
            from mlflow.entities.trace_state import TraceState

            info = TraceInfo(
                trace_id=trace.trace_id,
                trace_location=TraceLocation.from_experiment_id(experiment_id),
                request_time=time.time_ns() // 1_000_000,
                state=TraceState.IN_PROGRESS,
                trace_metadata={},
                tags={},
            )
            if manager is None:
                manager = self._trace_manager_class.get_instance()
            trace.registered = True
            manager.register_trace(trace.otel_trace_id, info)
            return trace.trace_id
        except Exception as exc:
            trace.registered = False
            self.internal_error("register", exc)
            return None

    def join_foreign_trace(self, parent_ctx) -> TraceRecord | None:
        """The trace of a user's MLflow span our call runs in, or None if not MLflow's."""
        manager = self._trace_manager_class.get_instance()
        trace_id = manager.get_mlflow_trace_id_from_otel_id(parent_ctx.trace_id)
        if trace_id is None:
            return None
        with manager.get_trace(trace_id) as mlflow_trace:
            experiment_id = mlflow_trace.info.experiment_id if mlflow_trace is not None else None
        if experiment_id is None:
            return None
        import mlflow

        destination = Destination(mlflow.get_tracking_uri(), self.destination.experiment_name, experiment_id)
        return TraceRecord(parent_ctx.trace_id, destination, True, foreign=True, trace_id=trace_id)

    # -- calls ------------------------------------------------------------------------
    def usage_getter(self, cls):
        """``current_call_usage`` of the LM family ``cls`` belongs to (or None)."""
        try:
            return self._usage_getters[cls]
        except KeyError:
            pass
        getter = None
        for klass in cls.__mro__:
            if klass.__name__ in ("LanguageModel", "DecisionModel", "EmbeddingModel") and (
                klass.__module__.startswith("synalinks.")
            ):
                getter = getattr(sys.modules.get(klass.__module__), "current_call_usage", None)
                break
        self._usage_getters[cls] = getter
        return getter

    def end(self, record, outputs=None, error=None, usage=None) -> None:
        spans.finish(record, outputs, error, usage, self.capture_payloads)
        trace = record.trace
        if record.parent_span_id is None:  # the trace's root
            _LIVE.pop(trace.otel_trace_id, None)
            if trace.registered:
                trace.registered = False
                try:
                    self._unregister(trace)
                except Exception as exc:
                    self.internal_error("unregister", exc)
        self.exporter.submit(record)

    # MLflow exports the spans a user opened inside our trace from its own batch thread,
    # and that export needs the trace registered: such a trace is dropped from MLflow's
    # registry by our exporter thread, right after it has flushed MLflow's processors.
    # (While registered, MLflow's client would read the trace info from memory.)
    def _unregister(self, trace: TraceRecord) -> None:
        manager = self._trace_manager_class.get_instance()
        with manager.get_trace(trace.trace_id) as mlflow_trace:
            has_mlflow_spans = mlflow_trace is not None and bool(mlflow_trace.span_dict)
        if not has_mlflow_spans:
            manager.pop_trace(trace.otel_trace_id)
            return

        def flush_then_pop():
            from mlflow.tracing.processor.base_mlflow import flush_all_batch_processors

            flush_all_batch_processors(timeout_millis=self.settings.flush_timeout * 1000)
            manager.pop_trace(trace.otel_trace_id)

        self.exporter.call_soon(flush_then_pop)

    # -- our own failures -------------------------------------------------------------
    def internal_error(self, where: str, exc: BaseException) -> None:
        """Log an error of synalinks-obs itself once per place; the app goes on."""
        if where in self._reported:
            return
        self._reported.add(where)
        _logger.warning(
            "synalinks-obs: internal error in %s (%s: %s); the app is not affected",
            where, type(exc).__name__, exc, exc_info=_logger.isEnabledFor(logging.DEBUG),
        )

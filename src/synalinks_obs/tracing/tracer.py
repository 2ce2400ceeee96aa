"""The tracer a traced call talks to: destinations, sampling, joined traces, hand-over.

``Tracer`` decides where a new trace goes (its destination, or a per-context override
such as a training run; program building to the ``-build`` companion experiment) and
what kind of trace it is (a trace tag: call, build, training, evaluation), samples whole
traces, joins a user's MLflow trace when a call runs inside one, registers our live traces with MLflow's in-memory trace manager when
MLflow asks (so spans a user opens with ``mlflow.start_span`` inside a module call are
accepted as children of ours), and hands finished records to the exporter. A training
run's observer (``RUNTIME.run_observers``, see ``training.feedback``) hears when a trace
of its run starts (the root call's arguments) and ends (its outputs, error and cost).
"""

from __future__ import annotations

import time

from synalinks_obs import reporting
from synalinks_obs.compat import mlflow as mlflow_compat
from synalinks_obs.compat import synalinks as synalinks_compat
from synalinks_obs.runtime import RUNTIME
from synalinks_obs.settings import BUILD_SUFFIX
from synalinks_obs.tracing import context
from synalinks_obs.tracing.capture import is_symbolic_call
from synalinks_obs.tracing.records import IDS, Destination, TraceRecord, finish


def build_destination(destination: Destination) -> Destination:
    """The companion of a destination that receives its program-building traces:
    same store, experiment ``<name>-build``."""
    return destination._replace(
        experiment_name=destination.experiment_name + BUILD_SUFFIX, trace_kind="build"
    )


class Tracer:
    def __init__(self, settings, tracking_uri: str, exporter):
        self.settings = settings
        self.capture_payloads = settings.capture_payloads
        self.sample_rate = settings.sample_rate
        self.symbolic_traces = settings.symbolic_traces
        self.destination = Destination(tracking_uri, settings.experiment_name)
        self.exporter = exporter
        self._usage_getters: dict[type, object] = {}
        self._trace_manager_class = mlflow_compat.trace_manager_class()
        context.configure()

    # -- traces -----------------------------------------------------------------------
    def new_trace(self, args=(), destination=None) -> TraceRecord:
        """A new trace; ``destination`` (a Monitor hook's) wins over every other.

        Program building (a root call on symbolic data models) is a ``build`` trace: it
        stays on the tracing side even while a training run is active, and goes to the
        ``-build`` companion of its experiment, beside it, or nowhere
        (``settings.symbolic_traces``).
        """
        symbolic = bool(args) and is_symbolic_call(args)
        if destination is None:
            destination = context.run_destination()
            if destination is None or (destination.run_id is not None and symbolic):
                destination = self.destination
        origin = destination
        kind = destination.trace_kind
        rng = IDS.rng
        sampled = self.sample_rate >= 1.0 or rng.random() < self.sample_rate
        if symbolic:
            kind = "build"
            mode = self.symbolic_traces
            if mode == "off":
                sampled = False
            elif mode == "build" and destination.experiment_id is None:
                destination = build_destination(destination)
        trace = TraceRecord(
            rng.getrandbits(128) or 1, destination, sampled, self, kind=kind, origin=origin
        )
        if sampled:
            RUNTIME.live_traces[trace.otel_trace_id] = (trace, self)  # see register_with_mlflow
            if destination.run_id is not None and not symbolic:
                observer = RUNTIME.run_observers.get(destination.run_id)
                if observer is not None:
                    observer.trace_started(trace, args)
        return trace

    def register_with_mlflow(self, trace: TraceRecord, manager=None) -> str | None:
        """Register a live trace in MLflow's in-memory trace manager; its MLflow id.

        Only done when MLflow looks the trace up, i.e. when a user's MLflow span starts
        inside one of our calls (``patching.mlflow_hooks``): building MLflow's trace info
        for every trace would cost the calling thread ~80 us per trace.
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
            reporting.internal_error("registering a trace with MLflow", exc)
            return None

    def join_foreign_trace(self, parent_ctx) -> TraceRecord | None:
        """The trace of a user's MLflow span our call runs in, or None if not MLflow's."""
        if self._trace_manager_class is None:
            return None
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
        return TraceRecord(parent_ctx.trace_id, destination, True, self, foreign=True, trace_id=trace_id)

    # -- calls ------------------------------------------------------------------------
    def usage_getter(self, cls):
        """``current_call_usage`` of the LM family ``cls`` belongs to (or None)."""
        try:
            return self._usage_getters[cls]
        except KeyError:
            pass
        getter = synalinks_compat.current_call_usage_of(cls)
        self._usage_getters[cls] = getter
        return getter

    def end(self, record, outputs=None, error=None, usage=None) -> None:
        finish(record, outputs, error, usage, self.capture_payloads)
        trace = record.trace
        if record.parent_span_id is None:  # the trace's root
            RUNTIME.live_traces.pop(trace.otel_trace_id, None)
            run_id = trace.destination.run_id
            if run_id is not None:
                observer = RUNTIME.run_observers.get(run_id)
                if observer is not None:
                    observer.trace_ended(trace, outputs, error, record.cost)
            if trace.registered:
                trace.registered = False
                try:
                    self._unregister(trace)
                except Exception as exc:
                    reporting.internal_error("unregistering a trace from MLflow", exc)
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
        timeout = self.settings.flush_timeout

        def flush_then_pop():
            mlflow_compat.flush_mlflow_span_processors(timeout)
            manager.pop_trace(trace.otel_trace_id)

        self.exporter.call_soon(flush_then_pop)

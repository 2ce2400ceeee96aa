"""The tracer a traced call talks to: destinations, sampling, joined traces, hand-over.

``Tracer`` decides where a new trace goes (its destination, or a per-context override
such as a training run; program building to the ``-build`` companion experiment) and
what kind of trace it is (a trace tag: call, build, training, evaluation), samples whole
traces (``SYNALINKS_OBS_SAMPLE_RATE``, else MLflow's ``MLFLOW_TRACE_SAMPLING_RATIO``),
stamps a new trace with the tags and metadata of the context it starts in
(``synalinks_obs.trace_context``, ``mlflow.tracing.context``), joins a user's MLflow trace
when a call runs inside one, shows our calls to MLflow when MLflow asks
(``tracing.mlflow_view``), and hands finished records to the exporter. A training
run's observer (``RUNTIME.run_observers``, see ``training.feedback``) hears when a trace
of its run starts (the root call's arguments) and ends (its outputs, error and cost).
"""

from __future__ import annotations

from synalinks_obs import reporting
from synalinks_obs.compat import mlflow as mlflow_compat
from synalinks_obs.compat import synalinks as synalinks_compat
from synalinks_obs.runtime import RUNTIME
from synalinks_obs.settings import BUILD_SUFFIX, effective_sample_rate
from synalinks_obs.tracing import context, mlflow_view
from synalinks_obs.tracing.capture import is_symbolic_call
from synalinks_obs.tracing.records import IDS, Destination, TraceRecord, finish

RECENT_ROOTS = 1_000  # MLflow trace ids of finished roots remembered (see RUNTIME.recent_roots)


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
        self.sample_rate = effective_sample_rate(settings)
        self.symbolic_traces = settings.symbolic_traces
        self.destination = Destination(tracking_uri, settings.experiment_name)
        self.exporter = exporter
        self._usage_getters: dict[type, object] = {}
        self._trace_manager_class = mlflow_compat.trace_manager_class()
        self._mlflow_trace_context = mlflow_compat.configured_trace_context()
        # MLflow's OTLP settings send traces to a collector and not to MLflow: a trace
        # shown to MLflow needs no experiment then.
        self.otlp_only = mlflow_compat.otlp_only()
        context.configure()

    def trace_manager(self):
        """MLflow's in-memory trace manager."""
        return self._trace_manager_class.get_instance()

    # -- traces -----------------------------------------------------------------------
    def new_trace(self, args=(), destination=None, sampled=None) -> TraceRecord:
        """A new trace; ``destination`` (a Monitor hook's) wins over every other.

        Program building (a root call on symbolic data models) is a ``build`` trace: it
        stays on the tracing side even while a training run is active, and goes to the
        ``-build`` companion of its experiment, beside it, or nowhere
        (``settings.symbolic_traces``). ``sampled=False``: a trace a sampler upstream
        dropped.
        """
        symbolic = bool(args) and is_symbolic_call(args)
        if destination is None:
            destination = context.run_destination()
            if destination is None or (destination.run_id is not None and symbolic):
                destination = self.destination
        origin = destination
        kind = destination.trace_kind
        rng = IDS.rng
        if sampled is None:
            sampled = self.sample_rate >= 1.0 or rng.random() < self.sample_rate
        stamps = context.STAMPS.get()
        read_mlflow = self._mlflow_trace_context
        if read_mlflow is not None and (configured := read_mlflow()) is not None:
            if configured[2] is False:  # mlflow.tracing.context(enabled=False)
                sampled = False
            if configured[0] or configured[1]:
                stamps = _merged(configured, stamps)
        if symbolic:
            kind = "build"
            mode = self.symbolic_traces
            if mode == "off":
                sampled = False
            elif mode == "build" and destination.experiment_id is None:
                destination = build_destination(destination)
        trace = TraceRecord(
            rng.getrandbits(128) or 1, destination, sampled, self, kind=kind, origin=origin,
            stamps=stamps,
        )
        if sampled:
            RUNTIME.live_traces[trace.otel_trace_id] = (trace, self)  # see mlflow_view.register
            if destination.run_id is not None and not symbolic:
                observer = RUNTIME.run_observers.get(destination.run_id)
                if observer is not None:
                    observer.trace_started(trace, args)
        return trace

    def expose(self, record) -> dict:
        """MLflow's view of a call, made when an MLflow API asks (``tracing.mlflow_view``)."""
        return mlflow_view.expose(record)

    def register_with_mlflow(self, trace: TraceRecord, manager=None) -> str | None:
        """Register a live trace in MLflow's trace manager (``tracing.mlflow_view``)."""
        return mlflow_view.register(self, trace, manager)

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
        if record.shadow is not None:  # MLflow asked about this call
            try:
                mlflow_view.finish_call(record)
            except Exception as exc:
                reporting.internal_error("ending MLflow's view of a call", exc)
        if record.parent_span_id is None:  # the trace's root
            trace = record.trace
            run_id = trace.destination.run_id
            if run_id is not None:
                observer = RUNTIME.run_observers.get(run_id)
                if observer is not None:
                    observer.trace_ended(trace, outputs, error, record.cost)
            self._root_ended(trace)
        self.exporter.submit(record)

    def _root_ended(self, trace: TraceRecord) -> None:
        RUNTIME.live_traces.pop(trace.otel_trace_id, None)
        trace.ended = True
        if trace.registered:
            try:
                mlflow_view.finish_trace(trace)
            except Exception as exc:
                reporting.internal_error("reading the trace MLflow held", exc)
        if trace.foreign:
            return
        # What mlflow.get_last_active_trace_id() returns, as after one of MLflow's traces;
        # MLflow reading this trace from the store soon waits for its spans (mlflow_hooks).
        trace_id = trace.trace_id
        recent = RUNTIME.recent_roots
        recent[trace_id] = True
        if len(recent) > RECENT_ROOTS:
            recent.pop(next(iter(recent), None), None)
        mlflow_compat.set_last_active_trace_id(trace_id)


def _merged(outer, inner):
    """``(tags, metadata)``: ``outer``'s (a ``(tags, metadata, ...)`` tuple) with ``inner``'s
    (``(tags, metadata)`` or None) over them."""
    tags, metadata = dict(outer[0] or {}), dict(outer[1] or {})
    if inner is not None:
        tags.update(inner[0] or {})
        metadata.update(inner[1] or {})
    return tags, metadata

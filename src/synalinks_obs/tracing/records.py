"""One module call -> one ``CallRecord``: ids, parent, attributes, clock, cost.

The calling-thread half of the span path, kept cheap on purpose: a call becomes a
``CallRecord`` (plain slots, references to the payloads, nanosecond clock readings) that
``begin`` opens and ``finish`` closes; the exporter thread turns finished records into
MLflow spans (``export.wire``). The parent comes from ``tracing.context``. Ids come from a
private random generator, reseeded in forked children.
"""

from __future__ import annotations

import os
import random
import time
from typing import NamedTuple

from synalinks_obs.tracing.capture import capture_args, capture_kwargs, capture_output
from synalinks_obs.tracing.context import CONTEXTS, ObsSpan
from synalinks_obs.tracing.span_types import SPAN_TYPES, span_type_for


class Destination(NamedTuple):
    """Where a trace is written: tracking URI (None: MLflow's default) and experiment."""

    tracking_uri: str | None
    experiment_name: str
    # Set when the trace belongs to an MLflow experiment known by id (a user's MLflow
    # trace we joined): it wins over the name.
    experiment_id: str | None = None
    # Set while a training/evaluation run is active (synalinks_obs.training): the
    # exporter gives the trace MLflow's source-run metadata, linking it to that run.
    run_id: str | None = None
    # The kind of the (non-symbolic) traces started here, a trace tag: "call", or for a
    # training run's destination "training" / "evaluation" (see ``TraceRecord.kind``).
    trace_kind: str = "call"



class _Ids:
    """Random ids from a private generator: ``import synalinks`` seeds ``random``, so the
    module-level generator would give two processes the same trace ids."""

    def __init__(self):
        self.rng = random.Random(os.urandom(32))

    def reseed(self):
        self.rng = random.Random(os.urandom(32))


IDS = _Ids()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=IDS.reseed)


class TraceRecord:
    """State shared by the calls of one trace."""

    __slots__ = (
        "otel_trace_id", "trace_id", "destination", "origin", "kind", "sampled", "registered",
        "foreign", "tracer", "secrets", "stamps", "mlflow_info", "ended", "last_asked",
    )

    def __init__(
        self, otel_trace_id, destination, sampled, tracer, foreign=False, trace_id=None,
        kind="call", origin=None, stamps=None,
    ):
        self.otel_trace_id = otel_trace_id
        self.trace_id = trace_id or f"tr-{otel_trace_id:032x}"
        self.destination = destination  # where it is written
        # The destination it was started for (a Monitor's, a run's, the tracer's): the
        # same, except for program building sent to the ``-build`` companion experiment.
        self.origin = origin or destination
        # Tagged synalinks.trace_kind: "call" (the app's call), "build" (program building:
        # symbolic calls), "training" (during fit()), "evaluation" (standalone evaluate()).
        self.kind = kind
        self.sampled = sampled
        self.tracer = tracer  # the Tracer that ends the trace's records
        self.registered = False
        self.foreign = foreign
        # Values met under secret keys in the trace's records so far (exporter thread):
        # masked wherever else they appear in the trace (export.payloads).
        self.secrets = set()
        # What the context it started in stamps on it (synalinks_obs.trace_context,
        # mlflow.tracing.context): ``(tags, metadata)`` mappings, or None.
        self.stamps = stamps
        # What the app set through MLflow's current-trace APIs while it ran (tags,
        # metadata, assessments...), read when its root ends (``tracing.mlflow_view``).
        self.mlflow_info = None
        self.ended = False  # its root call has returned
        self.last_asked = 0.0  # monotonic time an MLflow API last asked about it (mlflow_view)


class CallRecord:
    """One module call; becomes one MLflow span on the exporter thread."""

    __slots__ = (
        "trace", "span_id", "parent_span_id", "parent", "call_id", "module", "names",
        "span_type", "symbolic", "start_ns", "end_ns", "inputs", "kwargs", "outputs", "error",
        "cost", "usage", "token", "otel_token", "usage_getter", "usage_before", "secrets",
        "shadow", "first_token_ns", "stream", "base_context", "shown_context",
    )

    def __init__(self, trace, parent=None, module=None):
        self.trace = trace
        self.parent = parent
        self.module = module  # the module object: its names are read when needed (``names``)
        self.names = None
        self.call_id = None  # drawn when the span is written (``call_id_of``)
        self.cost = 0.0
        self.error = None
        self.usage = None
        self.outputs = None
        self.end_ns = None
        self.token = self.otel_token = None  # set by ``context.enter``, reset by ``leave``
        self.usage_getter = None
        self.secrets = None  # set on the exporter thread (export.payloads.masker_for)
        self.shadow = None  # MLflow's LiveSpan of this call, made when MLflow asks (mlflow_view)
        self.stream = None  # a streamed LM answer's raw chunks (tracing.streams)
        self.first_token_ns = None
        # MLflow's context as attached when the call began, and as shown to MLflow while
        # the call is current (``context.shown_context``; None: never shown)
        self.base_context = self.shown_context = None

    def described(self) -> tuple:
        """``(class name, module name, description, model)`` of the call's module: read
        from the module the first time it is asked (by the exporter thread, or by MLflow
        asking about the call), not on every call."""
        names = self.names
        if names is None:
            module = self.module
            names = self.names = (
                type(module).__name__, _text_attribute(module, "name"),
                _text_attribute(module, "description"),
                _text_attribute(module, "model") if self.span_type == "CHAT_MODEL" else None,
            )
        return names

    @property
    def module_class(self) -> str:
        return self.described()[0]

    @property
    def module_name(self) -> str:
        return self.described()[1]

    @property
    def description(self) -> str:
        return self.described()[2]

    @property
    def model(self) -> str | None:
        return self.described()[3]

    @property
    def name(self) -> str:
        module_class, module_name = self.described()[:2]
        return f"{module_class}:{module_name}" if module_name else module_class

    @property
    def parent_call_id(self) -> int | None:
        return call_id_of(self.parent) if self.parent is not None else None


def call_id_of(record) -> int:
    """A record's ``synalinks.call_id``, drawn the first time it is asked: on the exporter
    thread, which writes a child before its parent (the calling thread never reads it)."""
    call_id = record.call_id
    if call_id is None:
        call_id = record.call_id = IDS.rng.getrandbits(128) or 1
    return call_id


def _text_attribute(obj, name: str) -> str:
    """``obj.<name>`` as a plain ``str`` (never a subclass with surprises); ``""`` if it
    is missing, None or raises."""
    try:
        value = getattr(obj, name)
        return value if type(value) is str else _plain_text(value)
    except Exception:
        return ""


def _plain_text(value) -> str:
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str.__str__(value)
    return "" if value is None else str(value)


def begin(module, args, kwargs, tracer, destination=None, parent=None) -> CallRecord:
    """Open the record of a call (no I/O). The caller enters it with ``enter``.

    ``parent``: the current record (``CURRENT``), as the caller read it. ``destination``
    (a module's ``synalinks_obs.hooks.Monitor``): the call starts a trace there unless its
    trace already goes there; it keeps its parent (call id, cost). ``kwargs``: the traced
    call's own dict, held as it is when its values need no capture (``tracing.capture``).
    """
    mlflow_context = CONTEXTS.mlflow
    now = mlflow_context.current_context()
    parent_span_id = None
    if parent is not None and parent.base_context is now and now is not None:
        # Nothing attached to MLflow's context since the parent call began: it is current.
        trace = parent.trace
        parent_span_id = parent.span_id
    elif isinstance(otel_parent := mlflow_context.current_span(), ObsSpan):
        parent = otel_parent.record
        trace = parent.trace
        parent_span_id = parent.span_id
    else:
        # (None from a span MLflow could not start, e.g. a no-op span)
        parent_ctx = otel_parent.get_span_context() if otel_parent is not None else None
        valid = parent_ctx is not None and parent_ctx.is_valid
        if valid and parent is not None and parent.trace.otel_trace_id == parent_ctx.trace_id:
            # A user's MLflow span opened inside one of our calls.
            trace = parent.trace
            parent_span_id = parent_ctx.span_id
        elif valid and (joined := tracer.join_foreign_trace(parent_ctx)) is not None:
            # Our call runs inside a user's @mlflow.trace / mlflow.start_span.
            trace = joined
            parent = None
            parent_span_id = parent_ctx.span_id
        elif valid and not parent_ctx.trace_flags.sampled:
            # Inside a trace a sampler dropped (MLflow's, or ours in another thread's
            # context): the whole trace stays dropped.
            trace = tracer.new_trace(args, destination, sampled=False)
        elif parent is not None:
            trace = parent.trace
            parent_span_id = parent.span_id
        else:
            trace = tracer.new_trace(args, destination)
    if destination is not None and trace.origin != destination:
        # A monitored module inside a trace going elsewhere: its own trace, as a root.
        trace = tracer.new_trace(args, destination)
        parent_span_id = None
    record = CallRecord(trace, parent, module)
    if mlflow_context.lazy:  # MLflow's context as the call begins (``context.shown_context``)
        record.base_context = now
    record.parent_span_id = parent_span_id
    record.span_id = IDS.rng.getrandbits(64) or 1
    record.span_type = SPAN_TYPES.get(type(module)) or span_type_for(type(module))
    if trace.sampled and tracer.capture_payloads:
        record.inputs, record.symbolic = capture_args(args)
        record.kwargs = capture_kwargs(kwargs) if kwargs else None
    else:
        record.inputs = record.kwargs = None
        record.symbolic = capture_args(args)[1] if trace.sampled else False
    record.start_ns = time.time_ns()
    return record


def finish(record: CallRecord, outputs=None, error: BaseException | None = None, usage=None, capture=True):
    """Close the record: end time, outputs or error, LM usage, cost roll-up."""
    record.end_ns = time.time_ns()
    record.error = error
    if usage is not None:
        record.usage = usage
        cost = usage.get("cost")
        if isinstance(cost, (int, float)):
            record.cost += float(cost)
    if error is None and outputs is not None and capture:
        record.outputs = capture_output(outputs)
    parent = record.parent
    if parent is not None and record.cost:
        parent.cost += record.cost

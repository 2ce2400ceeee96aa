"""One module call -> one span record: parenting, attributes, status, cost.

This is the calling-thread half of the span path, kept cheap on purpose: a call becomes
a ``CallRecord`` (plain slots, references to the payloads, nanosecond clock readings);
the exporter thread turns finished records into MLflow spans and writes them in batches
(see ``export.py``).

Parent-child comes from a context of our own, never from Synalinks' ``CallContext``:

- ``_CURRENT`` (a ContextVar) holds the innermost synalinks-obs record of this task or
  thread; it is set and reset inside the same coroutine, so sequential siblings stay
  siblings and calls awaited concurrently (``asyncio.gather``, tasks, threads) each keep
  their own parent.
- The OpenTelemetry context holds an ``ObsSpan`` (a non-recording span carrying our ids)
  while a module call runs, so ``mlflow.start_span`` / ``@mlflow.trace`` inside a module
  nest under it; and a call made inside a user's MLflow span joins that span's trace.
  For the first case the trace is registered in MLflow's in-memory trace manager when the
  root call starts, so MLflow's processor accepts child spans of ours.
"""

from __future__ import annotations

import contextvars
import os
import random
import time
from typing import NamedTuple

from opentelemetry import trace as otel_trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from synalinks_obs.payloads import capture_args, capture_kwargs, capture_value
from synalinks_obs.span_types import span_type_for

_CURRENT: contextvars.ContextVar["CallRecord | None"] = contextvars.ContextVar(
    "synalinks_obs_current_call", default=None
)
# Where the traces of calls started in this context go (training runs and direct
# Monitor hooks override the global destination through it).
DESTINATION_OVERRIDE: contextvars.ContextVar["Destination | None"] = contextvars.ContextVar(
    "synalinks_obs_destination", default=None
)

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


class _MlflowContext:
    """The OpenTelemetry runtime context MLflow reads its parent span from.

    MLflow keeps its spans in a runtime context of its own (isolated tracer provider, the
    default) or in OpenTelemetry's global one (unified mode); we read and write the same
    one it uses. The mode is read once here, not on every call.
    """

    def __init__(self):
        from mlflow.tracing import provider

        if provider.MLFLOW_USE_DEFAULT_TRACER_PROVIDER.get():
            runtime = provider.mlflow_runtime_context
            self.current_context, self._attach, self.detach = (
                runtime.get_current, runtime.attach, runtime.detach,
            )
        else:
            from opentelemetry import context as otel_context

            self.current_context, self._attach, self.detach = (
                otel_context.get_current, otel_context.attach, otel_context.detach,
            )

    def current_span(self):
        return otel_trace.get_current_span(self.current_context())

    def attach(self, span):
        return self._attach(otel_trace.set_span_in_context(span, self.current_context()))


CONTEXT: _MlflowContext | None = None


def configure_context() -> None:
    """Bind to MLflow's runtime context (call once mlflow is importable)."""
    global CONTEXT
    CONTEXT = _MlflowContext()


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


# -- training runs (synalinks_obs.training) ------------------------------------------
# While a fit()/evaluate() run is active, traces started in its task go to the run's
# destination through DESTINATION_OVERRIDE. Threads do not inherit ContextVars (a
# callback dispatched on a ThreadPoolExecutor, a thread a callback starts), so the
# destinations of active runs are also kept process-wide: a root call with no override
# in its context uses the most recent one. Symbolic (program-building) root calls keep
# the enabled destination (see ``Tracer.new_trace``).
_ACTIVE_RUNS: list = []


def push_run_destination(destination: "Destination") -> None:
    _ACTIVE_RUNS.append(destination)


def pop_run_destination(destination: "Destination") -> None:
    try:
        _ACTIVE_RUNS.remove(destination)
    except ValueError:
        pass


def run_destination_fallback() -> "Destination | None":
    """The destination of the most recently started active run, if any (any thread)."""
    try:
        return _ACTIVE_RUNS[-1]
    except IndexError:
        return None


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

    __slots__ = ("otel_trace_id", "trace_id", "destination", "sampled", "registered", "foreign")

    def __init__(self, otel_trace_id, destination, sampled, foreign=False, trace_id=None):
        self.otel_trace_id = otel_trace_id
        self.trace_id = trace_id or f"tr-{otel_trace_id:032x}"
        self.destination = destination
        self.sampled = sampled
        self.registered = False
        self.foreign = foreign


class CallRecord:
    """One module call; becomes one MLflow span on the exporter thread."""

    __slots__ = (
        "trace", "span_id", "parent_span_id", "parent", "call_id", "parent_call_id",
        "module_class", "module_name", "description", "span_type", "symbolic",
        "start_ns", "end_ns", "inputs", "kwargs", "outputs", "error", "cost", "usage",
        "model", "otel_span", "module_id",
    )

    def __init__(self, trace):
        self.trace = trace
        self.parent = None
        self.cost = 0.0
        self.error = None
        self.usage = None
        self.model = None
        self.outputs = None
        self.end_ns = None
        self.otel_span = None

    @property
    def name(self) -> str:
        return f"{self.module_class}:{self.module_name}" if self.module_name else self.module_class


class ObsSpan(NonRecordingSpan):
    """What the OpenTelemetry context holds while one of our calls runs."""

    __slots__ = ("record",)

    def __init__(self, record: CallRecord):
        # The SpanContext (a validated tuple, ~3 us) is built only if someone asks.
        self._context = None
        self.record = record

    def get_span_context(self) -> SpanContext:
        context = self._context
        if context is None:
            record = self.record
            context = self._context = SpanContext(
                record.trace.otel_trace_id, record.span_id, False, _SAMPLED
            )
        return context


def current_record() -> CallRecord | None:
    """The innermost traced module call of this task or thread (None outside one)."""
    return _CURRENT.get()


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


def begin(module, args, kwargs, tracer, destination=None) -> CallRecord:
    """Open the record of a call (no I/O). The caller enters it with ``enter``.

    ``destination`` (a module's ``synalinks_obs.hooks.Monitor``): the call starts a trace
    there unless its trace already goes there; it keeps its parent (call id, cost).
    """
    parent = _CURRENT.get()
    otel_parent = CONTEXT.current_span()
    parent_span_id = None
    if isinstance(otel_parent, ObsSpan):
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
        elif parent is not None:
            trace = parent.trace
            parent_span_id = parent.span_id
        else:
            trace = tracer.new_trace(args, destination)
    if destination is not None and trace.destination != destination:
        # A monitored module inside a trace going elsewhere: its own trace, as a root.
        trace = tracer.new_trace(args, destination)
        parent_span_id = None
    record = CallRecord(trace)
    record.parent = parent
    record.parent_span_id = parent_span_id
    rng = IDS.rng
    record.span_id = rng.getrandbits(64) or 1
    record.call_id = rng.getrandbits(128)
    record.parent_call_id = parent.call_id if parent is not None else None
    cls = type(module)
    record.module_id = id(module)
    record.module_class = cls.__name__
    record.span_type = span_type_for(cls)
    record.module_name = _text_attribute(module, "name")
    record.description = _text_attribute(module, "description")
    if trace.sampled and tracer.capture_payloads:
        record.inputs, record.symbolic = capture_args(args)
        record.kwargs = capture_kwargs(kwargs) if kwargs else None
    else:
        record.inputs = record.kwargs = None
        record.symbolic = capture_args(args)[1] if trace.sampled else False
    if record.span_type == "CHAT_MODEL":
        record.model = _text_attribute(module, "model")
    record.start_ns = time.time_ns()
    return record


def enter(record: CallRecord):
    """Make ``record`` the current call; returns the tokens ``leave`` needs."""
    token = _CURRENT.set(record)
    if not record.trace.sampled:
        return token, None
    return token, CONTEXT.attach(ObsSpan(record))


def leave(tokens) -> None:
    token, otel_token = tokens
    if otel_token is not None:
        CONTEXT.detach(otel_token)
    _CURRENT.reset(token)


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
        record.outputs = capture_value(outputs)[0]
    parent = record.parent
    if parent is not None and record.cost:
        parent.cost += record.cost

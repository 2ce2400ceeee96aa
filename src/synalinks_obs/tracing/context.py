"""Which call is current: our ContextVar, MLflow's OpenTelemetry context, run destinations.

Parent-child comes from a context of our own, never from Synalinks' ``CallContext``:

- ``CURRENT`` (a ContextVar) holds the innermost synalinks-obs record of this task or
  thread; it is set and reset inside the same coroutine, so sequential siblings stay
  siblings and calls awaited concurrently (``asyncio.gather``, tasks, threads) each keep
  their own parent.
- MLflow's OpenTelemetry runtime context shows an ``ObsSpan`` (a span carrying our ids)
  as its current span while a sampled call runs, so ``mlflow.start_span`` /
  ``@mlflow.trace`` inside a module nest under it, a call made inside a user's MLflow
  span joins that span's trace (``records.begin``), and MLflow's current-span APIs find
  the call: the first time one of them reads the span (its ``attributes``),
  ``tracing.mlflow_view`` shows the call to MLflow as one of its live spans. Nothing is
  attached per call: MLflow's context object answers its reads through
  ``shown_context`` (our current call, when nothing was attached since it began), so a
  call nobody asks about costs two ContextVar reads. While an unsampled trace's root
  runs, the span shown is marked not sampled, so MLflow's parent-based sampler drops
  what MLflow would record inside it (one decision per trace). Where MLflow reads
  OpenTelemetry's global context instead, each call attaches its span (``enter``).
- ``STAMPS`` holds the tags and metadata ``synalinks_obs.trace_context`` stamps on the
  traces started in its scope.
- ``DESTINATION_OVERRIDE`` sends the traces started in a context elsewhere (a training
  run, see ``training.monitor``): the ``fit()`` task and the tasks it starts inherit it.
  Threads do not inherit ContextVars: ``tracing.threads`` carries the run over to the
  threads and thread-pool work that the run's own work starts (``RUNTIME.run_threads``),
  and ``run_destination`` answers for all of them, only while the run is in
  ``RUNTIME.active_runs``. Any other thread's calls stay on the tracing side.

``enter``/``leave`` are the only functions that set and reset both contexts (the
common child call, ``tracing.child_calls``, sets and resets only ours, where MLflow's
context is only read).
"""

from __future__ import annotations

import contextvars
import threading

from opentelemetry import trace as otel_trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.util.types import Attributes

from synalinks_obs.compat import mlflow as mlflow_compat
from synalinks_obs.runtime import RUNTIME

CURRENT: contextvars.ContextVar = contextvars.ContextVar("synalinks_obs_current_call", default=None)
# Where the traces of calls started in this context go (training runs override the
# tracer's destination through it).
DESTINATION_OVERRIDE: contextvars.ContextVar = contextvars.ContextVar(
    "synalinks_obs_destination", default=None
)

# The tags and metadata synalinks_obs.trace_context stamps on the traces started in its
# scope: ``(tags, metadata)``, each a dict (merged with the enclosing scopes'), or None.
STAMPS: contextvars.ContextVar = contextvars.ContextVar("synalinks_obs_trace_stamps", default=None)

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


class MlflowContext:
    """The OpenTelemetry runtime context MLflow reads its current span from (its own or
    OpenTelemetry's global one, per MLflow's tracer-provider mode, read once).

    ``lazy``: MLflow's own context reads show our current call (``shown_context``) and
    nothing is attached per call; otherwise (OpenTelemetry's global context, or MLflow's
    context object missing) each sampled call attaches its span (``enter``)."""

    def __init__(self):
        self.current_context, self._attach, self.detach = mlflow_compat.runtime_context()
        self.lazy = False
        self.show_calls()

    def show_calls(self) -> None:
        """Make MLflow's context reads show our current call (again after uninstrument)."""
        self.lazy = mlflow_compat.show_in_mlflow_context(
            RUNTIME.patches, self.current_context, shown_context
        )

    def current_span(self):
        return otel_trace.get_current_span(self.current_context())

    def attach(self, span):
        return self._attach(otel_trace.set_span_in_context(span, self.current_context()))


def shown_context(context):
    """What MLflow reads as its current context: ``context`` (the context as attached),
    with our current call as its span when nothing was attached since that call began
    (built once per call, on the first read)."""
    record = CURRENT.get()
    if record is None or record.base_context is not context:
        return context
    shown = record.shown_context
    if shown is None:
        span = ObsSpan(record) if record.trace.sampled else UnsampledSpan(record)
        shown = record.shown_context = otel_trace.set_span_in_context(span, context)
    return shown


class ObsSpan(otel_trace.Span):
    """What MLflow's context holds while one of our calls runs: our ids, and MLflow's view
    of the call once an MLflow API asks for it.

    Not a ``NonRecordingSpan``: MLflow's current-span APIs (``get_current_active_span``,
    ``update_current_trace``, ``get_active_trace_id``, the autologgers' parent lookup)
    ignore those. They read the span's ``attributes`` for its MLflow trace id: that first
    read is when the call is registered with MLflow (``tracing.mlflow_view.expose``);
    a call nobody asks about costs what a non-recording span costs.
    """

    __slots__ = ("record", "_obs_context")

    def __init__(self, record):
        self.record = record
        # The SpanContext (a validated tuple, ~3 us) is built only if someone asks.
        self._obs_context = None

    def get_span_context(self) -> SpanContext:
        context = self._obs_context
        if context is None:
            record = self.record
            context = self._obs_context = SpanContext(
                record.trace.otel_trace_id, record.span_id, False, _SAMPLED
            )
        return context

    @property
    def context(self) -> SpanContext:  # what MLflow reads on the SDK's spans
        return self.get_span_context()

    @property
    def attributes(self) -> Attributes:
        """The attributes of MLflow's live span for this call (made now if needed)."""
        return self.record.trace.tracer.expose(self.record)

    # The OpenTelemetry API of a span nobody records through (as NonRecordingSpan's).
    def is_recording(self) -> bool:
        return False

    def end(self, end_time=None) -> None:
        pass

    def set_attributes(self, attributes) -> None:
        pass

    def set_attribute(self, key, value) -> None:
        pass

    def add_event(self, name, attributes=None, timestamp=None) -> None:
        pass

    def add_link(self, context, attributes=None) -> None:
        pass

    def update_name(self, name) -> None:
        pass

    def set_status(self, status, description=None) -> None:
        pass

    def record_exception(self, exception, attributes=None, timestamp=None, escaped=False) -> None:
        pass


class UnsampledSpan(NonRecordingSpan):
    """What MLflow's context holds while an unsampled trace's root runs: our ids, marked
    not sampled (the SpanContext built only if someone asks)."""

    __slots__ = ("record", "_obs_context")

    def __init__(self, record):
        super().__init__(None)
        self.record = record
        self._obs_context = None

    def get_span_context(self) -> SpanContext:
        context = self._obs_context
        if context is None:
            record = self.record
            context = self._obs_context = SpanContext(
                record.trace.otel_trace_id, record.span_id, False, _NOT_SAMPLED
            )
        return context


class _Contexts:
    mlflow: MlflowContext | None = None  # bound once MLflow is importable (configure())


CONTEXTS = _Contexts()


def configure() -> MlflowContext:
    """Bind to MLflow's runtime context (once mlflow is importable)."""
    if CONTEXTS.mlflow is None:
        CONTEXTS.mlflow = MlflowContext()
    elif CONTEXTS.mlflow.lazy:
        CONTEXTS.mlflow.show_calls()  # (a no-op unless uninstrument() took it away)
    return CONTEXTS.mlflow


def current_record():
    """The innermost traced module call of this task or thread (None outside one)."""
    return CURRENT.get()


def enter(record) -> None:
    """Make ``record`` the current call (its tokens are kept on it for ``leave``).

    Both contexts or neither: where MLflow's context shows our calls (``lazy``) it is
    only read (``records.begin`` kept it as ``base_context``); otherwise, if attaching to
    it fails, ours is reset before the error propagates."""
    if CONTEXTS.mlflow.lazy:  # MLflow's reads show the call (``shown_context``)
        record.token = CURRENT.set(record)  # last: nothing can fail after it
        return
    token = CURRENT.set(record)
    trace = record.trace
    if not trace.sampled:
        if record.parent is not None or trace.foreign:
            record.token = token
            return
        span = UnsampledSpan(record)
    else:
        span = ObsSpan(record)
    try:
        record.otel_token = CONTEXTS.mlflow.attach(span)
    except BaseException:
        CURRENT.reset(token)
        raise
    record.token = token


def leave(record) -> None:
    """Undo ``enter``: MLflow's context first, then ours (both, even if one fails)."""
    token, otel_token = record.token, record.otel_token
    record.token = record.otel_token = None
    # The shown span refers back to the record: not kept past the call (a context copied
    # meanwhile, e.g. for a callback that runs later, still shows it: made again if read).
    record.shown_context = None
    if token is None:
        return
    if otel_token is None:
        CURRENT.reset(token)
        return
    try:
        CONTEXTS.mlflow.detach(otel_token)
    finally:
        CURRENT.reset(token)


def attach_no_span():
    """Hide our span from MLflow while a call runs that another tool traces (Synalinks'
    own Monitor hook); returns the token for ``detach``, or None."""
    context = CONTEXTS.mlflow
    if context is None:
        return None
    from opentelemetry.trace import INVALID_SPAN

    return context, context.attach(INVALID_SPAN)


def detach(handle) -> None:
    if handle is not None:
        context, token = handle
        context.detach(token)


# -- training runs in progress -------------------------------------------------------------

def push_run_destination(destination) -> None:
    RUNTIME.active_runs.append(destination)


def pop_run_destination(destination) -> None:
    try:
        RUNTIME.active_runs.remove(destination)
    except ValueError:
        pass
    forget_run_threads(destination)


def forget_run_threads(destination) -> None:
    """Forget the threads a run's work started (the run has ended)."""
    threads = RUNTIME.run_threads
    for thread in [t for t, d in list(threads.items()) if d == destination]:
        threads.pop(thread, None)


def run_destination():
    """The destination of the training run the current code works for, or None.

    That is the run of this task (``DESTINATION_OVERRIDE``, set by the run's Monitor in
    ``fit()``'s task, or for a thread-pool work item submitted by the run's work), else
    of the thread, if the run's work started it; only while that run is active. Code on
    any other thread, or another task, works for no run."""
    destination = DESTINATION_OVERRIDE.get()
    if destination is None:
        threads = RUNTIME.run_threads
        if not threads:
            return None
        destination = threads.get(threading.current_thread())
        if destination is None:
            return None
    return destination if destination in RUNTIME.active_runs else None

"""What MLflow sees of our traces: registration, the current span, what the app sets there.

MLflow's APIs that look at "the current span/trace" work on what its in-memory trace
manager holds. Our calls are not in it (building MLflow's objects for every call would
cost the calling thread ~80 us per trace), so this module puts them there when MLflow
asks, and only then:

- ``register``: a live trace of ours, with its MLflow trace id and experiment. MLflow's
  span processor looks the trace up when a span starts inside one of our calls (a
  user's ``mlflow.start_span``, an autologger's span: ``patching.mlflow_hooks``);
- ``expose``: a call's MLflow ``LiveSpan`` (same ids, a "shadow" MLflow never exports)
  when an MLflow API reads the current span (``context.ObsSpan.attributes``):
  ``mlflow.get_current_active_span()``, ``update_current_trace``, ``get_active_trace_id``,
  ``log_feedback`` inside the call, LiteLLM's MLflow callback looking for its parent;
- ``finish_call`` / ``finish_trace`` (calling thread; a slot read unless MLflow asked):
  the shadow ends with its call; when the root ends, what the app set on the trace
  through MLflow (tags, metadata including the session and user keys, client request id,
  previews, state, assessments) is kept on the ``TraceRecord`` for ``export.wire``;
- ``write_theirs_first`` (exporter thread, before our root is written): the spans MLflow
  recorded in the trace are written first, so the store's roll-up includes them;
- ``release`` (exporter thread, ``RELEASE_AFTER`` seconds after the root ended): MLflow's
  own span processors are flushed (the spans it wrote inside our trace), then the trace
  leaves MLflow's registry. Autologgers such as LiteLLM's report from a background task,
  after the call returned: a span that asks later registers the trace again, and it is
  released again.
- ``user_attributes`` (exporter thread): what the app set on a call's shadow span.
"""

from __future__ import annotations

import json
import time

from synalinks_obs import reporting
from synalinks_obs.compat import mlflow as mlflow_compat
from synalinks_obs.runtime import RUNTIME

RELEASE_AFTER = 1.0  # seconds a registered trace stays in MLflow's registry after its root
_REQUEST_ID = "mlflow.traceRequestId"  # MLflow's span attribute naming the trace
_SPAN_TYPE = "mlflow.spanType"
_OURS = ("synalinks.",)  # attributes the app cannot override on our spans


def _hex(span_id: int) -> str:
    return f"{span_id:016x}"


# -- traces -------------------------------------------------------------------------------

def register(tracer, trace, manager=None) -> str | None:
    """Register a trace of ours in MLflow's trace manager (once); its MLflow id, or None
    when MLflow cannot have it (the store cannot tell its experiment)."""
    with RUNTIME.view_lock:
        if trace.registered:
            return trace.trace_id
        experiment_id = None
        if not tracer.otlp_only:
            try:  # the app's MLflow call needs it now; MLflow itself would look it up here
                experiment_id = tracer.exporter.experiment_id_now(trace.destination)
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
                manager = tracer.trace_manager()
            manager.register_trace(trace.otel_trace_id, info)
        except Exception as exc:
            reporting.internal_error("registering a trace with MLflow", exc)
            return None
        trace.registered = True
        RUNTIME.registered_traces.add(trace)
        if trace.ended:  # asked after the root returned (an autologger's late report)
            tracer.exporter.call_later(RELEASE_AFTER, lambda: release(trace))
        return trace.trace_id


def finish_trace(trace) -> None:
    """At the root's end (only for a trace MLflow knows): keep what the app set on it
    through MLflow's APIs, and release it from MLflow's registry a little later."""
    tracer = trace.tracer
    try:
        with tracer.trace_manager().get_trace(trace.trace_id) as held:
            info = held.info if held is not None else None
            if info is not None:
                trace.mlflow_info = {
                    "tags": dict(info.tags),
                    "metadata": dict(info.trace_metadata),
                    "client_request_id": info.client_request_id,
                    "request_preview": info.request_preview,
                    "response_preview": info.response_preview,
                    "state": info.state.value if info.state is not None else None,
                    "assessments": [a.to_dictionary() for a in info.assessments],
                    # spans MLflow recorded in our trace (an autologger's, a user's):
                    # written before our root, so the trace's roll-up counts them
                    "theirs": any(
                        not getattr(span, "_synalinks_obs_shadow", False)
                        for span in mlflow_compat.held_spans(held)
                    ),
                }
    finally:
        tracer.exporter.call_later(RELEASE_AFTER, lambda: release(trace))


def write_theirs_first(trace) -> None:
    """Exporter thread, before our root of ``trace`` is handed on: the spans MLflow
    recorded in it (ended by now) are written first, so the store's roll-up of the trace
    (token usage, cost), finalized with our root, includes them."""
    info = trace.mlflow_info
    if info is None or not info.get("theirs"):
        return
    try:
        timeout = trace.tracer.settings.flush_timeout
        mlflow_compat.flush_mlflow_span_processors(timeout)
        mlflow_compat.wait_for_mlflow_async_logging(timeout)
    except Exception as exc:  # MLflow's own writing failed: it said why; ours goes on
        reporting.internal_error("writing MLflow's spans of a trace before its root", exc)


def release(trace, now: bool = False) -> None:
    """Take a trace whose root has ended out of MLflow's registry (exporter thread), once
    the spans MLflow opened in it have ended and been handed to MLflow's exporters."""
    tracer = trace.tracer
    with RUNTIME.view_lock:
        if not trace.registered:
            return
        manager = tracer.trace_manager()
        spans = mlflow_compat.trace_spans(manager, trace.trace_id)
        theirs = [span for span in spans if not getattr(span, "_synalinks_obs_shadow", False)]
        if not now and (
            any(span.end_time_ns is None for span in spans)
            or time.monotonic() - trace.last_asked < RELEASE_AFTER
        ):
            # a span still running (an autologger's, a stream being read), or an MLflow
            # API asked a moment ago (LiteLLM's callback found the call, its span comes next)
            tracer.exporter.call_later(RELEASE_AFTER, lambda: release(trace))
            return
    if theirs:
        mlflow_compat.flush_mlflow_span_processors(tracer.settings.flush_timeout)
    with RUNTIME.view_lock:
        mlflow_compat.drop_trace(manager, trace.otel_trace_id)
        trace.registered = False
        RUNTIME.registered_traces.discard(trace)


def release_ended(now: bool = True) -> None:
    """Release every registered trace whose root has ended (``synalinks_obs.flush()``
    and the exit: the spans MLflow opened in our traces are written too)."""
    for trace in list(RUNTIME.registered_traces):
        if trace.ended:
            try:
                release(trace, now=now)
            except Exception as exc:
                reporting.internal_error("releasing a trace from MLflow", exc)


# -- calls --------------------------------------------------------------------------------

def expose(record) -> dict:
    """The attributes of MLflow's live span for one of our calls (registering its trace
    and making the span when needed): what MLflow's current-span APIs read."""
    trace = record.trace
    trace.last_asked = time.monotonic()  # not released while the asker may still use it
    fallback = {_REQUEST_ID: json.dumps(trace.trace_id)}  # MLflow then finds no span
    try:
        with RUNTIME.view_lock:
            tracer = trace.tracer
            manager = tracer.trace_manager()
            if trace.foreign:  # the user's MLflow trace: MLflow holds it while it runs
                with manager.get_trace(trace.trace_id) as held:
                    if held is None:
                        return fallback
                trace_id = trace.trace_id
            else:
                trace_id = register(tracer, trace, manager)
                if trace_id is None:
                    return fallback
            shadow = record.shadow
            if shadow is None:
                shadow = record.shadow = _shadow(record, trace_id)
                if shadow is None:
                    return fallback
            otel_span = mlflow_compat.otel_span_of(shadow)
            if otel_span is None or not mlflow_compat.register_live_span(manager, trace_id, shadow):
                return fallback
            return otel_span.attributes
    except Exception as exc:
        reporting.internal_error("showing a module call to MLflow", exc)
        return fallback


def _shadow(record, trace_id):
    """MLflow's ``LiveSpan`` of a call: our ids, name and span type (ended if the call has)."""
    from mlflow.entities import LiveSpan

    otel_span = mlflow_compat.detached_otel_span(
        record.name, record.trace.otel_trace_id, record.span_id, record.parent_span_id,
        record.start_ns,
    )
    if otel_span is None:
        return None
    shadow = LiveSpan(otel_span, trace_id, record.span_type)
    shadow._synalinks_obs_shadow = True  # not a span MLflow writes (see release)
    if record.end_ns is not None:
        otel_span.end(end_time=record.end_ns)
    return shadow


def finish_call(record) -> None:
    """The call has returned: its shadow span ends too (and leaves a user's MLflow trace,
    which MLflow writes itself: our span is written by us)."""
    shadow = record.shadow
    otel_span = mlflow_compat.otel_span_of(shadow)
    if otel_span is not None and otel_span.end_time is None:
        otel_span.end(end_time=record.end_ns)
    if record.trace.foreign:
        tracer = record.trace.tracer
        mlflow_compat.forget_span(tracer.trace_manager(), record.trace.trace_id, shadow.span_id)


def user_attributes(record) -> dict:
    """``{key: JSON text}`` the app set on a call's shadow span through MLflow (its span
    type when changed; never our ``synalinks.*`` attributes or the trace id)."""
    shadow = record.shadow
    if shadow is None:
        return {}
    found = {}
    otel_span = mlflow_compat.otel_span_of(shadow)
    for key, value in dict(getattr(otel_span, "attributes", None) or {}).items():
        if key == _REQUEST_ID or key.startswith(_OURS):
            continue
        if key == _SPAN_TYPE and value == json.dumps(record.span_type):
            continue
        found[key] = value if isinstance(value, str) else json.dumps(value, default=str)
    return found

"""A ``Wire`` -> MLflow's own span and trace objects, in the process that writes them.

``wire_to_span`` builds the immutable ``mlflow.entities.Span`` (an OpenTelemetry
``ReadableSpan`` underneath) with the nine ``synalinks.*`` attributes, MLflow's span
type, inputs/outputs, chat attributes (model, token usage, cost) on LM spans, and an
``exception`` event with status ERROR on failure. A trace's root also carries its trace
tags as MLflow's ``mlflow.traceTag.<key>`` attributes, which MLflow's store turns into
tags when it logs the spans: the name, ``synalinks.program`` and ``synalinks.trace_kind``,
and the tags the app gave the trace (``trace_context``, ``mlflow.update_current_trace``).
Its session and user (MLflow's ``mlflow.trace.session`` / ``mlflow.trace.user`` metadata)
go as the OpenTelemetry ``session.id`` / ``user.id`` attributes, which MLflow's store
reads the same way. Attributes the app set on a span through MLflow are kept (ours win
for ``synalinks.*``); a streamed LM answer gets ``synalinks.time_to_first_token``.
``root_trace_info_of`` gives the finished ``TraceInfo`` of a trace's root: linked to a
training run, with the metadata, client request id, previews, state and assessments the
app set (``needs_trace_info``: what ``log_spans`` cannot write).
"""

from __future__ import annotations

import json

_USAGE_KEYS = ("input_tokens", "output_tokens", "total_tokens")
# Trace tags on every trace of ours, for the search box of MLflow's Traces list
# (tags.`synalinks.trace_kind` = 'call'): the program (its root module's name) and the
# kind of trace (call, build, training, evaluation).
PROGRAM_TAG = "synalinks.program"
KIND_TAG = "synalinks.trace_kind"
_TRACE_TAG_ATTRIBUTE = "mlflow.traceTag."  # MLflow's store turns these into trace tags
SESSION_KEY = "mlflow.trace.session"  # MLflow's standard metadata keys (TraceMetadataKey)
USER_KEY = "mlflow.trace.user"
# OpenTelemetry's attributes MLflow's store reads a trace's session and user from.
_SPAN_SESSION = "session.id"
_SPAN_USER = "user.id"
_PROTECTED = ("synalinks.", "mlflow.traceRequestId")  # the app's attributes never replace these
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


def wire_to_span(wire):
    """The immutable ``mlflow.entities.Span`` of one span tuple."""
    from mlflow.entities import Span

    return Span(wire_to_otel_span(wire))


def wire_to_otel_span(wire):
    """The OpenTelemetry ``ReadableSpan`` of one span tuple (what MLflow's span wraps, and
    what an OTLP exporter sends: ``store.otlp``)."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    otel_trace_id = wire.otel_trace_id
    flags = TraceFlags(TraceFlags.SAMPLED)
    context = SpanContext(otel_trace_id, wire.span_id, False, flags)
    parent_span_id = wire.parent_span_id
    parent = (
        SpanContext(otel_trace_id, parent_span_id, False, flags)
        if parent_span_id is not None
        else None
    )
    error = wire.error
    lm_error = wire.lm_error
    usage = wire.usage or {}
    start_ns, end_ns = wire.start_ns, wire.end_ns
    dumps = json.dumps
    parent_call_id = wire.parent_call_id
    span_type = wire.span_type
    attributes = {
        "mlflow.traceRequestId": dumps(wire.trace_id),
        "mlflow.spanType": dumps(span_type),
        "synalinks.call_id": dumps(_uuid(wire.call_id)),
        "synalinks.parent_call_id": dumps(
            _uuid(parent_call_id) if parent_call_id is not None else ""
        ),
        "synalinks.module": dumps(wire.module),
        "synalinks.module_name": dumps(wire.module_name),
        "synalinks.module_description": dumps(wire.description),
        "synalinks.is_symbolic": dumps(bool(wire.symbolic)),
        "synalinks.duration": dumps((end_ns - start_ns) / 1e9),
        "synalinks.success": dumps(error is None and not lm_error),
        "synalinks.cost": dumps(float(wire.cost)),
    }
    if wire.inputs is not None:
        attributes["mlflow.spanInputs"] = wire.inputs
    if wire.outputs is not None:
        attributes["mlflow.spanOutputs"] = wire.outputs
    if span_type == "CHAT_MODEL":
        model = wire.model or ""
        attributes["mlflow.llm.model"] = dumps(model)
        attributes["mlflow.llm.provider"] = dumps(model.split("/")[0] if "/" in model else "")
        attributes["mlflow.message.format"] = dumps("openai")
        if "input_tokens" in usage:
            attributes["mlflow.chat.tokenUsage"] = dumps(
                {key: int(usage.get(key) or 0) for key in _USAGE_KEYS}
            )
        if isinstance(usage.get("cost"), (int, float)):
            attributes["mlflow.llm.cost"] = dumps({"total_cost": float(usage["cost"])})
    if wire.first_token_ns is not None:
        attributes["synalinks.time_to_first_token"] = dumps((wire.first_token_ns - start_ns) / 1e9)
    for key, text in (wire.attributes or {}).items():
        if not key.startswith(_PROTECTED):
            attributes[key] = text
    if wire.trace_root:
        for key, value in trace_tags_of(wire).items():
            attributes[_TRACE_TAG_ATTRIBUTE + key] = dumps(value)
        metadata = (wire.trace_info or {}).get("metadata") or {}
        if SESSION_KEY in metadata:
            attributes[_SPAN_SESSION] = dumps(metadata[SESSION_KEY])
        if USER_KEY in metadata:
            attributes[_SPAN_USER] = dumps(metadata[USER_KEY])
    events = []
    status = Status(StatusCode.OK)
    if error is not None or lm_error:
        if error is not None:
            exc_type, message, stack = error
        else:
            exc_type, message, stack = "RuntimeError", str(lm_error), ""
        event_attributes = {"exception.type": exc_type, "exception.message": message}
        if stack:
            event_attributes["exception.stacktrace"] = stack
        events.append(Event("exception", event_attributes, timestamp=end_ns))
        status = Status(StatusCode.ERROR, f"{exc_type}: {message}"[:1000])
    return ReadableSpan(
        name=wire.name,
        context=context,
        parent=parent,
        resource=_resource(),
        attributes=attributes,
        events=events,
        kind=SpanKind.INTERNAL,
        status=status,
        start_time=start_ns,
        end_time=end_ns,
    )


def trace_tags_of(wire) -> dict:
    """The tags of the trace a root span tuple starts: the app's (``trace_context``,
    ``mlflow.update_current_trace``), then its name, program and kind."""
    tags = dict((wire.trace_info or {}).get("tags") or {})
    tags.update({
        "mlflow.traceName": wire.name,
        PROGRAM_TAG: wire.module_name or wire.module,
        KIND_TAG: wire.trace_kind,
    })
    return tags


_SPAN_ONLY_INFO = {SESSION_KEY, USER_KEY}  # written through span attributes


def needs_trace_info(wire) -> bool:
    """Whether a root carries trace-level data that ``log_spans`` cannot write (metadata
    other than the session and user, a client request id, previews, a state, assessments)."""
    info = wire.trace_info
    if not info:
        return False
    if set(info.get("metadata") or ()) - _SPAN_ONLY_INFO:
        return True
    return any(info.get(key) for key in (
        "client_request_id", "request_preview", "response_preview", "state", "assessments",
    ))


def root_trace_info_of(wire, experiment_id, run_id=None):
    """The finished ``TraceInfo`` of a root span tuple: ``mlflow.sourceRun`` when it belongs
    to a training run, and what the app set on the trace (``wire.trace_info``)."""
    from mlflow.entities import Assessment
    from mlflow.entities.trace_info import TraceInfo
    from mlflow.entities.trace_location import TraceLocation
    from mlflow.entities.trace_state import TraceState
    from mlflow.tracing.constant import TraceMetadataKey

    info = wire.trace_info or {}
    failed = wire.error is not None or bool(wire.lm_error)
    state = TraceState.ERROR if failed else TraceState.OK
    if info.get("state") in ("OK", "ERROR"):  # set with mlflow.update_current_trace(state=)
        state = TraceState(info["state"])
    metadata = dict(info.get("metadata") or {})
    if run_id is not None:
        metadata[TraceMetadataKey.SOURCE_RUN] = run_id
    return TraceInfo(
        trace_id=wire.trace_id,
        trace_location=TraceLocation.from_experiment_id(experiment_id),
        request_time=wire.start_ns // 1_000_000,
        execution_duration=(wire.end_ns - wire.start_ns) // 1_000_000,
        state=state,
        trace_metadata=metadata,
        tags=trace_tags_of(wire),
        client_request_id=info.get("client_request_id"),
        request_preview=info.get("request_preview"),
        response_preview=info.get("response_preview"),
        assessments=[Assessment.from_dictionary(a) for a in info.get("assessments") or ()],
    )

"""A ``Wire`` -> MLflow's own span and trace objects, in the process that writes them.

``wire_to_span`` builds the immutable ``mlflow.entities.Span`` (an OpenTelemetry
``ReadableSpan`` underneath) with the nine ``synalinks.*`` attributes, MLflow's span
type, inputs/outputs, chat attributes (model, token usage, cost) on LM spans, and an
``exception`` event with status ERROR on failure. A trace's root also carries its trace
tags as MLflow's ``mlflow.traceTag.<key>`` attributes, which MLflow's store turns into
tags when it logs the spans: the name, ``synalinks.program`` and ``synalinks.trace_kind``.
``root_trace_info_of`` gives the finished ``TraceInfo`` of a trace's root, linked to a
training run.
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
    if wire.trace_root:
        for key, value in trace_tags_of(wire).items():
            attributes[_TRACE_TAG_ATTRIBUTE + key] = dumps(value)
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
    otel_span = ReadableSpan(
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
    return Span(otel_span)


def trace_tags_of(wire) -> dict:
    """The tags of the trace a root span tuple starts: its name, program and kind."""
    return {
        "mlflow.traceName": wire.name,
        PROGRAM_TAG: wire.module_name or wire.module,
        KIND_TAG: wire.trace_kind,
    }


def root_trace_info_of(wire, experiment_id, run_id):
    """The finished ``TraceInfo`` of a root span tuple, with ``mlflow.sourceRun``."""
    from mlflow.entities.trace_info import TraceInfo
    from mlflow.entities.trace_location import TraceLocation
    from mlflow.entities.trace_state import TraceState
    from mlflow.tracing.constant import TraceMetadataKey

    failed = wire.error is not None or bool(wire.lm_error)
    return TraceInfo(
        trace_id=wire.trace_id,
        trace_location=TraceLocation.from_experiment_id(experiment_id),
        request_time=wire.start_ns // 1_000_000,
        execution_duration=(wire.end_ns - wire.start_ns) // 1_000_000,
        state=TraceState.ERROR if failed else TraceState.OK,
        trace_metadata={TraceMetadataKey.SOURCE_RUN: run_id},
        tags=trace_tags_of(wire),
    )

"""A finished ``CallRecord`` -> a ``Wire``: the plain, picklable form of one span.

``record_to_wire`` runs on the exporter thread: payloads are serialised, redacted and
truncated here (``export.payloads``) in the shape of ``export.span_io`` (the call's own
data; LM spans get OpenAI-style ``messages``/``choices``),
an exception becomes ``(type name, message, stack)``. What the app set through MLflow's
APIs (``tracing.mlflow_view``: a call's span attributes, the trace's tags and metadata) and
what ``trace_context`` stamped on the trace travel with it, masked the same way; a
streamed LM answer's usage is counted here (``tracing.streams``). A ``Wire`` holds only
strings, numbers, tuples and plain dicts, so it crosses to the exporter process as a
pickle, where ``store.mlflow_spans`` builds the MLflow span from it.
"""

from __future__ import annotations

import json
import traceback
from typing import NamedTuple

from synalinks_obs.export import span_io
from synalinks_obs.export.payloads import mask_text, masker_for, materialize, remember, to_json
from synalinks_obs.masking import Policy, policy_for
from synalinks_obs.tracing import mlflow_view, streams
from synalinks_obs.tracing.records import call_id_of


class Wire(NamedTuple):
    """One finished span, ready to write."""

    otel_trace_id: int
    trace_id: str
    span_id: int
    parent_span_id: int | None
    name: str
    start_ns: int
    end_ns: int
    span_type: str
    call_id: int
    parent_call_id: int | None
    module: str  # class name
    module_name: str
    description: str
    symbolic: bool
    cost: float
    usage: dict | None  # input/output/total tokens, cost (numbers only)
    model: str | None
    inputs: str | None  # JSON text
    outputs: str | None  # JSON text
    error: tuple | None  # (exception type name, message, stack)
    lm_error: str | None  # an LM call that reported failure without raising
    trace_root: bool  # the root of a trace of ours (not of a joined MLflow trace)
    foreign: bool  # part of a user's MLflow trace we joined
    trace_kind: str = "call"  # call / build / training / evaluation (a tag of the root)
    attributes: dict | None = None  # {key: JSON text} the app set on the span through MLflow
    trace_info: dict | None = None  # the root's: tags, metadata... (``trace_info_of``)
    first_token_ns: int | None = None  # a streamed LM answer's first token


_USAGE_KEYS = ("input_tokens", "output_tokens", "total_tokens", "cost")


def _plain_usage(usage):
    if not isinstance(usage, dict):
        return None, None
    plain = {}
    for key in _USAGE_KEYS:
        value = usage.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            plain[key] = value
    error = usage.get("error")
    return plain, (str(error) if error else None)


def _payloads(record, settings, redactor, lm_error):
    """The JSON text of a record's inputs and outputs (None when not captured)."""
    if not settings.capture_payloads:
        return None, None
    max_chars = settings.max_payload_chars
    inputs = span_io.call_inputs(record.inputs, record.kwargs)
    outputs = None if record.error is not None else record.outputs
    if record.span_type == "CHAT_MODEL" and not record.symbolic:
        messages = span_io.chat_messages(materialize(record.inputs, redactor))
        if messages is not None:
            inputs = span_io.chat_request(messages, record.kwargs)
        if record.error is None and record.outputs is not None and not lm_error:
            outputs = span_io.chat_response(materialize(record.outputs, redactor))
    inputs_json = to_json(inputs, max_chars, redactor)
    outputs_json = to_json(outputs, max_chars, redactor) if record.error is None else None
    return inputs_json, outputs_json


def _safe_str(error: BaseException) -> str:
    try:
        return str(error)
    except Exception:
        return f"<{type(error).__name__} with an unprintable message>"


def record_to_wire(record, settings, redactor=None) -> Wire:
    """The ``Wire`` of a finished record.

    ``redactor``: the ``masking.Policy`` of ``settings`` (made when not given). Every
    text stored goes through the record's ``Masker`` (``export.payloads.masker_for``):
    payloads, LM messages and choices, the exception's message and stack, the LM error.
    """
    policy = redactor if isinstance(redactor, Policy) else policy_for(settings)
    masker = masker_for(record, policy)
    trace = record.trace
    if record.stream is not None:
        streams.settle(record)
    usage, lm_error = _plain_usage(record.usage)
    inputs_json, outputs_json = _payloads(record, settings, masker, lm_error)
    error = record.error
    error_info = None
    if error is not None:
        try:
            stack = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        except Exception:
            stack = ""
        error_info = (type(error).__name__, mask_text(_safe_str(error), masker), mask_text(stack[-8000:], masker))
    lm_error = mask_text(lm_error, masker)
    attributes = _user_attributes(record, masker) if record.shadow is not None else None
    trace_root = record.parent_span_id is None and not trace.foreign
    trace_info = None
    if trace_root:
        trace_info = trace_info_of(trace, masker)
        if trace.mlflow_info is not None:
            mlflow_view.write_theirs_first(trace)
    remember(record, masker)
    module_class, module_name, description, model = record.described()
    return Wire(
        trace.otel_trace_id,
        trace.trace_id,
        record.span_id,
        record.parent_span_id,
        f"{module_class}:{module_name}" if module_name else module_class,
        record.start_ns,
        record.end_ns,
        record.span_type,
        call_id_of(record),
        record.parent_call_id,
        module_class,
        module_name,
        description,
        bool(record.symbolic),
        float(record.cost),
        usage,
        model,
        inputs_json,
        outputs_json,
        error_info,
        lm_error,
        trace_root,
        bool(trace.foreign),
        trace.kind,
        attributes,
        trace_info,
        record.first_token_ns,
    )


def _user_attributes(record, masker) -> dict | None:
    """The span attributes the app set through MLflow (``tracing.mlflow_view``), masked."""
    found = mlflow_view.user_attributes(record)
    if not found:
        return None
    masked = {}
    for key, text in found.items():
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        masked[key] = json.dumps(materialize({key: value}, masker)[key], default=str)
    return masked


def trace_info_of(trace, masker) -> dict | None:
    """What a root's trace carries besides its spans: the tags and metadata stamped on it
    (``trace_context``, ``mlflow.tracing.context``), then what the app set through
    MLflow's current-trace APIs while it ran (those win), masked; None when nothing."""
    tags, metadata = {}, {}
    if trace.stamps is not None:
        tags.update(trace.stamps[0] or {})
        metadata.update(trace.stamps[1] or {})
    info = {}
    found = trace.mlflow_info
    if found is not None:
        tags.update(found.get("tags") or {})
        metadata.update(found.get("metadata") or {})
        for key in ("client_request_id", "request_preview", "response_preview", "state"):
            if found.get(key) is not None:
                info[key] = found[key]
        if found.get("assessments"):
            info["assessments"] = materialize(list(found["assessments"]), masker)
    if tags:
        info["tags"] = {str(k): str(v) for k, v in materialize(tags, masker).items()}
    if metadata:
        info["metadata"] = {str(k): str(v) for k, v in materialize(metadata, masker).items()}
    for key in ("request_preview", "response_preview"):
        if key in info:
            info[key] = mask_text(info[key], masker)
    return info or None

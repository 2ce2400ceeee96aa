"""The common module call in two function calls: a child of the current call, traced.

Most spans are calls made inside another traced call of the same sampled trace, on a
module with no Monitor hook, with one data model in and out, while MLflow's context only
shows our calls (``context.MlflowContext.lazy``). ``open_child`` opens and enters the
record of such a call and ``close_child`` closes and hands it over, each in one frame:
the general path (``patching.module_call._start``/``_finish``: ``records.begin``,
``context.enter``/``leave``, ``Tracer.end``) makes about a dozen function calls a span,
and inside an app, where every call of ours runs with cold caches, each costs what the
work in it costs (benchmarks/overhead.py, docs/benchmarks.md). Whatever is not that
case gets None / False here and takes the general path, which gives the same record.
Like ``context.enter``/``leave`` in MLflow's lazy mode, these only set and reset
``CURRENT``. Never raise: an error of ours is reported and the call goes on.
"""

from __future__ import annotations

import time

from synalinks_obs import reporting
from synalinks_obs.compat.synalinks import MODULE_HOOKS
from synalinks_obs.runtime import RUNTIME
from synalinks_obs.tracing import capture
from synalinks_obs.tracing.context import CONTEXTS, CURRENT
from synalinks_obs.tracing.records import IDS, CallRecord
from synalinks_obs.tracing.routing import HOOK_KINDS, UNKNOWN, hook_kind
from synalinks_obs.tracing.span_types import SPAN_TYPES

_GENERAL_SPAN_TYPES = (None, "CHAT_MODEL", "EMBEDDING")  # LM calls read usage; unknown classes
_KEEP, _JSON = capture.KEEP, capture.JSON
_CLASSES = capture.CLASSES


def open_child(module, args, kwargs):
    """The entered record of a call inside the current call of its trace, or None (the
    general path decides, see the module docstring)."""
    try:
        parent = CURRENT.get()
        if parent is None or RUNTIME.tracer is None:
            return None
        mlflow_context = CONTEXTS.mlflow
        now = mlflow_context.current_context()
        trace = parent.trace
        # (the parent is current in MLflow's context too; not a subclass's super().__call__)
        if parent.base_context is not now or parent.module is module or not trace.sampled:
            return None
        if len(args) != 1 or not mlflow_context.lazy or not trace.tracer.capture_payloads:
            return None
        span_type = SPAN_TYPES.get(type(module))
        if span_type in _GENERAL_SPAN_TYPES:
            return None
        if RUNTIME.route is not None:  # a Monitor hook on this module routes it
            # (compat.synalinks.module_hooks, inline)
            for hook in getattr(module.__dict__.get(MODULE_HOOKS), "hooks", None) or ():
                kind = HOOK_KINDS.get(type(hook), UNKNOWN)
                if kind is UNKNOWN:  # a hook class met for the first time
                    kind = hook_kind(hook)
                if kind is not None:
                    return None
        kinds = _CLASSES.kinds
        arg = args[0]
        kind = kinds.get(type(arg))
        if kind is _KEEP:
            inputs = args
        elif kind is _JSON:
            inputs = [arg.get_json()]
        else:
            return None
        if kwargs:
            for value in kwargs.values():
                if kinds.get(type(value)) is not _KEEP:
                    return None
        else:
            kwargs = None
        record = CallRecord(trace, parent, module)
        record.base_context = now
        record.parent_span_id = parent.span_id
        record.span_id = IDS.rng.getrandbits(64) or 1
        record.span_type = span_type
        record.inputs = inputs
        record.kwargs = kwargs
        record.symbolic = False
        record.start_ns = time.time_ns()
        record.token = CURRENT.set(record)  # last: nothing can fail after it
        return record
    except Exception as exc:
        reporting.internal_error("span start", exc)
        return None


def close_child(record, outputs) -> bool:
    """Close a record ``open_child`` opened, after its call returned ``outputs``, and hand
    it over; False (nothing done) when MLflow asked about the call: the general path
    ends it then."""
    if record.shadow is not None:
        return False
    try:
        CURRENT.reset(record.token)
        record.token = None
        record.shown_context = None  # (see context.leave)
        record.end_ns = time.time_ns()
        kind = _CLASSES.kinds.get(type(outputs))
        if kind is _KEEP:
            record.outputs = outputs
        elif kind is _JSON:
            record.outputs = outputs.get_json()
        else:
            record.outputs = capture.capture_output(outputs)
        cost = record.cost
        if cost:
            record.parent.cost += cost
        record.trace.tracer.exporter.submit(record)
    except Exception as exc:
        reporting.internal_error("span end", exc)
    return True

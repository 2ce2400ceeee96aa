"""The shape of a span's inputs and outputs: the call's own data, as MLflow shows it.

MLflow's Traces list previews the root span's inputs and outputs (the *Request* and
*Response* columns), so they hold the call's data and nothing around it: one positional
argument is stored as itself (a data model as its JSON, e.g. ``{"query": "..."}``),
several as a list; keyword arguments appear only when the call had some, beside the
positional data under ``inputs`` (the name Synalinks gives a module's data argument in
``call(inputs, training=False)``): ``{"inputs": {...}, "training": true}``.
``training=False`` (or None), which a program passes to every module it calls outside
``fit()``, is the default call mode, not data: it is left out. Outputs are the returned
value itself. LM calls keep the OpenAI chat shape MLflow's chat view reads:
``{"messages": [...], <keyword arguments>}`` in, ``{"choices": [...]}`` out.

The values are still the captured ones (``tracing.capture``): ``export.payloads`` turns
them into JSON text, with redaction and truncation.
"""

from __future__ import annotations

import json

DATA_KEY = "inputs"  # the positional data when keyword arguments sit beside it
_DEFAULT_MODE = ("training", (False, None))  # Module.call's default call mode: not shown


def _shown(kwargs):
    """The keyword arguments worth showing (without ``training=False``)."""
    if not kwargs:
        return {}
    key, defaults = _DEFAULT_MODE
    if key in kwargs and any(kwargs[key] is value for value in defaults):
        return {k: v for k, v in kwargs.items() if k != key}
    return kwargs


def positional(args):
    """The positional arguments of a call: the only one itself, several as a list (or the
    call's own tuple, see ``tracing.capture``)."""
    if isinstance(args, (list, tuple)) and len(args) == 1:
        return args[0]
    return args


def call_inputs(args, kwargs):
    """A call's inputs: its positional data, with its keyword arguments when it has any."""
    data = positional(args if args is not None else [])
    kwargs = _shown(kwargs)
    if not kwargs:
        return data
    if not args:
        return dict(kwargs)
    if DATA_KEY in kwargs:  # cannot sit beside the data under the same name
        return {"args": data, "kwargs": dict(kwargs)}
    return {DATA_KEY: data, **kwargs}


def chat_messages(materialized_args):
    """The OpenAI-style ``messages`` of an LM call's materialised positional arguments
    (its one argument is a ``ChatMessages``), or None."""
    if not isinstance(materialized_args, list) or len(materialized_args) != 1:
        return None
    first = materialized_args[0]
    messages = first.get("messages") if isinstance(first, dict) else None
    return messages if isinstance(messages, list) else None


def chat_request(messages, kwargs):
    """An LM call's inputs as an OpenAI chat request: the messages, then the keyword
    arguments (``schema``, ``tools``, ``streaming``...) as request parameters."""
    request = {"messages": messages}
    for key, value in _shown(kwargs).items():
        request.setdefault(key, value)
    return request


def chat_response(content):
    """An LM call's materialised result as an OpenAI chat response (``choices``)."""
    message = (
        content
        if isinstance(content, dict) and "role" in content
        else {"role": "assistant", "content": json.dumps(content, default=str)}
    )
    return {"choices": [{"index": 0, "message": message}]}

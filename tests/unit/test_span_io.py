"""The shape of span inputs/outputs (export/span_io.py), on captured values.

The end-to-end reading (through MLflow's client, the previews of the Traces list) is in
tests/integration/test_trace_listing.py; here the corner cases a program rarely makes.
"""

from __future__ import annotations

import json

from synalinks_obs.export import span_io


def test_call_inputs_shapes():
    q, r = {"question": "q"}, {"question": "r"}
    assert span_io.call_inputs([q], None) == q
    assert span_io.call_inputs([q, r], {}) == [q, r]
    assert span_io.call_inputs([], None) == []
    assert span_io.call_inputs(None, None) == []
    assert span_io.call_inputs([q], {"training": True}) == {"inputs": q, "training": True}
    assert span_io.call_inputs([q], {"training": False}) == q  # the default mode
    assert span_io.call_inputs([q], {"training": None, "k": 1}) == {"inputs": q, "k": 1}
    assert span_io.call_inputs([q, r], {"k": 1}) == {"inputs": [q, r], "k": 1}
    assert span_io.call_inputs([], {"inputs": q}) == {"inputs": q}
    # A keyword argument named like the data's key: both kept, apart.
    assert span_io.call_inputs([q], {"inputs": r}) == {"args": q, "kwargs": {"inputs": r}}


def test_chat_shapes():
    messages = [{"role": "user", "content": "hi"}]
    assert span_io.chat_messages([{"messages": messages}]) == messages
    assert span_io.chat_messages([{"messages": "no list"}]) is None
    assert span_io.chat_messages([{"messages": messages}, {"x": 1}]) is None
    request = span_io.chat_request(messages, {"schema": {"type": "object"}, "messages": "other"})
    assert request == {"messages": messages, "schema": {"type": "object"}}
    assert span_io.chat_request(messages, {"training": False}) == {"messages": messages}
    message = {"role": "assistant", "content": "hello"}
    assert span_io.chat_response(message) == {"choices": [{"index": 0, "message": message}]}
    (choice,) = span_io.chat_response({"answer": "42"})["choices"]
    assert choice["message"]["role"] == "assistant"
    assert json.loads(choice["message"]["content"]) == {"answer": "42"}

"""Payload handling in isolation (no MLflow store, no Synalinks program).

What reaches a span's ``mlflow.spanInputs`` / ``mlflow.spanOutputs`` goes through
``synalinks_obs.tracing.capture`` and ``synalinks_obs.export.payloads``: capture on the calling thread (references only), then on
the exporter thread data models turned into JSON, secret-looking keys redacted, the text
truncated past the limit with a marker, and nothing ever raising. The end-to-end
versions (what lands in the store, and the settings that drive it) are in
``test_reliability.py``.
"""

from __future__ import annotations

import json

import pytest

from synalinks_obs.export.payloads import materialize, to_json, truncate
from synalinks_obs.redaction import REDACTED, Redactor
from synalinks_obs.settings import DEFAULT_REDACT_KEYS
from synalinks_obs.tracing import capture as payloads

DEFAULT = Redactor(DEFAULT_REDACT_KEYS)


@pytest.mark.parametrize(
    "key",
    [
        "api_key", "API_KEY", "openai_api_key", "apiKey", "x-api-key", "X-Api-Key",
        "authorization", "Authorization", "proxy-authorization", "password", "db_password",
        "token", "access_token", "authToken", "X-Auth-Token", "refresh_token",
        "secret", "client_secret", "apikey",
    ],
)
def test_secret_looking_keys_are_redacted(key):
    assert DEFAULT.is_secret(key)
    assert materialize({key: "sk-123", "keep": 1}, DEFAULT) == {key: REDACTED, "keep": 1}


@pytest.mark.parametrize(
    "key, value",
    [("max_tokens", 256), ("input_tokens", 12), ("total_tokens", 3), ("token_count", 7),
     ("tokenizer", "bpe"), ("keyword", "x"), ("author", "Ada"), ("passage", "text"),
     ("authors", ["Ada"]), ("secretary", "Bob")],
)
def test_ordinary_keys_are_kept(key, value):
    assert not DEFAULT.is_secret(key, value)
    assert materialize({key: value}, DEFAULT) == {key: value}


def test_redaction_reaches_nested_values_and_lists():
    value = {
        "messages": [{"role": "user", "content": "hi", "api_key": "sk-1"}],
        "config": {"headers": {"Authorization": "Bearer x", "Accept": "json"}},
        "password": {"nested": "whole value replaced"},
    }
    assert materialize(value, DEFAULT) == {
        "messages": [{"role": "user", "content": "hi", "api_key": REDACTED}],
        "config": {"headers": {"Authorization": REDACTED, "Accept": "json"}},
        "password": REDACTED,
    }
    # the captured value itself is never modified
    assert value["config"]["headers"]["Authorization"] == "Bearer x"


def test_redaction_is_configurable():
    custom = Redactor(["ssn", "pin_code"])
    assert materialize({"ssn": "1", "pinCode": "2", "api_key": "3"}, custom) == {
        "ssn": REDACTED, "pinCode": REDACTED, "api_key": "3",
    }
    assert materialize({"api_key": "3"}, Redactor([])) == {"api_key": "3"}


def test_truncation_marker_and_limit():
    text = json.dumps({"text": "x" * 500})
    short = truncate(text, 100)
    kept = json.loads(short)  # still valid JSON: a string
    assert kept == text[:100] + f"...[truncated {len(text) - 100} chars]"
    assert truncate(text, 0) == text  # 0: no limit
    assert truncate(text, len(text)) == text


def test_to_json_redacts_then_truncates():
    out = to_json({"data": [{"api_key": "sk-1", "text": "y" * 1000}]}, 50, DEFAULT_REDACT_KEYS)
    kept = json.loads(out)
    assert isinstance(kept, str) and kept.endswith("chars]") and "sk-1" not in kept
    assert kept.startswith('{"data":[{"api_key":"[REDACTED]"')


def test_to_json_never_raises():
    class NoRepr:
        def __repr__(self):
            raise RuntimeError("broken repr")

    class BadJson:
        def get_json(self):
            raise ValueError("cannot")

    circular: dict = {}
    circular["self"] = circular
    assert json.loads(to_json({"a": NoRepr()}, 0, ())) == {"a": "<NoRepr>"}
    assert json.loads(to_json({"a": BadJson()}, 0, ())) == {
        "a": "<BadJson: get_json failed: ValueError>"
    }
    assert json.loads(to_json({1: {2: 3}}, 0, ())) == {"1": {"2": 3}}  # non-string keys
    assert isinstance(json.loads(to_json(circular, 0, ())), dict)  # depth-capped, valid
    assert json.loads(to_json({"big": 2**100}, 0, ())) == {"big": 2**100}  # orjson's limit


def test_capture_keeps_references_and_defers_data_models():
    import synalinks

    class Q(synalinks.DataModel):
        question: str
        api_key: str = "sk-test"

    q = Q(question="why?")
    captured, symbolic = payloads.capture_args((q, [q], "text", 3))
    assert not symbolic
    assert captured[0] is q  # no model_dump on the calling thread
    assert captured[2:] == ["text", 3]
    assert materialize(captured, DEFAULT) == [
        {"question": "why?", "api_key": REDACTED},
        [{"question": "why?", "api_key": REDACTED}],
        "text",
        3,
    ]
    symbolic_input = synalinks.Input(data_model=Q)
    schema, symbolic = payloads.capture_value(symbolic_input)
    assert symbolic and schema["properties"]["question"]["type"] == "string"
    assert payloads.capture_kwargs({"obj": object(), "n": 1}) == {"obj": "<object>", "n": 1}

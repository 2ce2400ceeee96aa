"""Tests of what the examples' offline LM says (``examples/_offline_lm.py``, the server the
`fake_llm` fixture runs too): the fixed values the examples' fields get, the answer that
reports a tool's result, and `language_model()` choosing the configured provider or the
process's one offline server."""

import asyncio
import json

import pytest
from _offline_lm import CANNED, OFFLINE_MODEL, OfflineServer, example_fields, examples_server, language_model
from test_fake_llm import USER, post

CALCULATE_TOOL = {
    "type": "function",
    "function": {
        "name": "calculate",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}
ANSWER_SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "schema": {
            "type": "object",
            "properties": {"thinking": {"type": "string"}, "answer": {"type": "string"}, "sources": {"type": "string"}},
        },
    },
}


@pytest.fixture
def examples_lm():
    with OfflineServer(fields=example_fields) as server:
        yield server


def test_fields_of_the_examples_get_their_fixed_values(examples_lm):
    status, body = post(examples_lm, {"model": "gpt-4o-mini", "messages": [USER], "response_format": ANSWER_SCHEMA})

    assert status == 200
    assert json.loads(body["choices"][0]["message"]["content"]) == {
        "thinking": CANNED["thinking"],
        "answer": "Paris.",
        "sources": "Example sources.",  # a field the examples do not name: generated text
    }


def test_agent_answer_reports_what_the_tool_computed(examples_lm):
    request = {"model": "gpt-4o-mini", "messages": [USER], "tools": [CALCULATE_TOOL]}
    _, body = post(examples_lm, request)
    (call,) = body["choices"][0]["message"]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == {"expression": "152648 + 485"}

    tool_result = {"role": "tool", "tool_call_id": call["id"], "content": json.dumps({"result": 153133.0})}
    conversation = [USER, body["choices"][0]["message"], tool_result]
    _, body = post(examples_lm, {"model": "gpt-4o-mini", "messages": conversation, "response_format": ANSWER_SCHEMA})

    assert json.loads(body["choices"][0]["message"]["content"])["answer"] == "The result is 153133.0."
    assert examples_lm.request_count == 2


def test_fake_llm_has_no_fixed_values(fake_llm):
    _, body = post(fake_llm, {"model": "gpt-4o-mini", "messages": [USER], "response_format": ANSWER_SCHEMA})

    assert json.loads(body["choices"][0]["message"]["content"])["answer"] == "Example answer."


def test_language_model_uses_the_configured_provider(monkeypatch):
    monkeypatch.setenv("SYNALINKS_EXAMPLE_MODEL", "anthropic/claude-sonnet-4-20250514")
    monkeypatch.setenv("SYNALINKS_EXAMPLE_API_BASE", "http://127.0.0.1:9/v1")

    lm = language_model()

    assert (lm.model, lm.api_base) == ("anthropic/claude-sonnet-4-20250514", "http://127.0.0.1:9/v1")


def test_language_model_offline_answers_a_generator(monkeypatch):
    """The examples' offline path in process; the shared server stays up for this worker."""
    import synalinks

    monkeypatch.delenv("SYNALINKS_EXAMPLE_MODEL", raising=False)

    class Question(synalinks.DataModel):
        question: str

    class Answer(synalinks.DataModel):
        answer: str

    lm = language_model()
    assert (lm.model, lm.api_base) == (OFFLINE_MODEL, examples_server().base_url)
    assert examples_server() is examples_server()
    result = asyncio.run(synalinks.Generator(data_model=Answer, language_model=lm)(Question(question="Capital?")))

    assert result.get("answer") == "Paris."
    assert lm.last_call_cost > 0

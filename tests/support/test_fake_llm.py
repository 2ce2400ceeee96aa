"""Tests of the test infrastructure: the fake LLM server, the `lm` fixtures
driving real Synalinks programs through litellm, and the MLflow server
fixtures. If these fail, every other test's verdict is meaningless."""

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
from typing import Literal, Optional

import jsonschema
import pydantic
import pytest
from conftest import SYNALINKS_09
from fake_llm import instance_from_schema

# -- schema-driven generation -------------------------------------------------


class Address(pydantic.BaseModel):
    street: str
    zip_code: Optional[str] = None


class Person(pydantic.BaseModel):
    full_name: str
    age: int = pydantic.Field(ge=0, le=150)
    height_m: float = pydantic.Field(gt=0.3)
    is_active: bool
    role: Literal["admin", "user"]
    address: Address
    previous_addresses: list[Address]
    nickname: Optional[str] = None
    tags: list[str] = pydantic.Field(min_length=2)
    scores: dict[str, int] = {}


HAND_WRITTEN_SCHEMAS = [
    {"type": "string", "minLength": 40, "maxLength": 50},
    {"type": ["integer", "null"], "minimum": 100},
    {"type": "number", "exclusiveMaximum": 0},
    {"const": "fixed"},
    {"enum": [3, 4]},
    {"oneOf": [{"type": "null"}, {"type": "boolean"}]},
    {"type": "array", "prefixItems": [{"type": "integer"}], "items": False},
    {
        "type": "object",
        "properties": {"when": {"type": "string", "format": "date-time"}},
        "required": ["when"],
        "additionalProperties": False,
    },
    {
        "$ref": "#/definitions/node",
        "definitions": {
            "node": {
                "type": "object",
                "properties": {"label": {"type": "string"}},
                "required": ["label"],
            }
        },
    },
    {
        "allOf": [
            {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
            {"type": "object", "properties": {"b": {"type": "string"}}, "required": ["b"]},
        ]
    },
]


@pytest.mark.parametrize(
    "schema", HAND_WRITTEN_SCHEMAS, ids=lambda schema: json.dumps(schema)[:40]
)
def test_generated_instance_validates(schema):
    jsonschema.validate(instance_from_schema(schema), schema)


def test_generated_instance_validates_pydantic_schema():
    schema = Person.model_json_schema()
    instance = instance_from_schema(schema)
    jsonschema.validate(instance, schema)
    person = Person.model_validate(instance)
    assert person.full_name == "Example full name."
    assert person.address.street == "Example street."
    assert len(person.tags) == 2


def test_generation_is_deterministic():
    schema = Person.model_json_schema()
    assert instance_from_schema(schema) == instance_from_schema(schema)


# -- the HTTP server ----------------------------------------------------------


def post(fake, payload):
    request = urllib.request.Request(
        f"{fake.base_url}/chat/completions",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}
USER = {"role": "user", "content": "Weather in Paris?"}


def test_structured_answer_and_usage(fake_llm):
    schema = Person.model_json_schema()
    status, body = post(
        fake_llm,
        {
            "model": "gpt-4o-mini",
            "messages": [USER],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "out", "strict": True, "schema": schema},
            },
        },
    )
    assert status == 200
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o-mini"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    jsonschema.validate(json.loads(choice["message"]["content"]), schema)
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_tool_call_then_final_answer(fake_llm):
    status, body = post(
        fake_llm, {"model": "gpt-4o-mini", "messages": [USER], "tools": [WEATHER_TOOL]}
    )
    assert status == 200
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Example city.", "days": 42}

    tool_result = {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}
    conversation = [USER, choice["message"], tool_result]
    status, body = post(
        fake_llm,
        {"model": "gpt-4o-mini", "messages": conversation, "tools": [WEATHER_TOOL]},
    )
    message = body["choices"][0]["message"]
    assert status == 200
    assert "tool_calls" not in message
    assert message["content"] == "Done, after 1 tool result(s)."


def test_tool_choice_none_forces_an_answer(fake_llm):
    _, body = post(
        fake_llm,
        {
            "model": "gpt-4o-mini",
            "messages": [USER],
            "tools": [WEATHER_TOOL],
            "tool_choice": "none",
        },
    )
    assert body["choices"][0]["finish_reason"] == "stop"


def test_injected_errors_then_recovery(fake_llm):
    fake_llm.inject_errors(2)
    statuses = [post(fake_llm, {"model": "m", "messages": [USER]})[0] for _ in range(3)]
    assert statuses == [500, 500, 200]
    assert fake_llm.request_count == 3


def test_injected_latency(fake_llm):
    fake_llm.inject_latency(0.3)
    start = time.monotonic()
    post(fake_llm, {"model": "m", "messages": [USER]})
    assert time.monotonic() - start >= 0.3


def test_reset_clears_faults_and_log(fake_llm):
    fake_llm.inject_errors()
    assert post(fake_llm, {"model": "m", "messages": [USER]})[0] == 500
    fake_llm.reset()
    assert fake_llm.request_count == 0
    assert post(fake_llm, {"model": "m", "messages": [USER]})[0] == 200


def test_models_endpoint(fake_llm):
    with urllib.request.urlopen(f"{fake_llm.base_url}/models", timeout=10) as reply:
        body = json.loads(reply.read())
    assert "gpt-4o-mini" in [model["id"] for model in body["data"]]


# -- Synalinks through litellm ----------------------------------------------


@pytest.fixture(scope="module")
def data_models():
    import synalinks

    class Query(synalinks.DataModel):
        query: str = synalinks.Field(description="The user query")

    class Answer(synalinks.DataModel):
        thinking: str = synalinks.Field(description="Step by step thinking")
        answer: str = synalinks.Field(description="The final answer")
        confidence: float = synalinks.Field(description="Confidence in [0, 1]")
        sources: list[str] = synalinks.Field(description="Sources used")

    return Query, Answer


async def run_generator(lm, data_models):
    """Build and run a one-Generator program on a query."""
    import synalinks

    query_model, answer_model = data_models
    inputs = synalinks.Input(data_model=query_model)
    outputs = await synalinks.Generator(data_model=answer_model, language_model=lm)(
        inputs
    )
    program = synalinks.Program(inputs=inputs, outputs=outputs, name="qa")
    return await program(query_model(query="What is 2 + 2?"))


def expected_cost(prompt_tokens, completion_tokens):
    """What litellm's bundled price table charges for gpt-4o-mini."""
    import litellm

    prices = litellm.model_cost["gpt-4o-mini"]
    return (
        prompt_tokens * prices["input_cost_per_token"]
        + completion_tokens * prices["output_cost_per_token"]
    )


def test_generator_program_end_to_end(lm, fake_llm, data_models):
    result = asyncio.run(run_generator(lm, data_models))

    _, answer_model = data_models
    assert result is not None
    jsonschema.validate(result.get_json(), answer_model.get_schema())
    assert result.get("answer") == "Example answer."
    assert fake_llm.request_count == 1
    (request,) = fake_llm.requests
    assert request["model"] == "gpt-4o-mini"
    assert request["response_format"]["type"] == "json_schema"
    assert lm.cumulated_calls == 1
    assert lm.last_call_cost > 0
    assert lm.last_call_cost == pytest.approx(
        expected_cost(lm.last_call_prompt_tokens, lm.last_call_completion_tokens)
    )


def test_call_usage_reports_cost_in_the_calling_task(lm, data_models):
    """`current_call_usage()` is a ContextVar set in the task that awaited the
    LM: visible after a direct module call, not after `await program(...)`
    (a Program runs its nodes in child tasks via `asyncio.gather`)."""
    import synalinks

    if SYNALINKS_09:  # 0.9.x has the function only through synalinks-obs' backport
        from synalinks_obs.patching import lm_usage
        from synalinks_obs.runtime import RUNTIME

        lm_usage.install(RUNTIME.patches)
    from synalinks.src.modules.language_models.language_model import current_call_usage

    query_model, answer_model = data_models

    async def main():
        generator = synalinks.Generator(data_model=answer_model, language_model=lm)
        result = await generator(query_model(query="What is 2 + 2?"))
        return result, current_call_usage()

    result, usage = asyncio.run(main())

    assert result.get("answer") == "Example answer."
    if not SYNALINKS_09:  # 0.9.x (synalinks-obs' backport) has no finish_reason
        assert usage["finish_reason"] == "stop"
    assert usage["cost"] > 0
    assert usage["cost"] == pytest.approx(
        expected_cost(usage["input_tokens"], usage["output_tokens"])
    )


def test_lm_call_fails_on_injected_error(lm_factory, fake_llm, data_models):
    lm = lm_factory(retry=1, max_retries=0)
    fake_llm.inject_errors()

    with pytest.warns(UserWarning, match="injected failure"):
        result = asyncio.run(run_generator(lm, data_models))

    assert result is None
    assert fake_llm.request_count == 1
    assert lm.cumulated_failed_calls == 1
    assert lm.cumulated_calls == 0


def test_lm_call_recovers_after_transient_error(lm_factory, fake_llm, data_models):
    lm = lm_factory(retry=2, max_retries=0)
    fake_llm.inject_errors(1)

    with pytest.warns(UserWarning, match="injected failure"):
        result = asyncio.run(run_generator(lm, data_models))

    assert result is not None
    assert lm.last_call_cost > 0
    assert fake_llm.request_count == 2
    assert lm.cumulated_failed_calls == 0


def test_function_calling_agent_runs_to_completion(lm, fake_llm, data_models):
    import synalinks

    query_model, answer_model = data_models
    received = []

    async def calculate(expression: str):
        """Calculate the result of a mathematical expression.

        Args:
            expression (str): The mathematical expression to calculate.
        """
        received.append(expression)
        return {"result": 4}

    async def main():
        inputs = synalinks.Input(data_model=query_model)
        outputs = await synalinks.FunctionCallingAgent(
            data_model=answer_model,
            tools=[synalinks.Tool(calculate)],
            language_model=lm,
            max_iterations=3,
        )(inputs)
        agent = synalinks.Program(inputs=inputs, outputs=outputs, name="math_agent")
        return await agent(query_model(query="What is 2 + 2?"))

    result = asyncio.run(main())

    assert received == ["Example expression."]
    assert result.get("answer") == "Example answer."
    roles = [message["role"] for message in result.get("messages")]
    assert roles == ["assistant", "tool"]
    # tool call, answer after the tool result, structured final answer
    assert fake_llm.request_count == 3
    first, second, final = fake_llm.requests
    assert first["tools"][0]["function"]["name"] == "calculate"
    assert [m["role"] for m in second["messages"]][-2:] == ["assistant", "tool"]
    assert "tools" not in final and "response_format" in final
    assert lm.cumulated_calls == 3
    assert lm.cumulated_cost > 0


# -- MLflow server fixtures ---------------------------------------------------


def test_mlflow_server_is_healthy_and_usable(mlflow_server):
    import mlflow

    with urllib.request.urlopen(f"{mlflow_server.uri}/health", timeout=10) as reply:
        assert reply.status == 200

    client = mlflow.MlflowClient(mlflow_server.uri)
    experiment_id = client.create_experiment("infra-smoke")
    experiment = client.get_experiment(experiment_id)
    assert experiment.name == "infra-smoke"
    assert experiment.artifact_location.startswith("mlflow-artifacts:/")

    run = client.create_run(experiment_id)
    client.log_text(run.info.run_id, "hello", "note.txt")
    stored = list(mlflow_server.artifacts_dir.rglob("note.txt"))
    assert [path.read_text() for path in stored] == ["hello"]


def test_mlflow_server_factory_custom_flags(mlflow_server_factory):
    import mlflow

    server = mlflow_server_factory("--no-serve-artifacts", "--workers", "1")
    assert "--serve-artifacts" not in server.args

    client = mlflow.MlflowClient(server.uri)
    experiment_id = client.create_experiment("no-proxy")
    location = client.get_experiment(experiment_id).artifact_location
    assert location.startswith(server.artifacts_dir.as_uri())

    group = server.pid
    server.stop()
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.killpg(group, 0)

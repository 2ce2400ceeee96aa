"""Our spans behave like MLflow's own for MLflow's APIs (issue 15), in process.

Each test enables synalinks-obs into its own sqlite store (also the app's MLflow tracking
URI), runs a real Synalinks program whose LM calls the loopback fake LLM answers, and reads
the traces back through MLflow's client:

- MLflow's autologgers (``mlflow.litellm.autolog()``, ``mlflow.openai.autolog()``,
  ``mlflow.autolog()``): their span is a child of our ``LanguageModel`` span, same trace,
  no warning, no extra trace, the trace's token/cost roll-up counted once (also in a real
  process under ``SYNALINKS_OBSERVABILITY=1``, the issue's report);
- MLflow's current-trace APIs inside a module's ``call`` (``get_current_active_span``,
  ``update_current_trace`` with tags, metadata, session and user, ``get_active_trace_id``,
  attributes set on the span) and ``mlflow.log_feedback`` on the trace after the call.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest
from traces import load_traces, render

SESSION = "mlflow.trace.session"
USER = "mlflow.trace.user"


@pytest.fixture
def synalinks():
    import synalinks as module

    return module


@pytest.fixture
def traced(sqlite_uri, request, monkeypatch):
    """Tracing on into a fresh sqlite store, the app's MLflow tracking URI and experiment
    too; yields ``read()`` of the landed traces."""
    import mlflow

    import synalinks_obs

    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri)
    experiment = f"exp_{request.node.name}"[:200]
    mlflow.tracing.reset()  # MLflow's tracer of an earlier test would keep that test's store
    synalinks_obs.enable(tracking_uri=sqlite_uri, experiment_name=experiment)
    mlflow.set_experiment(experiment)

    def read():
        assert synalinks_obs.flush(30), "spans were still queued after 30 s"
        return load_traces(sqlite_uri, experiment)

    yield read
    synalinks_obs.flush(30)
    synalinks_obs.disable()


@pytest.fixture
def autologgers():
    """Turns MLflow's autologgers off again after the test, leaving nothing behind:
    turning LiteLLM's off leaves MLflow's logger in LiteLLM's async callback lists (a
    later test's LM calls would still start LiteLLM traces), and MLflow remembers the
    flavors turned off (a later ``mlflow.autolog()`` would skip them)."""
    import mlflow
    from mlflow.utils.autologging_utils import AUTOLOGGING_INTEGRATIONS

    configured = {name: dict(config) for name, config in AUTOLOGGING_INTEGRATIONS.items()}
    yield mlflow
    for off in (
        lambda: mlflow.litellm.autolog(disable=True),
        lambda: mlflow.openai.autolog(disable=True),
        lambda: mlflow.autolog(disable=True),
    ):
        off()
    import litellm
    from litellm.integrations.mlflow import MlflowLogger
    from litellm.litellm_core_utils import litellm_logging

    for callbacks in (
        getattr(litellm, "_async_success_callback", None),
        getattr(litellm, "_async_failure_callback", None),
        getattr(litellm_logging, "_in_memory_loggers", None),  # (made again when re-enabled)
    ):
        if callbacks is not None:
            callbacks[:] = [cb for cb in callbacks if not isinstance(cb, MlflowLogger)]
    # as before the test: a flavor turned off here is not "explicitly disabled" for the
    # next test's mlflow.autolog()
    AUTOLOGGING_INTEGRATIONS.clear()
    AUTOLOGGING_INTEGRATIONS.update(configured)


def _qa(synalinks, lm, extra=None):
    class Question(synalinks.DataModel):
        question: str

    class Answer(synalinks.DataModel):
        answer: str

    async def build():
        inputs = synalinks.Input(data_model=Question)
        x = inputs if extra is None else await extra(inputs)
        outputs = await synalinks.Generator(data_model=Answer, language_model=lm, name="gen")(x)
        return synalinks.Program(inputs=inputs, outputs=outputs, name="qa")

    return Question, build


async def _wait_in_loop(predicate, timeout=20.0):
    """Keep the event loop turning until ``predicate()`` (LiteLLM reports its callback
    from a task of this loop, after the call returned)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def _stored_span_names(uri, trace_id):
    import mlflow

    try:
        trace = mlflow.MlflowClient(uri).get_trace(trace_id, display=False)
    except Exception:  # not written yet
        return set()
    return {span.name for span in trace.data.spans}


def _check_nested(traces, autolog_prefix):
    assert len(traces) == 1, [render(t) for t in traces]  # no extra trace
    (trace,) = traces
    spans = trace.data.spans
    lm_spans = [s for s in spans if s.attributes.get("synalinks.module") == "LanguageModel"]
    theirs = [s for s in spans if s.name.startswith(autolog_prefix)]
    assert len(lm_spans) == 1 and theirs, render(trace)
    for span in theirs:
        assert span.parent_id == lm_spans[0].span_id, render(trace)
        assert span.trace_id == trace.info.trace_id
    # Both spans know the usage; the trace's roll-up counts it once (ours, the ancestor).
    ours = lm_spans[0].attributes["mlflow.chat.tokenUsage"]
    assert any(s.attributes.get("mlflow.chat.tokenUsage") for s in theirs), render(trace)
    assert json.loads(trace.info.trace_metadata["mlflow.trace.tokenUsage"]) == ours
    cost = json.loads(trace.info.trace_metadata["mlflow.trace.cost"])["total_cost"]
    assert cost == pytest.approx(lm_spans[0].attributes["mlflow.llm.cost"]["total_cost"])
    root = [s for s in spans if s.parent_id is None][0]
    assert root.attributes["synalinks.cost"] == pytest.approx(cost)
    return trace


@pytest.mark.parametrize("flavor", ["litellm", "autolog"])
def test_litellm_autolog_span_nests_under_our_lm_span(traced, autologgers, synalinks, lm, capfd, sqlite_uri, flavor):
    mlflow = autologgers
    if flavor == "litellm":
        mlflow.litellm.autolog()
    else:
        mlflow.autolog()
    Question, build = _qa(synalinks, lm)

    async def main():
        program = await build()
        result = await program(Question(question="What is 2 + 2?"))
        trace_id = mlflow.get_last_active_trace_id()
        arrived = await _wait_in_loop(
            lambda: any(n.startswith("litellm-") for n in _stored_span_names(sqlite_uri, trace_id))
        )
        return result, arrived

    result, arrived = asyncio.run(main())
    assert result is not None and result.get("answer")
    assert arrived, "LiteLLM's MLflow span never reached the store"
    _check_nested(traced(), "litellm-")
    err = capfd.readouterr().err
    assert "Failed to start span" not in err and "set_span_type" not in err, err
    assert "WARNING mlflow" not in err, err


def test_openai_autolog_span_nests_under_the_module_that_calls_openai(
    traced, autologgers, synalinks, lm, fake_llm, capfd
):
    """LiteLLM does not call the OpenAI SDK method MLflow's OpenAI autologger patches (the
    LM spans get no OpenAI child, with or without synalinks-obs); a module calling the
    OpenAI SDK itself gets its OpenAI span as a child, and the LM calls stay as they were."""
    import openai

    mlflow = autologgers
    mlflow.openai.autolog()

    class Summary(synalinks.Module):
        """Calls the OpenAI SDK directly."""

        async def call(self, inputs, training=False):
            client = openai.AsyncOpenAI(base_url=fake_llm.base_url, api_key="sk-test")
            await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": inputs.get("question")}]
            )
            return inputs.clone()

        async def compute_output_spec(self, inputs, training=False):
            return inputs.clone()

    Question, build = _qa(synalinks, lm, extra=lambda x: Summary(name="summary")(x))

    async def main():
        program = await build()
        return await program(Question(question="What is 2 + 2?"))

    assert asyncio.run(main()) is not None
    traces = traced()
    assert len(traces) == 1, [render(t) for t in traces]
    (trace,) = traces
    (summary,) = [s for s in trace.data.spans if s.name == "Summary:summary"]
    (theirs,) = [s for s in trace.data.spans if s.name == "AsyncCompletions"]
    assert theirs.parent_id == summary.span_id and theirs.span_type == "CHAT_MODEL", render(trace)
    (ours,) = [s for s in trace.data.spans if s.attributes.get("synalinks.module") == "LanguageModel"]
    # Two different model calls: each counted once in the trace's roll-up.
    usage = json.loads(trace.info.trace_metadata["mlflow.trace.tokenUsage"])
    assert usage["total_tokens"] == (
        ours.attributes["mlflow.chat.tokenUsage"]["total_tokens"]
        + theirs.attributes["mlflow.chat.tokenUsage"]["total_tokens"]
    )
    err = capfd.readouterr().err
    assert "Failed to start span" not in err and "WARNING mlflow" not in err, err


def test_current_trace_apis_inside_a_module_call(traced, synalinks, lm):
    import mlflow

    seen = {}

    class Probe(synalinks.Module):
        """Uses MLflow's current-trace APIs as an app would."""

        async def call(self, inputs, training=False):
            span = mlflow.get_current_active_span()
            seen["span"] = (span.name, span.span_id, span.trace_id) if span else None
            seen["active_trace_id"] = mlflow.get_active_trace_id()
            span.set_attribute("app.step", "probe")
            mlflow.update_current_trace(
                tags={"team": "search"},
                metadata={SESSION: "chat-42", USER: "ada", "release": "r7"},
                client_request_id="req-1",
            )
            return inputs.clone()

        async def compute_output_spec(self, inputs, training=False):
            return inputs.clone()

    Question, build = _qa(synalinks, lm, extra=lambda x: Probe(name="probe")(x))

    async def main():
        program = await build()
        return await program(Question(question="hello"))

    assert asyncio.run(main()) is not None
    trace_id = mlflow.get_last_active_trace_id()
    mlflow.log_feedback(trace_id=trace_id, name="helpful", value=True, rationale="fine")

    (trace,) = traced()
    info = trace.info
    assert info.trace_id == trace_id == seen["active_trace_id"]
    (probe,) = [s for s in trace.data.spans if s.name == "Probe:probe"]
    assert seen["span"] == ("Probe:probe", probe.span_id, trace_id)
    assert probe.attributes["app.step"] == "probe"
    assert probe.attributes["synalinks.module_name"] == "probe"  # ours untouched
    assert info.tags["team"] == "search"
    assert info.tags["synalinks.program"] == "qa"
    assert info.trace_metadata[SESSION] == "chat-42"
    assert info.trace_metadata[USER] == "ada"
    assert info.trace_metadata["release"] == "r7"
    assert info.client_request_id == "req-1"
    (feedback,) = [a for a in info.assessments if a.name == "helpful"]
    assert feedback.value is True and feedback.rationale == "fine"
    # MLflow's own search by session finds it.
    found = mlflow.search_traces(
        locations=[info.experiment_id], filter_string=f"metadata.`{SESSION}` = 'chat-42'",
        return_type="list",
    )
    assert [t.info.trace_id for t in found] == [trace_id]


def test_no_current_span_outside_calls_and_user_spans_still_nest(traced, synalinks, lm):
    import mlflow

    class Inner(synalinks.Module):
        async def call(self, inputs, training=False):
            with mlflow.start_span("user-step") as span:
                span.set_inputs({"q": inputs.get("question")})
            return inputs.clone()

        async def compute_output_spec(self, inputs, training=False):
            return inputs.clone()

    Question, build = _qa(synalinks, lm, extra=lambda x: Inner(name="inner")(x))

    async def main():
        program = await build()
        return await program(Question(question="hello"))

    assert mlflow.get_current_active_span() is None
    asyncio.run(main())
    assert mlflow.get_current_active_span() is None
    (trace,) = traced()
    (inner,) = [s for s in trace.data.spans if s.name == "Inner:inner"]
    (user,) = [s for s in trace.data.spans if s.name == "user-step"]
    assert user.parent_id == inner.span_id, render(trace)


STARTUP_APP = '''
import asyncio, sys
import mlflow
mlflow.litellm.autolog()
import synalinks

class Question(synalinks.DataModel):
    question: str

class Answer(synalinks.DataModel):
    answer: str

async def main():
    lm = synalinks.LanguageModel(model="openai/gpt-4o-mini", api_base=sys.argv[1], api_key="sk-test")
    inputs = synalinks.Input(data_model=Question)
    outputs = await synalinks.Generator(data_model=Answer, language_model=lm, name="gen")(inputs)
    program = synalinks.Program(inputs=inputs, outputs=outputs, name="qa")
    await program(Question(question="What is 2 + 2?"))
    await asyncio.sleep(3.0)  # a service's loop keeps running: LiteLLM reports its span

asyncio.run(main())
'''


def test_litellm_autolog_under_startup_activation_in_a_real_process(tmp_path, fake_llm):
    """The issue's report, as a new user runs it: SYNALINKS_OBSERVABILITY=1 and
    mlflow.litellm.autolog() in an unmodified script; no MLflow warning, one trace."""
    from traced_app import base_env

    script = tmp_path / "app.py"
    script.write_text(STARTUP_APP)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = base_env({
        "SYNALINKS_HOME": str(tmp_path / "home"), "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_EXPERIMENT_NAME": "startup",
    })
    done = subprocess.run([sys.executable, str(script), fake_llm.base_url], capture_output=True,
                          text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Failed to start span" not in done.stderr and "set_span_type" not in done.stderr, done.stderr
    assert "WARNING mlflow" not in done.stderr, done.stderr
    traces = [t for t in load_traces(uri, "startup") if t.info.tags.get("synalinks.program") == "qa"]
    _check_nested(traces, "litellm-")

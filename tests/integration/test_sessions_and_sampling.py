"""Sessions without code in modules, and MLflow's sampling setting (issue 15), in process.

``synalinks_obs.trace_context(session_id=..., user_id=..., tags=...)`` around program
calls (``with``, ``async with``, decorator, across ``asyncio.gather``) stamps each trace
with MLflow's standard ``mlflow.trace.session`` / ``mlflow.trace.user`` metadata and the
tags, read back from the sqlite store (and found by MLflow's own session search).
``MLFLOW_TRACE_SAMPLING_RATIO`` applies when ``SYNALINKS_OBS_SAMPLE_RATE`` is unset; when
both are set ours wins, one line says so, and MLflow spans inside a kept trace are kept
(one decision per trace: the two never multiply).
"""

from __future__ import annotations

import asyncio

import pytest
from traces import load_traces, render

SESSION = "mlflow.trace.session"
USER = "mlflow.trace.user"


@pytest.fixture
def synalinks():
    import synalinks as module

    return module


@pytest.fixture
def tracing(sqlite_uri, request, monkeypatch):
    """``start(**options)`` enables tracing into a fresh sqlite store (the app's MLflow
    tracking URI too); ``read()`` returns the landed traces (none: [])."""
    import mlflow

    import synalinks_obs

    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri)
    experiment = f"exp_{request.node.name}"[:200]

    class Tracing:
        def start(self, **options):
            # MLflow's tracer, set up by an earlier test of this worker, would keep that
            # test's store and sampling ratio: set up again from this test's environment.
            mlflow.tracing.reset()
            synalinks_obs.enable(tracking_uri=sqlite_uri, experiment_name=experiment, **options)

        def read(self):
            assert synalinks_obs.flush(30), "spans were still queued after 30 s"
            try:
                return load_traces(sqlite_uri, experiment)
            except LookupError:  # nothing was ever written
                return []

    yield Tracing()
    synalinks_obs.flush(30)
    synalinks_obs.disable()


def _program(synalinks, lm, inner=None):
    class Question(synalinks.DataModel):
        question: str

    class Answer(synalinks.DataModel):
        answer: str

    async def build():
        inputs = synalinks.Input(data_model=Question)
        x = inputs if inner is None else await inner(inputs)
        outputs = await synalinks.Generator(data_model=Answer, language_model=lm, name="gen")(x)
        return synalinks.Program(inputs=inputs, outputs=outputs, name="qa")

    return Question, build


def _by_question(traces):
    """``{question: trace info}`` of our traces (the root's input question)."""
    found = {}
    for trace in traces:
        (root,) = [s for s in trace.data.spans if s.parent_id is None]
        found[root.inputs["question"]] = trace.info
    return found


# -- trace_context ----------------------------------------------------------------------

def test_trace_context_with_decorator_and_gather(tracing, synalinks, lm):
    import synalinks_obs

    tracing.start()
    Question, build = _program(synalinks, lm)

    @synalinks_obs.trace_context(session_id="deco", user_id="bob")
    async def decorated(program, question):
        return await program(Question(question=question))

    async def in_session(program, question, session):
        async with synalinks_obs.trace_context(session_id=session, tags={"turn": question}):
            return await program(Question(question=question))

    async def main():
        program = await build()
        await program(Question(question="outside"))
        await decorated(program, "decorated")
        # concurrent calls, each in its own scope
        await asyncio.gather(in_session(program, "a1", "chat-a"), in_session(program, "b1", "chat-b"))
        # concurrent calls inside one scope, scopes nested: the inner session wins
        with synalinks_obs.trace_context(session_id="outer", user_id="ada", tags={"team": "qa"}):
            with synalinks_obs.trace_context(session_id="inner"):
                await asyncio.gather(
                    program(Question(question="g1")), program(Question(question="g2"))
                )
            await program(Question(question="after-inner"))

    asyncio.run(main())
    infos = _by_question(tracing.read())
    assert set(infos) == {"outside", "decorated", "a1", "b1", "g1", "g2", "after-inner"}
    assert SESSION not in infos["outside"].trace_metadata
    assert USER not in infos["outside"].trace_metadata
    assert infos["decorated"].trace_metadata[SESSION] == "deco"
    assert infos["decorated"].trace_metadata[USER] == "bob"
    assert infos["a1"].trace_metadata[SESSION] == "chat-a" and infos["a1"].tags["turn"] == "a1"
    assert infos["b1"].trace_metadata[SESSION] == "chat-b" and infos["b1"].tags["turn"] == "b1"
    for question in ("g1", "g2"):
        info = infos[question]
        assert info.trace_metadata[SESSION] == "inner"
        assert info.trace_metadata[USER] == "ada" and info.tags["team"] == "qa"
    assert infos["after-inner"].trace_metadata[SESSION] == "outer"
    assert "team" not in infos["outside"].tags


def test_trace_context_sync_and_mlflow_session_search(tracing, synalinks, lm, sqlite_uri, request):
    import mlflow

    import synalinks_obs

    tracing.start()
    mlflow.set_experiment(f"exp_{request.node.name}"[:200])  # where MLflow's own trace goes
    Question, build = _program(synalinks, lm)

    async def main(question):
        program = await build()
        return await program(Question(question=question))

    with synalinks_obs.trace_context(session_id="chat-7", user_id="eve"):
        asyncio.run(main("first"))
        asyncio.run(main("second"))
        # MLflow's own traces started in the scope carry the same keys.
        with mlflow.start_span("app-step"):
            pass
    asyncio.run(main("third"))

    traces = tracing.read()
    ours = _by_question([t for t in traces if t.info.tags.get("synalinks.program") == "qa"])
    assert ours["first"].trace_metadata[SESSION] == "chat-7"
    assert ours["second"].trace_metadata[USER] == "eve"
    assert SESSION not in ours["third"].trace_metadata
    (app_step,) = [t for t in traces if t.info.tags.get("mlflow.traceName") == "app-step"]
    assert app_step.info.trace_metadata[SESSION] == "chat-7"
    found = mlflow.MlflowClient(sqlite_uri).search_traces(
        locations=[ours["first"].experiment_id], filter_string=f"metadata.`{SESSION}` = 'chat-7'",
    )
    assert {t.info.trace_id for t in found} == {
        ours["first"].trace_id, ours["second"].trace_id, app_step.info.trace_id
    }


def test_the_apps_own_mlflow_tracing_context_stamps_our_traces(tracing, synalinks, lm):
    import mlflow

    tracing.start()
    Question, build = _program(synalinks, lm)

    async def main():
        program = await build()
        with mlflow.tracing.context(metadata={SESSION: "from-mlflow"}, tags={"source": "app"}):
            await program(Question(question="inside"))
        await program(Question(question="outside"))

    asyncio.run(main())
    infos = _by_question(tracing.read())
    assert infos["inside"].trace_metadata[SESSION] == "from-mlflow"
    assert infos["inside"].tags["source"] == "app"
    assert SESSION not in infos["outside"].trace_metadata
    assert "source" not in infos["outside"].tags


def test_trace_context_rejects_bad_values_with_one_clear_line():
    import synalinks_obs

    with pytest.raises(ValueError, match=r"trace_context\(session_id=3.5\) must be a string"):
        synalinks_obs.trace_context(session_id=3.5)
    with pytest.raises(ValueError, match=r"trace_context\(tags=.*\) must be a dict"):
        synalinks_obs.trace_context(tags=["a"])


# -- sampling ----------------------------------------------------------------------------

def _run_many(synalinks, lm, count, inner=None):
    Question, build = _program(synalinks, lm, inner)

    async def main():
        program = await build()
        for number in range(count):
            await program(Question(question=f"q{number}"))

    asyncio.run(main())


def test_mlflow_sampling_ratio_applies_when_ours_is_unset(tracing, synalinks, lm, monkeypatch):
    monkeypatch.delenv("SYNALINKS_OBS_SAMPLE_RATE", raising=False)
    monkeypatch.setenv("MLFLOW_TRACE_SAMPLING_RATIO", "0.0")
    tracing.start()
    _run_many(synalinks, lm, 5)
    assert tracing.read() == []


def test_mlflow_sampling_ratio_half(tracing, synalinks, lm, monkeypatch):
    monkeypatch.delenv("SYNALINKS_OBS_SAMPLE_RATE", raising=False)
    monkeypatch.setenv("MLFLOW_TRACE_SAMPLING_RATIO", "0.5")
    tracing.start()
    _run_many(synalinks, lm, 40)
    kept = len(tracing.read())
    # Binomial(40, 0.5): outside 8..32 with probability < 1e-4.
    assert 8 <= kept <= 32, kept


def test_our_rate_wins_and_the_two_never_multiply(tracing, synalinks, lm, monkeypatch, capfd):
    import mlflow

    class WithUserSpan(synalinks.Module):
        """Opens an MLflow span inside the call."""

        async def call(self, inputs, training=False):
            with mlflow.start_span("user-span"):
                pass
            return inputs.clone()

        async def compute_output_spec(self, inputs, training=False):
            return inputs.clone()

    monkeypatch.setenv("MLFLOW_TRACE_SAMPLING_RATIO", "0.0")
    tracing.start(sample_rate=1.0)
    _run_many(synalinks, lm, 4, inner=lambda x: WithUserSpan(name="inner")(x))
    traces = tracing.read()
    assert len(traces) == 4
    for trace in traces:  # MLflow's ratio 0.0 did not drop the spans inside our kept traces
        (inner,) = [s for s in trace.data.spans if s.name == "WithUserSpan:inner"]
        users = [s for s in trace.data.spans if s.name == "user-span"]
        assert len(users) == 1 and users[0].parent_id == inner.span_id, render(trace)
    err = capfd.readouterr().err
    assert err.count("not at MLFLOW_TRACE_SAMPLING_RATIO=0") == 1, err


def test_our_rate_zero_drops_mlflow_spans_inside_too(tracing, synalinks, lm, monkeypatch):
    import mlflow

    class WithUserSpan(synalinks.Module):
        async def call(self, inputs, training=False):
            with mlflow.start_span("user-span"):
                pass
            return inputs.clone()

        async def compute_output_spec(self, inputs, training=False):
            return inputs.clone()

    monkeypatch.setenv("MLFLOW_TRACE_SAMPLING_RATIO", "1.0")
    tracing.start(sample_rate=0.0)
    _run_many(synalinks, lm, 3, inner=lambda x: WithUserSpan(name="inner")(x))
    assert tracing.read() == []  # no trace of ours, and no orphan trace of MLflow's

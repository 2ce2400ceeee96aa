"""What MLflow's Traces list shows of our traces (issue 17), read back through MLflow.

A real QA program (Functional -> Generator -> LanguageModel on the loopback fake LLM)
is traced into a sqlite store; MLflow's own client then reads what its Traces list
shows: the request/response previews it stored from the root span (the call's own data,
no wrapper), the trace tags its search box filters on (``synalinks.program``,
``synalinks.trace_kind``), and where program building went: the ``-build`` companion
experiment by default, the tracing experiment itself (``inline``) or nowhere (``off``).
"""

from __future__ import annotations

import asyncio
import json

import pytest
from traces import load_traces, render

QUESTION = "What is the capital of France?"


@pytest.fixture
def synalinks():
    import synalinks as module

    return module


@pytest.fixture
def tracing(sqlite_uri, request):
    """``tracing(**settings)`` turns tracing on into experiment ``listing``; off after."""
    import synalinks_obs

    def enable(**settings):
        synalinks_obs.enable(tracking_uri=sqlite_uri, experiment_name="listing", **settings)

    yield enable
    synalinks_obs.flush(30)
    synalinks_obs.disable()


def _qa(synalinks, lm):
    """Builds (symbolic calls) then calls the QA program once; returns its answer."""

    class Question(synalinks.DataModel):
        question: str

    class Answer(synalinks.DataModel):
        answer: str

    async def main():
        inputs = synalinks.Input(data_model=Question)
        outputs = await synalinks.Generator(data_model=Answer, language_model=lm, name="gen")(inputs)
        program = synalinks.Program(inputs=inputs, outputs=outputs, name="qa")
        return await program(Question(question=QUESTION))

    return asyncio.run(main())


def _infos(uri, experiment, filter_string=None):
    """The trace infos MLflow's Traces list is made of (what its UI asks the store for)."""
    import mlflow

    import synalinks_obs

    assert synalinks_obs.flush(30)
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    return [
        t.info for t in client.search_traces(
            locations=[found.experiment_id], filter_string=filter_string, include_spans=False
        )
    ]


def _traces(uri, experiment):
    """Every trace of the experiment with its spans, once ours are written."""
    import synalinks_obs

    assert synalinks_obs.flush(30)
    return load_traces(uri, experiment)


def _root(trace):
    (root,) = [s for s in trace.data.spans if s.parent_id is None]
    return root


def test_previews_are_the_calls_own_data(tracing, synalinks, lm, sqlite_uri):
    tracing()
    answer = _qa(synalinks, lm)
    (info,) = _infos(sqlite_uri, "listing")
    # The Traces list's Request / Response columns: the data models' JSON, nothing around.
    assert json.loads(info.request_preview) == {"question": QUESTION}
    assert info.request_preview.startswith('{"question":')
    assert json.loads(info.response_preview) == answer.get_json()
    assert info.response_preview.startswith('{"answer":')

    # The same shape on every span; the LM span keeps the OpenAI chat shape.
    (trace,) = _traces(sqlite_uri, "listing")
    spans = {s.span_type: s for s in trace.data.spans}
    assert set(spans) == {"CHAIN", "LLM", "CHAT_MODEL"}, render(trace)
    assert spans["CHAIN"].inputs == spans["LLM"].inputs == {"question": QUESTION}
    assert spans["CHAIN"].outputs == spans["LLM"].outputs == answer.get_json()
    chat = spans["CHAT_MODEL"]
    assert [m["role"] for m in chat.inputs["messages"]] == ["system", "user"]
    assert QUESTION in chat.inputs["messages"][-1]["content"]
    assert "schema" in chat.inputs  # the LM call's keyword arguments: request parameters
    assert "data" not in chat.inputs and "kwargs" not in chat.inputs
    (choice,) = chat.outputs["choices"]
    assert choice["message"]["role"] == "assistant"
    assert set(chat.outputs) == {"choices"}


def test_keyword_arguments_only_when_the_call_has_some(tracing, synalinks, sqlite_uri):
    class Question(synalinks.DataModel):
        question: str

    class Copy(synalinks.Module):
        async def call(self, *inputs, training=False, **options):
            return inputs[0].clone() if inputs else None

    tracing()

    async def main():
        step = Copy(name="copy")
        await step(Question(question="one"))
        await step(Question(question="a"), Question(question="b"))
        await step(Question(question="kw"), training=True, note="x")
        await step(Question(question="mode"), training=False)  # the default mode: not data
        await step(inputs=Question(question="only keywords"))

    asyncio.run(main())
    traces = sorted(_traces(sqlite_uri, "listing"), key=lambda t: _root(t).start_time_ns)
    assert [_root(t).inputs for t in traces] == [
        {"question": "one"},
        [{"question": "a"}, {"question": "b"}],
        {"inputs": {"question": "kw"}, "training": True, "note": "x"},
        {"question": "mode"},
        {"inputs": {"question": "only keywords"}},
    ]
    assert [_root(t).outputs for t in traces] == [
        {"question": "one"}, {"question": "a"}, {"question": "kw"}, {"question": "mode"}, None,
    ]
    previews = {info.request_preview for info in _infos(sqlite_uri, "listing")}
    assert '{"question":"one"}' in previews


def test_tags_filter_by_program_and_kind(tracing, synalinks, lm, sqlite_uri):
    tracing(symbolic_traces="inline")  # both kinds in one experiment, to filter apart
    _qa(synalinks, lm)
    infos = _infos(sqlite_uri, "listing")
    kinds = sorted(i.tags.get("synalinks.trace_kind") for i in infos)
    assert kinds == ["build", "call"], [i.tags for i in infos]

    # The UI's search box: MLflow's filter syntax on trace tags, answered by the store.
    calls = _infos(sqlite_uri, "listing", "tags.`synalinks.trace_kind` = 'call'")
    assert len(calls) == 1
    assert calls[0].tags["synalinks.program"] == "qa"
    assert calls[0].tags["mlflow.traceName"] == "Functional:qa"
    by_program = _infos(sqlite_uri, "listing", "tags.`synalinks.program` = 'qa'")
    assert [i.trace_id for i in by_program] == [calls[0].trace_id]
    builds = _infos(sqlite_uri, "listing", "tags.`synalinks.trace_kind` = 'build'")
    assert [i.tags["synalinks.program"] for i in builds] == ["gen"]
    assert _infos(sqlite_uri, "listing", "tags.`synalinks.trace_kind` = 'training'") == []


def test_program_building_goes_to_the_build_experiment(tracing, synalinks, lm, sqlite_uri):
    tracing()  # the default: SYNALINKS_OBS_SYMBOLIC_TRACES=build
    _qa(synalinks, lm)
    listed = _infos(sqlite_uri, "listing")
    assert [i.tags["synalinks.trace_kind"] for i in listed] == ["call"]
    assert "properties" not in listed[0].request_preview  # no schema row in the list
    (built,) = _traces(sqlite_uri, "listing-build")
    root = _root(built)
    assert root.name == "Generator:gen"
    assert root.attributes["synalinks.is_symbolic"] is True
    assert root.inputs["properties"]["question"]["type"] == "string"  # the schema
    assert built.info.tags["synalinks.trace_kind"] == "build"
    assert built.info.tags["synalinks.program"] == "gen"


def test_program_building_inline_or_off(tracing, synalinks, lm, sqlite_uri):
    import synalinks_obs

    tracing(symbolic_traces="inline")  # as before the companion experiment existed
    _qa(synalinks, lm)
    inline = _traces(sqlite_uri, "listing")
    symbolic = [t for t in inline if _root(t).attributes["synalinks.is_symbolic"]]
    assert [_root(t).name for t in symbolic] == ["Generator:gen"]
    assert _infos(sqlite_uri, "listing-build") is None  # never created

    synalinks_obs.disable()
    tracing(symbolic_traces="off")
    _qa(synalinks, lm)
    after = _traces(sqlite_uri, "listing")
    new = [t for t in after if t.info.trace_id not in {x.info.trace_id for x in inline}]
    assert [_root(t).name for t in new] == ["Functional:qa"]  # the real call only
    assert _root(new[0]).attributes["synalinks.is_symbolic"] is False
    assert _infos(sqlite_uri, "listing-build") is None


def test_symbolic_traces_setting_is_validated(monkeypatch):
    from synalinks_obs.settings import SettingsError, load_settings

    assert load_settings().symbolic_traces == "build"
    assert load_settings(symbolic_traces=" Inline ").symbolic_traces == "inline"
    with pytest.raises(SettingsError) as raised:
        load_settings(symbolic_traces="sideways")
    assert "symbolic_traces='sideways' is not valid: use one of build, inline, off" in str(raised.value)
    monkeypatch.setenv("SYNALINKS_OBS_SYMBOLIC_TRACES", "sideways")
    lines = []
    assert load_settings(report=lines.append).symbolic_traces == "build"
    (line,) = lines
    assert line.startswith("synalinks-obs: SYNALINKS_OBS_SYMBOLIC_TRACES='sideways' is not valid")
    assert line.endswith("; using the default 'build'") and "\n" not in line

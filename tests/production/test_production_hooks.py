"""Direct Monitor hook (SPEC section 4): ``synalinks_obs.hooks.Monitor``.

A monitored module and its children are traced into the monitor's experiment, with or
without global tracing, and every call is one span written to one place. In process,
into sqlite stores, read back with MLflow's client.
"""

from __future__ import annotations

import asyncio
import copy
import pickle
import re

import pytest
from traces import load_traces, render


@pytest.fixture
def synalinks():
    import synalinks as module

    return module


@pytest.fixture
def no_global_tracing():
    import synalinks_obs

    synalinks_obs.disable()
    yield
    synalinks_obs.flush(30)
    synalinks_obs.disable()


def _models(synalinks):
    class Question(synalinks.DataModel):
        question: str

    class Answer(synalinks.DataModel):
        answer: str

    return Question, Answer


def _names(trace):
    """Span names, without the number Synalinks appends to auto-named modules."""
    return sorted(re.sub(r"_\d+$", "", span.name) for span in trace.data.spans)


def _real(traces):
    return [
        t for t in traces if not any(s.attributes.get("synalinks.is_symbolic") for s in t.data.spans)
    ]


def _root(trace):
    ids = {s.span_id for s in trace.data.spans}
    roots = [s for s in trace.data.spans if s.parent_id not in ids]
    assert len(roots) == 1, render(trace)
    return roots[0]


async def _program(synalinks, lm, monitor=None):
    Question, Answer = _models(synalinks)
    inputs = synalinks.Input(data_model=Question)
    generator = synalinks.Generator(data_model=Answer, language_model=lm, name="gen")
    if monitor is not None:
        generator.add_hook(monitor)  # Synalinks' Generator takes no hooks= argument
    outputs = await generator(inputs)
    program = synalinks.Program(inputs=inputs, outputs=outputs, name="qa")
    return program, Question


def test_monitor_without_global_tracing(synalinks, lm, sqlite_uri, tmp_path, monkeypatch, no_global_tracing):
    """Only the monitored module and its children are traced, into the monitor's store."""
    import synalinks_obs
    from synalinks_obs.hooks import Monitor

    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)  # nothing may land in MLflow's default ./mlflow.db
    monitor = Monitor(tracking_uri=sqlite_uri, experiment_name="monitored")

    async def main():
        program, Question = await _program(synalinks, lm, monitor)
        await program(Question(question="What is the capital of France?"))

    asyncio.run(main())
    assert not synalinks_obs.is_enabled()
    assert synalinks_obs.flush(30)
    real = _real(load_traces(sqlite_uri, "monitored"))
    assert len(real) == 1
    trace = real[0]
    assert _names(trace) == ["Generator:gen", "LanguageModel:language_model"], render(trace)
    root = _root(trace)
    assert root.name == "Generator:gen"
    assert root.span_type == "LLM"
    assert root.attributes["synalinks.parent_call_id"] == ""
    assert root.attributes["synalinks.cost"] > 0
    assert not list(workdir.iterdir())


def test_monitor_alongside_global_tracing_no_duplicates(synalinks, lm, sqlite_uri, no_global_tracing):
    """Global trace keeps the program span; the monitored subtree is its own trace in the
    monitor's experiment, linked by call id, its cost counted in the program's."""
    import synalinks_obs
    from synalinks_obs.hooks import Monitor

    monitor = Monitor(tracking_uri=sqlite_uri, experiment_name="monitored")
    synalinks_obs.enable(tracking_uri=sqlite_uri, experiment_name="global")

    async def main():
        program, Question = await _program(synalinks, lm, monitor)
        await asyncio.gather(*(program(Question(question=f"q{i}")) for i in range(3)))

    asyncio.run(main())
    assert synalinks_obs.flush(30)
    global_traces = _real(load_traces(sqlite_uri, "global"))
    monitored = _real(load_traces(sqlite_uri, "monitored"))
    assert len(global_traces) == 3 and len(monitored) == 3
    programs = {}
    for trace in global_traces:
        assert _names(trace) == ["Functional:qa"], render(trace)
        root = _root(trace)
        programs[root.attributes["synalinks.call_id"]] = root
    for trace in monitored:
        assert _names(trace) == ["Generator:gen", "LanguageModel:language_model"], render(trace)
        root = _root(trace)
        # The monitored call remembers its enclosing call, and its cost rolls up there.
        parent = programs.pop(root.attributes["synalinks.parent_call_id"])
        assert parent.attributes["synalinks.cost"] == pytest.approx(root.attributes["synalinks.cost"])
        assert root.attributes["synalinks.cost"] > 0
    assert not programs
    # Program building: the symbolic Generator call went to the monitor's side only, into
    # its experiment's "-build" companion.
    symbolic_global = [s.name for t in load_traces(sqlite_uri, "global") for s in t.data.spans]
    assert "Generator:gen" not in symbolic_global
    ids = {t.info.trace_id for t in monitored}
    assert {t.info.trace_id for t in load_traces(sqlite_uri, "monitored")} == ids
    built = [_root(t).name for t in load_traces(sqlite_uri, "monitored-build")]
    assert built == ["Generator:gen"], built


def test_monitor_same_destination_stays_in_one_trace(synalinks, lm, sqlite_uri, no_global_tracing):
    import synalinks_obs
    from synalinks_obs.hooks import Monitor

    synalinks_obs.enable(tracking_uri=sqlite_uri, experiment_name="shared")
    monitor = Monitor(tracking_uri=sqlite_uri, experiment_name="shared")

    async def main():
        program, Question = await _program(synalinks, lm, monitor)
        await program(Question(question="q"))

    asyncio.run(main())
    assert synalinks_obs.flush(30)
    (trace,) = _real(load_traces(sqlite_uri, "shared"))
    assert _names(trace) == ["Functional:qa", "Generator:gen", "LanguageModel:language_model"]


def test_hooks_argument_copy_and_pickle(synalinks, lm_factory, sqlite_uri, no_global_tracing):
    """``hooks=[monitor]`` on a module that takes it; monitored modules deep-copy and the
    monitor pickles (nothing but two strings on it)."""
    import synalinks_obs
    from synalinks_obs.hooks import Monitor

    monitor = Monitor(tracking_uri=sqlite_uri, experiment_name="lm_only")
    restored = pickle.loads(pickle.dumps(monitor))  # before Synalinks attaches its module
    assert (restored.tracking_uri, restored.experiment_name) == (sqlite_uri, "lm_only")
    lm = lm_factory(hooks=[monitor])
    assert vars(monitor).keys() <= {"params", "_module", "tracking_uri", "experiment_name"}
    clone = copy.deepcopy(lm)
    Question, Answer = _models(synalinks)

    async def main():
        generator = synalinks.Generator(data_model=Answer, language_model=clone, name="plain")
        await generator(Question(question="q"))

    asyncio.run(main())
    assert synalinks_obs.flush(30)
    (trace,) = _real(load_traces(sqlite_uri, "lm_only"))
    assert _names(trace) == ["LanguageModel:language_model"], render(trace)


def test_builtin_synalinks_monitor_writes_its_module_while_we_trace(synalinks, lm_factory, sqlite_uri, no_global_tracing):
    """Synalinks' own ``hooks.Monitor`` (the seed's example) keeps writing its module's
    calls itself, into its experiment; synalinks-obs steps aside for those calls and
    traces the rest: every call is one span, in one place."""
    import synalinks_obs

    synalinks_obs.enable(tracking_uri=sqlite_uri, experiment_name="global")
    builtin = synalinks.hooks.Monitor(tracking_uri=sqlite_uri, experiment_name="builtin_target")
    # (Synalinks' add_hook() does not give the hook its module: hooks= does.)
    lm = lm_factory(hooks=[builtin])

    async def main():
        program, Question = await _program(synalinks, lm)
        await program(Question(question="q"))

    asyncio.run(main())
    assert synalinks_obs.flush(30)
    mine = _real(load_traces(sqlite_uri, "global"))
    theirs = _real(load_traces(sqlite_uri, "builtin_target"))
    assert [_names(t) for t in mine] == [["Functional:qa", "Generator:gen"]]
    assert [_names(t) for t in theirs] == [["LanguageModel:language_model"]]
    assert all(s.attributes.get("synalinks.call_id") for t in theirs for s in t.data.spans)


def test_monitor_arguments_are_checked():
    from synalinks_obs.hooks import Monitor

    with pytest.raises(ValueError):
        Monitor(experiment_name="")
    with pytest.raises(TypeError):
        Monitor(tracking_uri=5000)
    assert Monitor(tracking_uri="sqlite:///rel.db").tracking_uri.startswith("sqlite:////")

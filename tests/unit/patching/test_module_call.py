"""``synalinks_obs.patching.module_call``: the safe call, whatever the sample rate.

The user's call runs exactly once and its exception propagates untouched (same object);
an error of ours before the call leaves no context of ours behind; a synchronous
``__call__`` override stays synchronous. Asserted on real Synalinks modules and what
lands in a sqlite store.
"""

import asyncio
import logging

import pytest
from traces import load_traces


@pytest.fixture
def sl():
    import synalinks

    class Question(synalinks.DataModel):
        question: str

    return synalinks, Question


@pytest.fixture
def tracing(sqlite_uri, monkeypatch):
    import synalinks_obs

    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri)
    yield synalinks_obs
    synalinks_obs.flush(30)
    synalinks_obs.disable()


@pytest.mark.parametrize("rate", [0.0, 0.5, 1.0])
def test_a_failing_call_runs_once_at_every_sample_rate(rate, sl, tracing, sqlite_uri):
    synalinks, Question = sl
    runs, raised = [], []

    class Boom(synalinks.Module):
        async def call(self, inputs, training=False):
            runs.append(inputs.get("question"))
            error = ValueError(f"boom {len(runs)}")
            raised.append(error)
            raise error

    tracing.enable(tracking_uri=sqlite_uri, experiment_name="rate", sample_rate=rate)
    boom = Boom(name="boom")
    for i in range(12):
        with pytest.raises(ValueError) as caught:
            asyncio.run(boom(Question(question=f"q{i}")))
        assert caught.value is raised[-1]  # the very exception the module raised
    assert runs == [f"q{i}" for i in range(12)]  # each call ran exactly once
    assert tracing.flush(30)
    traces = load_traces(sqlite_uri, "rate") if rate else []  # rate 0: nothing, not even the store
    if rate == 1.0:
        assert len(traces) == 12 and all(t.info.state == "ERROR" for t in traces)
    elif rate == 0.0:
        assert traces == []


def test_an_error_of_ours_before_the_call_leaves_no_context_behind(sl, tracing, sqlite_uri, lenient,
                                                                     monkeypatch, caplog):
    """Entering MLflow's context fails: ours is not left pointing at the abandoned record
    (reset if it was set) before the user's call runs untraced, and one line says so."""
    from synalinks_obs.tracing import context

    synalinks, Question = sl
    seen = []

    class Looks(synalinks.Module):
        async def call(self, inputs, training=False):
            seen.append(context.current_record())
            return inputs.clone()

    tracing.enable(tracking_uri=sqlite_uri, experiment_name="ctx")
    looks = Looks(name="looks")
    asyncio.run(looks(Question(question="warm")))  # binds MLflow's context
    assert seen[-1] is not None and seen[-1].name == "Looks:looks"

    def broken(*args):
        raise RuntimeError("MLflow's context is broken")

    # what entering a call uses: reading MLflow's context (it shows our calls), or
    # attaching to it (where MLflow reads OpenTelemetry's global context)
    used = "current_context" if context.CONTEXTS.mlflow.lazy else "attach"
    monkeypatch.setattr(context.CONTEXTS.mlflow, used, broken)
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        results = [asyncio.run(looks(Question(question=f"q{i}"))) for i in range(3)]
    assert [r.get("question") for r in results] == ["q0", "q1", "q2"]
    assert seen[1:] == [None, None, None]  # no abandoned record was current
    assert context.current_record() is None
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("synalinks_obs")]
    assert len(messages) == 1 and "span start" in messages[0] and "context is broken" in messages[0]


def test_strict_mode_surfaces_an_error_of_ours(sl, tracing, sqlite_uri, monkeypatch):
    """The suite's own guard: in strict mode the same fault fails the call loudly."""
    from synalinks_obs import reporting
    from synalinks_obs.tracing import context

    synalinks, Question = sl

    class Plain(synalinks.Module):
        async def call(self, inputs, training=False):
            return inputs.clone()

    tracing.enable(tracking_uri=sqlite_uri, experiment_name="strict")
    plain = Plain(name="plain")
    asyncio.run(plain(Question(question="warm")))
    used = "current_context" if context.CONTEXTS.mlflow.lazy else "attach"
    monkeypatch.setattr(context.CONTEXTS.mlflow, used, lambda *args: 1 / 0)
    with pytest.raises(reporting.InternalError):
        asyncio.run(plain(Question(question="x")))


def test_a_synchronous_call_override_stays_synchronous(sl, tracing, sqlite_uri):
    synalinks, Question = sl

    class SyncOverride(synalinks.Module):
        def __call__(self, *args, **kwargs):  # returns the base call's coroutine
            return super().__call__(*args, **kwargs)

        async def call(self, inputs, training=False):
            return inputs.clone()

    class Shout(synalinks.Module):
        def __call__(self, text):  # a plain synchronous helper, no coroutine at all
            return text.upper()

    tracing.enable(tracking_uri=sqlite_uri, experiment_name="sync")

    class ShoutLater(Shout):  # defined after activation (the __init_subclass__ hook)
        def __call__(self, text):
            return text.lower()

    assert Shout(name="shout")("a") == "A" and ShoutLater(name="later")("B") == "b"
    module = SyncOverride(name="sync")
    assert not asyncio.iscoroutinefunction(SyncOverride.__call__)
    result = asyncio.run(module(Question(question="s")))
    assert result.get("question") == "s"
    assert tracing.flush(30)
    (trace,) = load_traces(sqlite_uri, "sync")
    assert [s.name for s in trace.data.spans] == ["SyncOverride:sync"]

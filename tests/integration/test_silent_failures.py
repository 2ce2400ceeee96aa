"""Failures of ours that used to be silent, or to reach the app: each guarded, said once.

Each test breaks one thing synalinks-obs depends on (with ``monkeypatch``, in process,
under the ``lenient`` fixture: the suite otherwise raises internal errors), then checks
what the app sees (its calls and results unchanged, nothing raised into it) and what is
said (one line) and stored (read back through MLflow's client):

- turning tracing on (``enable()``, a routed ``synalinks.enable_observability()``) when
  applying the patches or creating the tracer fails: the app runs untraced, every patch
  of that start put back;
- Synalinks' ``current_call_usage()`` failing: the LM span is still written, without
  cost and tokens;
- the trace flush before a training run ends failing: the run is not marked FINISHED
  before its traces are written, and is once they are;
- ending a failed ``fit()``'s run failing (its error tag, or the whole abort): the run is
  FAILED all the same, never left RUNNING, and the app's exception is its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import types

import pytest
from traces import load_traces

FLUSH = 120


def our_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name.startswith("synalinks_obs")]


@pytest.fixture
def sl():
    import synalinks

    class Question(synalinks.DataModel):
        question: str = synalinks.Field(description="The question to answer")

    class Answer(synalinks.DataModel):
        answer: str = synalinks.Field(description="The answer")

    class Step(synalinks.Module):
        async def call(self, inputs, training=False):
            return inputs.clone()

        async def compute_output_spec(self, inputs, training=False):
            return inputs.clone()

    return types.SimpleNamespace(synalinks=synalinks, Question=Question, Answer=Answer, Step=Step)


@pytest.fixture
def obs():
    import synalinks_obs

    yield synalinks_obs
    synalinks_obs.flush(FLUSH)
    synalinks_obs.uninstrument()


# -- turning tracing on ------------------------------------------------------------------


def _broken(message):
    def fail(*args, **kwargs):
        raise RuntimeError(message)

    return fail


@pytest.mark.parametrize("broken", ["patches", "tracer"])
@pytest.mark.parametrize("how", ["enable", "synalinks.enable_observability"])
def test_turning_tracing_on_never_raises_an_error_of_ours(obs, sl, sqlite_uri, monkeypatch, caplog,
                                                          lenient, broken, how):
    from synalinks_obs.patching import lm_usage
    from synalinks_obs.runtime import RUNTIME
    from synalinks_obs.tracing import tracer

    obs.enable(tracking_uri=sqlite_uri)  # Synalinks' own API is routed from here on
    obs.uninstrument()
    if how == "synalinks.enable_observability":
        obs.enable(tracking_uri=sqlite_uri)
        obs.disable()  # routed, tracing off
    patched_before = len(RUNTIME.patches)
    if broken == "patches":  # the third of the patch groups fails, after two were applied
        monkeypatch.setattr(lm_usage, "install", _broken("cannot patch"))
    else:
        monkeypatch.setattr(tracer.Tracer, "__init__", _broken("cannot make the tracer"))
    step = sl.Step(name="step")
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        if how == "enable":
            assert obs.enable(tracking_uri=sqlite_uri, experiment_name="broken") is None
        else:
            assert sl.synalinks.enable_observability(tracking_uri=sqlite_uri, experiment_name="broken") is None
        result = asyncio.run(step(sl.Question(question="still works")))
    assert result.get("question") == "still works"
    lines = our_lines(caplog)
    assert len(lines) == 1 and "internal error in turning tracing on" in lines[0], lines
    assert not obs.is_enabled() and RUNTIME.tracer is None
    assert len(RUNTIME.patches) == patched_before  # what this start applied is put back
    assert not os.path.exists(sqlite_uri.removeprefix("sqlite:///"))  # nothing was traced


def test_strict_mode_raises_the_same_failure(obs, sl, sqlite_uri, monkeypatch):
    """The suite's own guard: in strict mode that internal error is raised, not hidden."""
    from synalinks_obs import reporting
    from synalinks_obs.patching import lm_usage

    obs.uninstrument()
    monkeypatch.setattr(lm_usage, "install", _broken("cannot patch"))
    with pytest.raises(reporting.InternalError, match="turning tracing on"):
        obs.enable(tracking_uri=sqlite_uri)


# -- the LM's usage ------------------------------------------------------------------------


def test_a_failing_current_call_usage_costs_the_span_its_usage_only(obs, sl, lm, sqlite_uri,
                                                                    monkeypatch, caplog, lenient):
    import sys

    synalinks = sl.synalinks
    language_model_module = sys.modules[synalinks.LanguageModel.__module__]
    monkeypatch.setattr(language_model_module, "current_call_usage", _broken("usage is broken"),
                        raising=False)
    obs.enable(tracking_uri=sqlite_uri, experiment_name="usage")
    generator = synalinks.Generator(data_model=sl.Answer, language_model=lm, name="gen")
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        results = [asyncio.run(generator(sl.Question(question=f"q{i}"))) for i in range(2)]
    assert [r.get("answer") for r in results] == ["Example answer.", "Example answer."]
    lines = our_lines(caplog)
    assert len(lines) == 1 and "reading the LM call's usage" in lines[0] and "usage is broken" in lines[0]
    assert obs.flush(FLUSH)
    traces = load_traces(sqlite_uri, "usage")
    assert len(traces) == 2
    for trace in traces:
        (chat,) = [s for s in trace.data.spans if s.span_type == "CHAT_MODEL"]
        assert chat.status.status_code == "OK"
        assert chat.attributes["synalinks.cost"] == 0.0
        assert "mlflow.chat.tokenUsage" not in chat.attributes
        assert chat.outputs is not None  # the span itself is complete


# -- MLflow reading a trace of ours --------------------------------------------------------


def test_a_failing_flush_before_mlflow_reads_a_trace_leaves_the_read_alone(obs, sl, lm, sqlite_uri,
                                                                          monkeypatch, caplog, lenient):
    """``mlflow.get_trace`` on a trace that has just ended first flushes our spans; when
    that flush fails, one line says so and MLflow's read runs and answers as usual."""
    import mlflow

    from synalinks_obs.export.exporter import Exporter

    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri)
    obs.enable(tracking_uri=sqlite_uri, experiment_name="read_back")
    generator = sl.synalinks.Generator(data_model=sl.Answer, language_model=lm, name="gen")
    results = [asyncio.run(generator(sl.Question(question=f"q{i}"))) for i in range(2)]
    trace_id = mlflow.get_last_active_trace_id()
    original = Exporter.flush
    monkeypatch.setattr(Exporter, "flush", _broken("flush is broken"))
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        read = mlflow.get_trace(trace_id)  # None if the exporter has not written it yet
    assert read is None or read.info.trace_id == trace_id
    lines = our_lines(caplog)
    assert len(lines) == 1, lines
    assert "writing a trace before MLflow reads it" in lines[0] and "flush is broken" in lines[0]
    monkeypatch.setattr(Exporter, "flush", original)
    assert [r.get("answer") for r in results] == ["Example answer.", "Example answer."]
    assert obs.flush(FLUSH)
    assert mlflow.get_trace(trace_id).info.trace_id == trace_id


# -- training runs ---------------------------------------------------------------------------


def _program(sl, lm, name):
    synalinks = sl.synalinks

    async def build():
        inputs = synalinks.Input(data_model=sl.Question)
        outputs = await synalinks.Generator(data_model=sl.Answer, language_model=lm)(inputs)
        program = synalinks.Program(inputs=inputs, outputs=outputs, name=name)
        program.compile(reward=synalinks.rewards.ExactMatch(in_mask=["answer"]),
                        optimizer=synalinks.optimizers.RandomFewShot())
        return program

    return asyncio.run(build())


def _data(sl, size):
    import numpy as np

    x = np.array([sl.Question(question=f"Question {i}?") for i in range(size)], dtype="object")
    y = np.array([sl.Answer(answer="Example answer.") for _ in range(size)], dtype="object")
    return x, y


SLOW_LM = 0.4  # seconds an LM answer takes: the fit outlasts the feedback writer's delay


def _fit(sl, program, callbacks, epochs=1):
    x, y = _data(sl, 4)
    return asyncio.run(program.fit(x=x, y=y, epochs=epochs, batch_size=2, callbacks=callbacks, verbose=0))


def test_a_failing_trace_flush_never_ends_a_run_before_its_traces(obs, sl, lm, sqlite_uri, fake_llm,
                                                                  monkeypatch, caplog, lenient):
    """The flush before the end of a run raises: one line, the run stays RUNNING (its
    traces are not known to be written), and is marked FINISHED once a flush succeeds."""
    import mlflow

    from synalinks_obs.callbacks import Monitor
    from synalinks_obs.export.exporter import Exporter
    from synalinks_obs.training import run_end

    obs.enable(tracking_uri=sqlite_uri, experiment_name="flush_traces")
    program = _program(sl, lm, "flushed_program")
    monitor = Monitor(experiment_name="flush_runs", log_program_plot=False, log_program_model=False)
    original = Exporter.flush
    monkeypatch.setattr(Exporter, "flush", _broken("flush is broken"))
    fake_llm.inject_latency(SLOW_LM)  # the feedback writer's store calls do not flush
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        history = _fit(sl, program, [monitor])
    assert history.history["reward"] == [1.0]  # training itself is untouched
    client = mlflow.MlflowClient(sqlite_uri)
    assert client.get_run(monitor.run_id).info.status == "RUNNING"
    lines = our_lines(caplog)
    assert len(lines) == 1, lines
    assert "internal error in writing the traces of training run" in lines[0] and "flush is broken" in lines[0]
    monkeypatch.setattr(Exporter, "flush", original)  # the next flush works
    run_end._ENDER.thread.join(60)  # the background ender retries every second
    run = client.get_run(monitor.run_id)
    assert run.info.status == "FINISHED"
    traces = client.search_traces(locations=[run.info.experiment_id], run_id=monitor.run_id)
    assert len(traces) >= 4  # the calls of the epoch, linked to the run, before it ended
    in_experiment = client.search_traces(locations=[run.info.experiment_id])
    assert len(in_experiment) == len(traces)  # every trace of the run's experiment is linked


def test_a_flush_that_does_not_finish_in_time_defers_the_end(obs, sl, lm, sqlite_uri, fake_llm,
                                                             monkeypatch, caplog):
    """The flush before the end times out (the store is slow): one INFO line, the run is
    marked FINISHED once its traces are written."""
    import mlflow

    from synalinks_obs.callbacks import Monitor
    from synalinks_obs.export.exporter import Exporter
    from synalinks_obs.training import run_end

    obs.enable(tracking_uri=sqlite_uri, experiment_name="slow_traces")
    program = _program(sl, lm, "slow_program")
    monitor = Monitor(experiment_name="slow_runs", log_program_plot=False, log_program_model=False)
    original = Exporter.flush
    calls, threads = [], set()

    def not_in_time(self, timeout=None):  # the first flush (the Monitor's) runs out of time
        calls.append(timeout)
        threads.add(threading.current_thread().name)
        return False if len(calls) == 1 else original(self, timeout)

    monkeypatch.setattr(Exporter, "flush", not_in_time)
    fake_llm.inject_latency(SLOW_LM)  # the feedback writer is at work before the fit ends
    with caplog.at_level(logging.INFO, logger="synalinks_obs"):
        _fit(sl, program, [monitor])
    lines = [line for line in our_lines(caplog) if "not all written" in line]
    assert len(lines) == 1 and monitor.run_id in lines[0], lines
    run_end._ENDER.thread.join(60)
    client = mlflow.MlflowClient(sqlite_uri)
    assert client.get_run(monitor.run_id).info.status == "FINISHED"
    assert calls[0] == run_end.FLUSH_BUDGET
    # only the Monitor and the run ender flush: the feedback writer waits for its traces
    assert threads <= {"MainThread", run_end._ENDER.thread.name}, threads


class _Stop(Exception):
    pass


@pytest.mark.parametrize("broken", ["the error tag", "the whole abort"])
def test_a_failing_abort_never_leaves_a_run_running(obs, sl, lm, sqlite_uri, monkeypatch, caplog,
                                                    lenient, broken):
    import mlflow
    from mlflow.tracking import MlflowClient

    from synalinks_obs.callbacks import Monitor

    obs.enable(tracking_uri=sqlite_uri, experiment_name="aborts")
    program = _program(sl, lm, "aborted_program")
    monitor = Monitor(experiment_name="abort_runs", log_program_plot=False, log_program_model=False)
    raised = []

    class Breaks(sl.synalinks.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raised.append(_Stop("the user's own error"))
            raise raised[-1]

    if broken == "the error tag":
        monkeypatch.setattr(MlflowClient, "set_tag", _broken("the store refused the tag"))
    else:
        monkeypatch.setattr(Monitor, "_abort", _broken("abort is broken"))
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        with pytest.raises(_Stop) as caught:
            _fit(sl, program, [monitor, Breaks()])
    assert caught.value is raised[0]  # the app's exception, unchanged
    assert obs.flush(FLUSH)  # the run's traces written: its end does not wait any more
    run = mlflow.MlflowClient(sqlite_uri).get_run(monitor.run_id)
    assert run.info.status == "FAILED"
    lines = our_lines(caplog)
    assert len(lines) == 1, lines
    if broken == "the error tag":
        assert "failed while logging tags" in lines[0] and "refused the tag" in lines[0]
    else:
        assert "internal error in ending a failed training run" in lines[0] and "abort is broken" in lines[0]


def test_a_users_synalinks_monitor_wins_over_autolog_in_a_real_fit(obs, sl, lm, sqlite_uri):
    """Synalinks' own ``synalinks.callbacks.Monitor`` passed to ``fit()`` while tracing is
    on (autolog on): its run is the only run, autolog adds none."""
    import mlflow

    obs.enable(tracking_uri=sqlite_uri, experiment_name="theirs_traces")
    program = _program(sl, lm, "theirs_program")
    theirs = sl.synalinks.callbacks.Monitor(
        tracking_uri=sqlite_uri, experiment_name="theirs", log_program_plot=False,
        log_program_model=False,
    )
    history = _fit(sl, program, [theirs])
    assert history.history["reward"] == [1.0]
    assert obs.flush(FLUSH)
    client = mlflow.MlflowClient(sqlite_uri)
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    runs = client.search_runs(list(experiments))
    assert runs and {experiments[r.info.experiment_id] for r in runs} == {"theirs"}, runs
    assert not [r for r in runs if "synalinks_obs.autolog" in r.data.tags]
    assert "theirs_program" not in experiments.values()  # autolog's experiment: never made

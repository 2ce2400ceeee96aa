"""Only a fit()'s own work goes to its run; a cost budget stops training cleanly.

Real trainings (offline LM, RandomFewShot) traced into SQLite stores. While ``fit()`` runs,
a program serving requests from a thread started before it, from a thread-pool shared with
the rest of the app and from another task of the same event loop keeps its traces in the
tracing experiment, unlinked; work that the run's callbacks start (a thread, the same
shared pool) joins the run. ``Monitor(max_cost_usd=...)`` stops the fit after its first
batch (tracing off: its second), and says so in a tag and one line.
"""

import asyncio
import concurrent.futures
import logging
import threading

import pytest
from qa_training import answer_fields, build_program, compile_program, data_models, dataset, lm_for
from traces import load_traces

TRACES = "separation_tracing"
SOURCE_RUN = "mlflow.sourceRun"
WAIT = 120


@pytest.fixture
def obs(monkeypatch):
    import synalinks_obs
    from synalinks_obs.runtime import RUNTIME

    monkeypatch.delenv("SYNALINKS_OBS_AUTOLOG_TRAINING", raising=False)
    yield synalinks_obs
    synalinks_obs.flush(120)
    synalinks_obs.uninstrument()
    assert RUNTIME.active_runs == [] and RUNTIME.run_observers == {}


@pytest.fixture
def qa_server():
    from fake_llm import FakeLLM

    with FakeLLM(fields=answer_fields) as server:
        yield server


def _roots(traces, name):
    return [t for t in traces if t.data.spans[0].name == f"Functional:{name}"]


def test_inference_beside_a_fit_stays_on_the_tracing_side(obs, qa_server, sqlite_uri):
    from synalinks_obs.callbacks import Monitor

    models = data_models()
    synalinks = models.synalinks
    obs.enable(tracking_uri=sqlite_uri, experiment_name=TRACES)
    lm = lm_for(models, qa_server)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="shared")
    pool.submit(lambda: None).result()  # its one worker thread exists before the fit
    go, served, errors = threading.Event(), threading.Event(), []

    def ask(program, number):
        return asyncio.run(program(models.Question(question=f"Question {number}?")))

    async def main():
        serving = await build_program(models, lm, name="serving")
        side = await build_program(models, lm, name="side")
        loop_go = asyncio.Event()

        def web_server():  # a thread the app started before training
            try:
                go.wait(WAIT)
                ask(serving, 40)
                pool.submit(ask, serving, 41).result(WAIT)  # the shared pool, for the app
            except BaseException as exc:
                errors.append(exc)
            finally:
                served.set()

        async def same_loop_server():  # a task of the same event loop, created before fit
            await loop_go.wait()
            await serving(models.Question(question="Question 42?"))

        class Traffic(synalinks.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch != 0:
                    return
                go.set()
                loop_go.set()
                assert served.wait(WAIT)
                pool.submit(ask, side, 43).result(WAIT)  # the same pool, for the run
                thread = threading.Thread(target=ask, args=(side, 44))
                thread.start()  # a thread the run's callback starts
                thread.join(WAIT)

        threading.Thread(target=web_server, daemon=True).start()
        server_task = asyncio.create_task(same_loop_server())
        program = await build_program(models, lm, name="trained")
        compile_program(models, program)
        monitor = Monitor(experiment_name="separation_runs", log_program_plot=False)
        x, y = dataset(models, range(6))
        await program.fit(
            x=x, y=y, validation_data=dataset(models, range(6, 9)), epochs=1, batch_size=3,
            callbacks=[monitor, Traffic()], verbose=0,
        )
        await server_task
        return monitor.run_id

    try:
        run_id = asyncio.run(main())
    finally:
        pool.shutdown()
    assert obs.flush(WAIT) and not errors
    outside = load_traces(sqlite_uri, TRACES)
    served_traces = _roots(outside, "serving")
    assert len(served_traces) == 3  # the thread, the shared pool for it, the other task
    for trace in served_traces:
        assert SOURCE_RUN not in trace.info.trace_metadata
        assert trace.info.tags["synalinks.trace_kind"] == "call"
        assert not trace.info.assessments
    run_traces = load_traces(sqlite_uri, "separation_runs")
    assert not _roots(run_traces, "serving")
    side = _roots(run_traces, "side")
    assert len(side) == 2  # the shared pool for the run, the callback's thread
    assert {t.info.trace_metadata.get(SOURCE_RUN) for t in side} == {run_id}
    assert {t.info.trace_metadata.get(SOURCE_RUN) for t in _roots(run_traces, "trained")} == {run_id}


@pytest.mark.parametrize("traced", [True, False], ids=["from-spans", "tracing-off"])
def test_a_cost_budget_stops_training_after_the_batch_that_passed_it(
    obs, qa_server, sqlite_uri, traced, caplog
):
    import mlflow

    from synalinks_obs.callbacks import Monitor

    models = data_models()
    if traced:
        obs.enable(tracking_uri=sqlite_uri, experiment_name=TRACES)
    monitor = Monitor(
        tracking_uri=sqlite_uri, experiment_name="budget_runs", max_cost_usd=1e-7,
        log_batch_metrics=True, log_program_plot=False,
    )

    async def main():
        program = await build_program(models, lm_for(models, qa_server), name="budgeted")
        compile_program(models, program)
        x, y = dataset(models, range(6))
        return await program.fit(
            x=x, y=y, validation_data=dataset(models, range(6, 9)), epochs=3, batch_size=3,
            callbacks=[monitor], verbose=0,
        )

    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        history = asyncio.run(main())
    assert obs.flush(WAIT)
    client = mlflow.MlflowClient(sqlite_uri)
    run = client.get_run(monitor.run_id)
    assert run.info.status == "FINISHED"
    assert len(history.history["reward"]) == 1  # stopped in epoch 0 ...
    batches = [m.step for m in client.get_metric_history(run.info.run_id, "train_batch_reward")]
    # ... after its first batch (tracing off: the LMs' usage is read when the next begins)
    assert batches == ([0] if traced else [0, 1])
    tags = run.data.tags
    assert tags["synalinks.stopped_by"] == "max_cost_usd"
    assert float(tags["synalinks.cost_usd_at_stop"]) > 1e-7
    assert run.data.metrics["epoch_cost"] > 1e-7  # ... by the cost the run did spend
    lines = [r.getMessage() for r in caplog.records if "max_cost_usd" in r.getMessage()]
    assert len(lines) == 1 and "training stops after the current batch" in lines[0]


def test_a_bad_budget_is_one_line_and_no_budget(caplog):
    from synalinks_obs.callbacks import Monitor

    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        monitor = Monitor(max_cost_usd=-3)
    assert monitor.max_cost_usd is None
    [line] = [r.getMessage() for r in caplog.records]
    assert "max_cost_usd=-3" in line and "max_cost_usd=5.0" in line and "without a budget" in line

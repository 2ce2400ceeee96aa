"""Per-example rewards as MLflow feedback on the traces of a real training run.

One ``fit()`` (RandomFewShot, 2 epochs, batches of 3, a validation set) and one standalone
``evaluate()`` of a question-answering program, traced into a SQLite store, against the
offline LM of ``qa_training``: it answers each question its own way ("Answer 7.") and the
calls of a batch in reverse order, so Synalinks' concurrent calls finish out of order. The
expected answer differs for every third question. Everything is read back through MLflow's
client: each trace's feedback must be the reward of *its own* answer against *its own*
question's expected answer, whatever order the calls finished in.
"""

import asyncio
import json
import types

import pytest
from qa_training import (
    METRIC,
    REWARD,
    UNANSWERED,
    answer_fields,
    build_program,
    compile_program,
    data_models,
    dataset,
    expected_of,
    lm_for,
    number_of,
)
from traces import load_traces

TRACES = "feedback_tracing"
EXPERIMENT = "feedback_runs"
SOURCE_RUN = "mlflow.sourceRun"
FLUSH_TIMEOUT = 120
TRAIN, VALIDATION, EVALUATION = range(0, 6), range(6, 9), range(9, 12)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from fake_llm import FakeLLM

    import synalinks_obs
    from synalinks_obs.callbacks import Monitor

    models = data_models()
    uri = f"sqlite:///{tmp_path_factory.mktemp('feedback') / 'mlflow.db'}"
    synalinks_obs.enable(tracking_uri=uri, experiment_name=TRACES)
    with FakeLLM(fields=answer_fields) as server:

        async def main():
            lm = lm_for(models, server, retry=1)  # an unanswerable question returns nothing
            program = await build_program(models, lm, name="qa_feedback")
            compile_program(models, program)
            monitor = Monitor(experiment_name=EXPERIMENT, log_program_plot=False)
            x, y = dataset(models, TRAIN)
            history = await program.fit(
                x=x, y=y, validation_data=dataset(models, VALIDATION), epochs=2, batch_size=3,
                callbacks=[monitor], verbose=0,
            )
            evaluation = Monitor(experiment_name=EXPERIMENT, log_program_plot=False)
            x, y = dataset(models, EVALUATION)
            await program.evaluate(x=x, y=y, batch_size=3, callbacks=[evaluation], verbose=0)
            return monitor.run_id, evaluation.run_id, history

        try:
            run_id, eval_run_id, history = asyncio.run(main())
            assert synalinks_obs.flush(FLUSH_TIMEOUT)
        finally:
            synalinks_obs.uninstrument()
    import mlflow

    client = mlflow.MlflowClient(uri)
    traces = load_traces(uri, EXPERIMENT)
    yield types.SimpleNamespace(
        uri=uri, client=client, run_id=run_id, eval_run_id=eval_run_id, history=history,
        experiment_id=client.get_experiment_by_name(EXPERIMENT).experiment_id,
        fit_traces=[t for t in traces if t.info.trace_metadata.get(SOURCE_RUN) == run_id],
        eval_traces=[t for t in traces if t.info.trace_metadata.get(SOURCE_RUN) == eval_run_id],
    )


def _number(trace):
    request = json.loads(trace.data.request)  # training calls: {"inputs": ..., "training": true}
    return number_of(request.get("inputs", request)["question"])


def _answer(trace):
    return json.loads(trace.data.response)["answer"]


def _assessments(trace, name):
    return [a for a in trace.info.assessments if a.name == name]


def test_every_scored_call_carries_its_own_reward_and_expectation(trained):
    programs = [t for t in trained.fit_traces if t.data.spans[0].name == "Functional:qa_feedback"]
    # per epoch: 2 training batches of 3, each with its validation minibatch (3) scored once
    # or twice (before and after the optimizer's proposal), then the epoch's validation (3)
    assert len(programs) >= 2 * (2 * (3 + 3) + 3)
    for trace in programs:
        number, answer = _number(trace), _answer(trace)
        [reward] = _assessments(trace, REWARD)
        assert reward.value == (1.0 if answer == expected_of(number) else 0.0), (number, answer)
        assert reward.source.source_type == "CODE" and reward.source.source_id == REWARD
        assert reward.run_id == trained.run_id
        [expectation] = _assessments(trace, "expected_output")
        assert expectation.value == {"answer": expected_of(number)}
        assert trace.info.tags["synalinks.epoch"] in ("0", "1")
        assert trace.info.tags["synalinks.phase"] in ("training", "validation")
    assert {_answer(t) == expected_of(_number(t)) for t in programs} == {True, False}


def test_compiled_metrics_are_feedback_per_example(trained):
    """Synalinks computes the metrics on validation predictions (the optimizer's minibatch
    and the epoch's validation): those traces carry the metric, equal to the reward."""
    measured = [t for t in trained.fit_traces if _assessments(t, METRIC)]
    validation = [t for t in trained.fit_traces if t.info.tags.get("synalinks.phase") == "validation"]
    assert len(validation) == 2 * len(VALIDATION)
    assert set(map(id, validation)) <= set(map(id, measured))
    for trace in measured:
        [metric] = _assessments(trace, METRIC)
        [reward] = _assessments(trace, REWARD)
        assert metric.value == reward.value and metric.source.source_id == METRIC


def test_the_calls_of_a_batch_finished_out_of_order(trained):
    """The premise of the match: Synalinks ran each validation batch concurrently, and the
    calls ended in another order than they started (the LM answers later questions first)."""
    validation = [t for t in trained.fit_traces if t.info.tags.get("synalinks.phase") == "validation"]
    for epoch in ("0", "1"):
        batch = sorted(
            (t for t in validation if t.info.tags["synalinks.epoch"] == epoch),
            key=lambda t: _number(t),
        )
        ends = [t.info.request_time + t.info.execution_duration for t in batch]
        assert ends == sorted(ends, reverse=True), f"epoch {epoch}: calls ended in order {ends}"
        starts = [t.info.request_time for t in batch]
        assert max(starts) < min(ends), "the batch's calls overlapped"


def test_search_traces_finds_the_failing_examples_of_an_epoch(trained):
    import mlflow

    mlflow.set_tracking_uri(trained.uri)  # (conftest resets it after the test)
    found = mlflow.search_traces(
        locations=[trained.experiment_id], run_id=trained.run_id, return_type="list",
        filter_string=f"feedback.{REWARD} < 1 AND tags.`synalinks.epoch` = '1'",
    )
    expected = {
        t.info.trace_id for t in trained.fit_traces
        if t.info.tags.get("synalinks.epoch") == "1" and _assessments(t, REWARD)
        and _assessments(t, REWARD)[0].value < 1
    }
    assert expected and {t.info.trace_id for t in found} == expected
    assert all(_number(t) % 3 == 0 for t in found)  # the questions whose answer is "wrong"


def test_evaluate_feedback(trained):
    assert len(trained.eval_traces) == len(EVALUATION)
    for trace in trained.eval_traces:
        [reward] = _assessments(trace, REWARD)
        [expectation] = _assessments(trace, "expected_output")
        number = _number(trace)
        assert expectation.value == {"answer": expected_of(number)}
        assert reward.run_id == trained.eval_run_id
        assert trace.info.tags["synalinks.phase"] == "evaluation"
        assert "synalinks.epoch" not in trace.info.tags
        if number in UNANSWERED:
            continue
        [metric] = _assessments(trace, METRIC)
        assert reward.value == metric.value == (0.0 if number % 3 == 0 else 1.0)


def test_a_call_that_returned_nothing_is_matched_by_its_input(trained):
    """The failing example a user most wants to see: no output object to match, so its
    reward (0) is filed by the input object the call received."""
    [failed] = [t for t in trained.eval_traces if _number(t) in UNANSWERED]
    assert json.loads(failed.data.response) is None
    [reward] = _assessments(failed, REWARD)
    assert reward.value == 0.0
    assert not _assessments(failed, METRIC)  # Synalinks' metric has no output to score

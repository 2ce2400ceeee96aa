"""README sentences that had no test of their own, each checked where it is true.

- "What a trace holds": LM spans carry OpenAI-style ``messages`` / ``choices`` (MLflow's
  chat view) and ``mlflow.llm.model``; ``DecisionModel`` is a ``CHAT_MODEL`` span;
- "Configuration": an unknown ``SYNALINKS_OBS_*`` variable is reported in one line
  listing the known ones; ``log_level`` is the level of the ``synalinks_obs`` logger;
- the defaults of ``synalinks_obs.hooks.Monitor`` (global tracing's URI and experiment,
  else ``MLFLOW_TRACKING_URI`` / ``MLFLOW_EXPERIMENT_NAME``) and of the training
  ``Monitor`` (experiment: the program's name, run name ``<program>-train-<date>-<time>``,
  store: tracing's, else ``MLFLOW_TRACKING_URI``; epoch metrics, plot and model on,
  batch metrics off);
- "What a run holds": every param, metric and tag of the README's table, and the status.

Everything is read back from a real sqlite store through MLflow's client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import types

import pytest
from conftest import SYNALINKS_09
from traces import load_traces

FLUSH = 120


@pytest.fixture
def sl():
    import synalinks

    class Question(synalinks.DataModel):
        question: str = synalinks.Field(description="The question to answer")

    class Answer(synalinks.DataModel):
        answer: str = synalinks.Field(description="The answer")

    return types.SimpleNamespace(synalinks=synalinks, Question=Question, Answer=Answer)


@pytest.fixture
def obs():
    import synalinks_obs

    yield synalinks_obs
    synalinks_obs.flush(FLUSH)
    synalinks_obs.uninstrument()


def real(traces):
    return [t for t in traces if not t.data.spans[0].attributes.get("synalinks.is_symbolic")]


# -- what a trace holds -----------------------------------------------------------------------


def test_lm_spans_carry_chat_messages_choices_and_the_model(obs, sl, lm, sqlite_uri):
    obs.enable(tracking_uri=sqlite_uri, experiment_name="chat")
    generator = sl.synalinks.Generator(data_model=sl.Answer, language_model=lm, name="gen")
    result = asyncio.run(generator(sl.Question(question="What is 2+2?")))
    assert obs.flush(FLUSH)
    (trace,) = real(load_traces(sqlite_uri, "chat"))
    (chat,) = [s for s in trace.data.spans if s.span_type == "CHAT_MODEL"]
    messages = chat.inputs["messages"]
    assert [m["role"] for m in messages][-1] == "user" and "What is 2+2?" in messages[-1]["content"]
    assert all(set(m) >= {"role", "content"} for m in messages)
    (choice,) = chat.outputs["choices"]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert json.loads(choice["message"]["content"])["answer"] == result.get("answer")
    assert chat.attributes["mlflow.llm.model"] == "openai/gpt-4o-mini"
    assert chat.attributes["mlflow.message.format"] == "openai"
    assert chat.attributes["mlflow.chat.tokenUsage"]["total_tokens"] > 0


def test_a_decision_model_is_a_chat_model_span(obs, sl, fake_llm, sqlite_uri):
    synalinks = sl.synalinks
    if not hasattr(synalinks, "DecisionModel"):
        pytest.skip(f"Synalinks {synalinks.__version__} has no DecisionModel")

    class Refund(synalinks.DataModel):
        refund: bool = synalinks.Field(description="Does `question` ask for a refund?")

    class MyDecisionModel(synalinks.DecisionModel):  # a subclass: matched through the MRO
        pass

    obs.enable(tracking_uri=sqlite_uri, experiment_name="decisions")
    for cls, name in ((synalinks.DecisionModel, "dm"), (MyDecisionModel, "mine")):
        model = cls(model="openai/gpt-4o-mini", api_base=fake_llm.base_url,
                    name=name, retry=1)
        try:  # the fake server has no decisions API: the call fails, and is recorded
            asyncio.run(model(sl.Question(question="I want my money back"), schema=Refund.get_schema()))
        except Exception:
            pass
    assert obs.flush(FLUSH)
    spans = {t.data.spans[0].name: t.data.spans[0] for t in real(load_traces(sqlite_uri, "decisions"))}
    assert {name: span.span_type for name, span in spans.items()} == {
        "DecisionModel:dm": "CHAT_MODEL", "MyDecisionModel:mine": "CHAT_MODEL",
    }


# -- configuration ------------------------------------------------------------------------------


def test_an_unknown_variable_is_reported_in_one_line(obs, sqlite_uri, monkeypatch, capfd):
    import synalinks  # noqa: F401

    monkeypatch.setenv("SYNALINKS_OBS_SAMPLE_RATIO", "0.5")  # a typo of SAMPLE_RATE
    obs.enable(tracking_uri=sqlite_uri)
    lines = capfd.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("synalinks-obs: unknown variable SYNALINKS_OBS_SAMPLE_RATIO (ignored); known: ")
    assert "SYNALINKS_OBS_SAMPLE_RATE" in lines[0] and "SYNALINKS_OBS_LOG_LEVEL" in lines[0]
    assert obs.is_enabled()  # the app runs traced with the rest of its settings


@pytest.mark.parametrize("how", ["environment", "argument"])
def test_log_level_is_the_level_of_our_logger(obs, sqlite_uri, monkeypatch, caplog, how):
    import synalinks  # noqa: F401

    from synalinks_obs import reporting

    ours = logging.getLogger("synalinks_obs")
    level = ours.level
    try:
        if how == "environment":
            monkeypatch.setenv("SYNALINKS_OBS_LOG_LEVEL", "info")
            obs.enable(tracking_uri=sqlite_uri)
        else:
            obs.enable(tracking_uri=sqlite_uri, log_level="INFO")
        assert ours.level == logging.INFO
        with caplog.at_level(logging.NOTSET):  # our logger decides, not the handler
            reporting.logger("synalinks_obs.export.exporter").info("an info line")
            reporting.logger("synalinks_obs.export.exporter").debug("a debug line")
        said = [r.getMessage() for r in caplog.records if r.name.startswith("synalinks_obs")]
        assert said == ["an info line"]
        obs.enable(tracking_uri=sqlite_uri, log_level="ERROR")
        assert ours.level == logging.ERROR
        with pytest.raises(ValueError, match="log_level='LOUD' is not valid"):
            obs.enable(tracking_uri=sqlite_uri, log_level="LOUD")
    finally:
        ours.setLevel(level)


# -- the Monitors' defaults ------------------------------------------------------------------


def test_the_hook_monitors_defaults(obs, sl, tmp_path, monkeypatch):
    """No arguments: global tracing's URI and experiment when it is on; else
    MLFLOW_TRACKING_URI and MLFLOW_EXPERIMENT_NAME."""
    from synalinks_obs.hooks import Monitor

    Step = _step(sl)
    tracing_uri, env_uri = (f"sqlite:///{tmp_path / name}.db" for name in ("tracing", "env"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env_uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "from_env")
    monitor = Monitor()
    assert (monitor.tracking_uri, monitor.experiment_name) == (None, None)
    monitored = Step(name="monitored")
    monitored.add_hook(monitor)
    asyncio.run(monitored(sl.Question(question="tracing off")))
    obs.enable(tracking_uri=tracing_uri, experiment_name="global")
    asyncio.run(monitored(sl.Question(question="tracing on")))
    assert obs.flush(FLUSH)
    questions = {
        (uri, experiment): [t.data.spans[0].inputs["question"] for t in real(load_traces(uri, experiment))]
        for uri, experiment in ((env_uri, "from_env"), (tracing_uri, "global"))
    }
    assert questions == {(env_uri, "from_env"): ["tracing off"], (tracing_uri, "global"): ["tracing on"]}


def _step(sl):
    class Step(sl.synalinks.Module):
        async def call(self, inputs, training=False):
            return inputs.clone()

        async def compute_output_spec(self, inputs, training=False):
            return inputs.clone()

    return Step


def _trained(sl, lm, name, callbacks, epochs, metrics=()):
    import numpy as np

    synalinks = sl.synalinks

    def data(size):
        x = np.array([sl.Question(question=f"Question {i}?") for i in range(size)], dtype="object")
        y = np.array([sl.Answer(answer="Example answer.") for _ in range(size)], dtype="object")
        return x, y

    async def main():
        inputs = synalinks.Input(data_model=sl.Question)
        outputs = await synalinks.Generator(data_model=sl.Answer, language_model=lm)(inputs)
        program = synalinks.Program(inputs=inputs, outputs=outputs, name=name)
        program.compile(reward=synalinks.rewards.ExactMatch(in_mask=["answer"]),
                        optimizer=synalinks.optimizers.RandomFewShot(), metrics=list(metrics))
        x, y = data(4)
        return await program.fit(x=x, y=y, validation_data=data(2), epochs=epochs, batch_size=2,
                                 callbacks=callbacks, verbose=0)

    return asyncio.run(main())


def test_the_training_monitors_defaults_outside_tracing(obs, sl, lm, tmp_path, monkeypatch):
    """``Monitor()`` with tracing off: MLFLOW_TRACKING_URI, the program's name as the
    experiment, ``<program>-train-<date>-<time>``; epoch metrics, plot and model logged,
    batch metrics not."""
    import mlflow

    from synalinks_obs.callbacks import Monitor

    uri = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monitor = Monitor()
    _trained(sl, lm, "default_program", [monitor], epochs=1)
    run = mlflow.MlflowClient(uri).get_run(monitor.run_id)
    assert mlflow.MlflowClient(uri).get_experiment(run.info.experiment_id).name == "default_program"
    assert re.fullmatch(r"default_program-train-\d{8}-\d{6}", run.info.run_name), run.info.run_name
    assert "reward" in run.data.metrics and not [k for k in run.data.metrics if "_batch_" in k]
    paths = _artifacts(uri, run.info.run_id)
    assert {"model/state_tree.json", "model/model_info.json", "program_plots/default_program.svg",
            "program_plots/default_program.txt"} <= set(paths)


def _artifacts(uri, run_id, path=None):
    import mlflow

    found = []
    for item in mlflow.MlflowClient(uri).list_artifacts(run_id, path):
        found.extend(_artifacts(uri, run_id, item.path) if item.is_dir else [item.path])
    return found


# -- what a run holds -----------------------------------------------------------------------------

# The README's "What a run holds" table, name by name.
README_PARAMS = ["epochs", "batch_size", "optimizer", "train_size", "val_size", "program_name",
                 "program_class", "num_modules", "num_trainable_variables", "reward", "metrics"]
README_EPOCH_METRICS = ["reward", "val_reward", "epoch_duration_s", "epoch_cost", "epoch_tokens"]
README_END_METRICS = ["fit_duration_s", "fit_cost", "fit_tokens"]
README_TAGS = ["synalinks.program", "synalinks.run_type", "synalinks_obs.autolog", "mlflow.user",
               "mlflow.source.name"]


def test_a_run_holds_every_param_metric_and_tag_of_the_readme(obs, sl, lm, sqlite_uri):
    """Tracing on, ``Monitor(tags=...)`` otherwise at its defaults (the store: tracing's),
    a compiled metric, two epochs: everything the README's table lists is there."""
    import mlflow

    from synalinks_obs.callbacks import Monitor

    obs.enable(tracking_uri=sqlite_uri, experiment_name="claims_traces")
    monitor = Monitor(tags={"dataset": "toy"})
    metric = sl.synalinks.metrics.F1Score(in_mask=["answer"])
    _trained(sl, lm, "table_program", [monitor], epochs=2, metrics=[metric])
    assert obs.flush(FLUSH)
    client = mlflow.MlflowClient(sqlite_uri)  # the store tracing writes to
    run = client.get_run(monitor.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    expected_params = [p for p in README_PARAMS if not (SYNALINKS_09 and p in ("train_size", "val_size"))]
    assert [p for p in expected_params if p not in params] == [], params
    assert params["metrics"] == metric.name and params["reward"] == "exact_match"
    compiled = [metric.name, f"val_{metric.name}"]  # "every compiled metric", per epoch
    for key in README_EPOCH_METRICS + compiled:
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == [0, 1], key
    for key in README_END_METRICS:
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1], key
    assert run.data.metrics["epoch_cost"] > 0 and run.data.metrics["fit_tokens"] > 0
    tags = run.data.tags
    assert [t for t in README_TAGS if t not in tags] == [], tags
    assert tags["dataset"] == "toy" and tags["synalinks.run_type"] == "train"
    assert tags["synalinks.program"] == "table_program" and tags["synalinks_obs.autolog"] == "false"

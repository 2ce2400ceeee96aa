"""The private names the training log reads (``compat.synalinks``, ``compat.mlflow``),
broken on purpose: training goes on, one warning names what is missing and what that
costs, ``doctor``'s compatibility check lists it."""

import asyncio
import json
import logging

import pytest
from qa_training import answer_fields, build_program, compile_program, data_models, dataset, lm_for


@pytest.fixture(autouse=True)
def fresh_compat(monkeypatch):
    from synalinks_obs import compat

    monkeypatch.setattr(compat, "_FALLBACKS", {})
    yield


def _noted(name):
    from synalinks_obs.cli.checks import check_fallbacks
    from synalinks_obs.compat import fallbacks_in_use

    check = check_fallbacks()
    return name in fallbacks_in_use() and not check.ok and name in check.detail


def _warnings(caplog, name):
    return [r for r in caplog.records if r.name.startswith("synalinks_obs") and name in r.getMessage()]


def test_fit_inputs_hidden_means_datasets_from_the_call(sqlite_uri, monkeypatch, caplog):
    """A Synalinks that does not expose ``_fit_inputs`` to callbacks: the datasets logged
    are what fit() was given (x, y, validation_data)."""
    import mlflow
    from fake_llm import FakeLLM
    from synalinks.src.trainers.trainer import Trainer

    from synalinks_obs.callbacks import Monitor

    hidden = property(lambda self: None, lambda self, value: None)  # assignments vanish
    monkeypatch.setattr(Trainer, "_fit_inputs", hidden, raising=False)
    models = data_models()
    monitor = Monitor(tracking_uri=sqlite_uri, log_program_plot=False, register_prompts=False)
    with FakeLLM(fields=answer_fields) as server:

        async def main():
            program = await build_program(models, lm_for(models, server), name="hidden_inputs")
            compile_program(models, program)
            x, y = dataset(models, range(3))
            return await program.fit(
                x=x, y=y, validation_data=dataset(models, range(3, 5)), epochs=1, batch_size=3,
                callbacks=[monitor], verbose=0,
            )

        with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
            history = asyncio.run(main())
    assert len(history.history["reward"]) == 1
    run = mlflow.MlflowClient(sqlite_uri).get_run(monitor.run_id)
    rows = {tag.value: json.loads(item.dataset.profile)["num_rows"]
            for item in run.inputs.dataset_inputs for tag in item.tags}
    assert rows == {"training": 3, "validation": 2}
    assert len(_warnings(caplog, "Trainer._fit_inputs")) == 1 and _noted("Trainer._fit_inputs")


def test_trainable_missing_means_the_known_bookkeeping_fields(monkeypatch, caplog):
    import synalinks

    from synalinks_obs.training.state_diff import learned

    state = synalinks.Instructions(instructions="Be brief.", predictions=[{"inputs": {}, "outputs": {}}]).get_json()
    tree = {"trainable_variables": {"answerer": {"state": state}}}
    expected = learned(tree)
    monkeypatch.delattr(synalinks, "Trainable")
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        assert learned(tree) == expected == {"answerer/state": {"examples": [], "instructions": "Be brief."}}
    assert len(_warnings(caplog, "synalinks.Trainable")) == 1 and _noted("synalinks.Trainable")


def test_mean_metric_state_renamed_means_no_metric_feedback(caplog):
    import synalinks

    from synalinks_obs.compat import synalinks as synalinks_compat

    metric = synalinks.metrics.MeanMetricWrapper(synalinks.rewards.exact_match, name="m")
    assert synalinks_compat.mean_metric_state(metric) == (0.0, 0)
    del metric.total_with_count  # as if a release renamed it
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        assert synalinks_compat.mean_metric_state(metric) is None
    assert len(_warnings(caplog, "Mean.total_with_count")) == 1 and _noted("Mean.total_with_count")


def test_mean_metric_wrapper_missing_means_no_metric_patch(monkeypatch):
    import synalinks

    from synalinks_obs.patching.registry import PatchRegistry
    from synalinks_obs.training import feedback

    wrapper = synalinks.metrics.MeanMetricWrapper
    monkeypatch.delattr(synalinks.metrics, "MeanMetricWrapper")
    registry = PatchRegistry()
    feedback.install(registry)  # rewards are still matched, metrics are not
    try:
        assert not registry.is_patched(wrapper, "update_state")
        assert _noted("synalinks.metrics.MeanMetricWrapper")
    finally:
        registry.revert()


def test_generator_render_missing_means_no_registered_prompt(monkeypatch, caplog, lm):
    import synalinks

    from synalinks_obs.compat import synalinks as synalinks_compat

    models = data_models()

    async def build():
        return await build_program(models, lm, name="no_render")

    program = asyncio.run(build())
    [generator] = [m for m in program._flatten_modules(include_self=False) if isinstance(m, synalinks.Generator)]
    assert "<instructions>" in synalinks_compat.system_prompt(generator)
    monkeypatch.delattr(synalinks.Generator, "_render_system_message")
    from synalinks_obs.training.prompts import trainable_prompts

    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        assert trainable_prompts(program) == {}
    name = "Generator._render_system_message"
    assert len(_warnings(caplog, name)) == 1 and _noted(name)


def test_mlflow_prompt_experiment_link_missing(sqlite_uri, caplog, lm):
    """A client without ``_link_prompt_to_experiment``: the prompt is registered, just not
    listed under the run's experiment."""
    import types

    import mlflow

    from synalinks_obs.compat import mlflow as mlflow_compat
    from synalinks_obs.training.prompts import PromptRegistrar

    models = data_models()
    program = asyncio.run(build_program(models, lm, name="unlinked"))
    client = mlflow.MlflowClient(sqlite_uri)
    experiment = client.create_experiment("prompts")
    run_id = client.create_run(experiment).info.run_id
    [version] = PromptRegistrar(client, program, run_id, experiment, sqlite_uri).register("initial")
    assert version.name == "unlinked.answerer" and version.version == 1
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        mlflow_compat.link_prompt_to_experiment(types.SimpleNamespace(), version, experiment)
    name = "MlflowClient._link_prompt_to_experiment"
    assert len(_warnings(caplog, name)) == 1 and _noted(name)

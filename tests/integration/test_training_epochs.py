"""What the optimizer changed, epoch by epoch: states, diffs, best epoch, prompts, restore.

Two real trainings of the ``qa_training`` program on the offline LM, each for 3 epochs
with a validation set, logged by an explicit ``Monitor`` to a SQLite store: OMEGA rewrites
the generator's instructions (the offline LM proposes "Example instructions."), and
RandomFewShot picks few-shot examples. A recording callback keeps, independently of
synalinks-obs, the trainable state each epoch's validation scored and each epoch's logs;
every check compares what MLflow holds (read back through its client) with that record.
"""

import asyncio
import json
import random
import types
from pathlib import Path

import numpy as np
import pytest
from qa_training import answer_fields, build_program, compile_program, data_models, dataset, lm_for

TRAIN, VALIDATION = range(0, 6), range(6, 9)
EPOCHS = 3


def _learned(variable):
    """What training learns in a Generator's state: instructions and examples."""
    examples = [{k: v for k, v in e.items() if k != "reward"} for e in variable.get("examples") or []]
    return {"instructions": variable.get("instructions"), "examples": examples}


def _variable(state_tree):
    [module] = state_tree["trainable_variables"].values()
    [variable] = module.values()
    return variable


def _train(tmp_path_factory, optimizer_name, epochs=EPOCHS):
    from fake_llm import FakeLLM

    from synalinks_obs.callbacks import Monitor

    models = data_models()
    uri = f"sqlite:///{tmp_path_factory.mktemp(optimizer_name) / 'mlflow.db'}"
    synalinks = models.synalinks
    random.seed(7)
    np.random.seed(7)
    record = types.SimpleNamespace(validated={}, logs={}, initial=None)

    class Recorder(synalinks.callbacks.Callback):
        def on_train_begin(self, logs=None):
            if record.initial is None:
                record.initial = json.loads(json.dumps(self.program.get_state_tree()))

        def on_test_begin(self, logs=None):
            state = json.loads(json.dumps(self.program.get_state_tree()))  # a copy
            record.validated.setdefault(self._epoch, _variable(state))

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch

        def on_epoch_end(self, epoch, logs=None):
            record.logs[epoch] = dict(logs)

    with FakeLLM(fields=answer_fields) as server:
        lm = lm_for(models, server)
        name = f"qa_{optimizer_name.lower()}"

        async def main():
            program = await build_program(models, lm, name=name)
            optimizer = (
                synalinks.optimizers.OMEGA(language_model=lm, embedding_model=None)
                if optimizer_name == "OMEGA" else synalinks.optimizers.RandomFewShot(nb_max_examples=2)
            )
            compile_program(models, program, optimizer)
            monitor = Monitor(tracking_uri=uri, experiment_name="epochs", log_program_plot=False)
            x, y = dataset(models, TRAIN)
            validation = dataset(models, VALIDATION)
            await program.fit(
                x=x, y=y, validation_data=validation, epochs=epochs, batch_size=3,
                callbacks=[monitor, Recorder()], verbose=0,
            )
            final = _variable(program.get_state_tree())
            fresh = await build_program(models, lm, name=name)
            return monitor.run_id, final, fresh

        run_id, final, fresh = asyncio.run(main())
    import mlflow

    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_id)
    return types.SimpleNamespace(
        uri=uri, client=client, run=run, run_id=run_id, final=final, fresh=fresh, record=record,
        prompt=f"{name}.answerer",
    )


@pytest.fixture(scope="module")
def omega(tmp_path_factory):
    return _train(tmp_path_factory, "OMEGA")


@pytest.fixture(scope="module")
def few_shot(tmp_path_factory):
    return _train(tmp_path_factory, "RandomFewShot")


def _changed_epochs(record):
    """The epochs whose validated learned state differs from the last one stored before."""
    previous = _learned(_variable(record.initial))
    changed = []
    for epoch in range(EPOCHS):
        current = _learned(record.validated[epoch])
        if current != previous:
            changed.append(epoch)
            previous = current
    return changed


def _stored_epochs(trained):
    items = trained.client.list_artifacts(trained.run_id, "model/epochs")
    return sorted(int(Path(item.path).name) for item in items if item.is_dir)


def _read(trained, path, tmp_path):
    return Path(trained.client.download_artifacts(trained.run_id, path, str(tmp_path))).read_text()


@pytest.mark.parametrize("scenario", ["omega", "few_shot"])
def test_a_state_and_a_diff_for_each_epoch_that_changed(scenario, request, tmp_path):
    trained = request.getfixturevalue(scenario)
    changed = _changed_epochs(trained.record)
    assert changed, "the optimizer changed something"
    assert _stored_epochs(trained) == changed
    for epoch in changed:
        base = f"model/epochs/{epoch}"
        state = json.loads(_read(trained, f"{base}/state_tree.json", tmp_path))
        assert _variable(state) == trained.record.validated[epoch]
        text = _read(trained, f"{base}/diff.md", tmp_path)
        val_reward = trained.record.logs[epoch]["val_reward"]
        assert f"# Epoch {epoch}: what the optimizer changed" in text
        assert f"val_reward = {val_reward:.4g}" in text
        diff = json.loads(_read(trained, f"{base}/diff.json", tmp_path))
        assert diff["epoch"] == epoch and diff["scores"]["val_reward"] == val_reward
        assert {c["module"] for c in diff["changes"]} == {"answerer"}


def test_instructions_rewritten_are_shown(omega, tmp_path):
    [epoch, *_] = _changed_epochs(omega.record)
    before = _variable(omega.record.initial)["instructions"]
    after = omega.record.validated[epoch]["instructions"]
    assert before != after
    text = _read(omega, f"model/epochs/{epoch}/diff.md", tmp_path)
    assert "`state_answerer.instructions` rewritten:" in text
    assert f"> {before}" in text and f"> {after}" in text


def test_examples_added_and_removed_are_counted(few_shot, tmp_path):
    previous = _learned(_variable(few_shot.record.initial))["examples"]
    for epoch in _changed_epochs(few_shot.record):
        current = _learned(few_shot.record.validated[epoch])["examples"]
        added = [e for e in current if e not in previous]
        removed = [e for e in previous if e not in current]
        text = _read(few_shot, f"model/epochs/{epoch}/diff.md", tmp_path)
        assert f"`state_answerer.examples`: {len(added)} added, {len(removed)} removed" in text
        for example in added:
            assert f"  - added: {json.dumps(example['inputs'])}" in text
        previous = current


@pytest.mark.parametrize("scenario", ["omega", "few_shot"])
def test_the_best_epoch_is_tagged(scenario, request):
    trained = request.getfixturevalue(scenario)
    rewards = [trained.record.logs[e]["val_reward"] for e in range(EPOCHS)]
    best = rewards.index(max(rewards))
    history = trained.client.get_metric_history(trained.run_id, "val_reward")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == rewards
    assert trained.run.data.tags["synalinks.best_epoch"] == str(best)
    assert float(trained.run.data.tags["synalinks.best_val_reward"]) == pytest.approx(max(rewards))


@pytest.mark.parametrize("scenario", ["omega", "few_shot"])
def test_restore_state_of_an_epoch_the_best_or_the_final(scenario, request):
    from synalinks_obs.callbacks import restore_state

    trained = request.getfixturevalue(scenario)
    stored = _changed_epochs(trained.record)
    for epoch in range(stored[0], EPOCHS):
        restore_state(trained.fresh, trained.run_id, tracking_uri=trained.uri, epoch=epoch)
        expected = trained.record.validated[max(e for e in stored if e <= epoch)]
        assert _variable(trained.fresh.get_state_tree()) == expected
    best = int(trained.run.data.tags["synalinks.best_epoch"])
    restore_state(trained.fresh, trained.run_id, tracking_uri=trained.uri, epoch="best")
    assert _variable(trained.fresh.get_state_tree()) == trained.record.validated[
        max(e for e in stored if e <= best)
    ]
    restore_state(trained.fresh, trained.run_id, tracking_uri=trained.uri)
    assert _variable(trained.fresh.get_state_tree()) == trained.final
    if stored[0] > 0:
        with pytest.raises(ValueError, match="stored no epoch state up to epoch 0"):
            restore_state(trained.fresh, trained.run_id, tracking_uri=trained.uri, epoch=0)


def _versions(trained):
    from mlflow.genai import load_prompt

    found, version = [], 1
    while True:
        try:
            found.append(load_prompt(f"prompts:/{trained.prompt}/{version}"))
        except Exception:
            return found
        version += 1


@pytest.mark.parametrize("scenario", ["omega", "few_shot"])
def test_learned_prompts_in_the_prompt_registry(scenario, request, monkeypatch):
    import mlflow

    trained = request.getfixturevalue(scenario)
    mlflow.set_tracking_uri(trained.uri)  # load_prompt reads MLflow's registry URI
    versions = _versions(trained)
    first_run = [v for v in versions if v.tags.get("synalinks.run_id") == trained.run_id]
    changed = _changed_epochs(trained.record)
    assert [v.tags["synalinks.epoch"] for v in first_run] == ["initial", *map(str, changed)]
    initial = first_run[0].template[0]["content"]
    assert _variable(trained.record.initial)["instructions"] in initial
    for version, epoch in zip(first_run[1:], changed, strict=True):
        system, user = version.template
        learned = trained.record.validated[epoch]
        assert user == {"role": "user", "content": "{{ inputs }}"}
        assert learned["instructions"] in system["content"]
        for example in learned["examples"]:
            assert example["inputs"]["question"] in system["content"]
        assert float(version.tags["synalinks.val_reward"]) == pytest.approx(
            trained.record.logs[epoch]["val_reward"]
        )
    listed = trained.run.data.tags["synalinks.prompts"]
    assert listed == f"{trained.prompt}/{first_run[-1].version}"


def test_a_prompt_that_did_not_change_gets_no_new_version(few_shot):
    """Two runs that start from the same prompt: the second registers no version, it links
    the one the first registered or linked (and names it); the texts of a prompt's
    versions never repeat."""
    import mlflow

    from synalinks_obs.callbacks import restore_state
    from synalinks_obs.training.prompts import PromptRegistrar

    mlflow.set_tracking_uri(few_shot.uri)
    restore_state(few_shot.fresh, few_shot.run_id, tracking_uri=few_shot.uri)  # a known state
    client, experiment = few_shot.client, few_shot.run.info.experiment_id
    runs = [client.create_run(experiment).info.run_id for _ in range(2)]
    first = PromptRegistrar(client, few_shot.fresh, runs[0], experiment, few_shot.uri)
    second = PromptRegistrar(client, few_shot.fresh, runs[1], experiment, few_shot.uri)
    first.register("initial")
    version = first.versions[few_shot.prompt].version
    assert second.register("initial") == []
    assert second.versions[few_shot.prompt].version == version
    for run_id in runs:
        tag = client.get_run(run_id).data.tags["synalinks.prompts"]
        assert tag == f"{few_shot.prompt}/{version}"
    texts = [v.template[0]["content"] for v in _versions(few_shot)]
    assert all(a != b for a, b in zip(texts, texts[1:], strict=False))

"""The data of a run as its MLflow dataset inputs, and the routed training options.

Two real trainings on the same data (offline LM, RandomFewShot, 2 epochs): the first
through ``synalinks.enable_observability(...)`` with training options (the autolog run),
the second with an explicit ``Monitor`` and a two-row preview, then a standalone
``evaluate()``. Read back through MLflow's client: each run's dataset inputs (name,
digest, row count, the data models' JSON schemas, context), the same digest for the same
data, the bounded preview beside them.
"""

import asyncio
import json
import logging
import types
from pathlib import Path

import pytest
from qa_training import answer_fields, build_program, compile_program, data_models, dataset, lm_for

TRAIN, VALIDATION, EVALUATION = range(0, 6), range(6, 9), range(9, 12)
CONTEXT = "mlflow.data.context"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import synalinks
    from fake_llm import FakeLLM

    import synalinks_obs
    from synalinks_obs.callbacks import Monitor

    models = data_models()
    uri = f"sqlite:///{tmp_path_factory.mktemp('datasets') / 'mlflow.db'}"
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("synalinks_obs").addHandler(handler)
    try:
        synalinks_obs.enable(tracking_uri=uri, experiment_name="datasets_tracing")  # routes
        synalinks_obs.disable()  # Synalinks' own API, which now turns tracing on
        synalinks.enable_observability(
            tracking_uri=uri, experiment_name="datasets_tracing", run_name="routed_run",
            registered_model_name="routed_model", register_prompts=False, log_inputs=True,
        )
        with FakeLLM(fields=answer_fields) as server:

            async def main():
                program = await build_program(models, lm_for(models, server), name="qa_data")
                compile_program(models, program)
                x, y = dataset(models, TRAIN)
                validation = dataset(models, VALIDATION)
                await program.fit(x=x, y=y, validation_data=validation, epochs=2, batch_size=3, verbose=0)
                explicit = Monitor(experiment_name="qa_data", dataset_preview_rows=2, log_program_plot=False)
                await program.fit(
                    x=x, y=y, validation_data=validation, epochs=2, batch_size=3, verbose=0,
                    callbacks=[explicit],
                )
                evaluation = Monitor(experiment_name="qa_data", log_program_plot=False)
                x, y = dataset(models, EVALUATION)
                await program.evaluate(x=x, y=y, batch_size=3, verbose=0, callbacks=[evaluation])
                return explicit.run_id, evaluation.run_id

            explicit, evaluation = asyncio.run(main())
            assert synalinks_obs.flush(120)
    finally:
        from synalinks_obs.runtime import RUNTIME

        logging.getLogger("synalinks_obs").removeHandler(handler)
        synalinks_obs.uninstrument()
        RUNTIME.training_options = {}  # (uninstrument keeps them) not for the next tests
    import mlflow

    client = mlflow.MlflowClient(uri)
    [routed] = [r for r in client.search_runs([client.get_experiment_by_name("qa_data").experiment_id])
                if r.info.run_name == "routed_run"]
    return types.SimpleNamespace(
        uri=uri, client=client, models=models, records=records,
        routed=routed, explicit=client.get_run(explicit), evaluation=client.get_run(evaluation),
    )


def _inputs(run):
    """{context: Dataset} of a run's dataset inputs."""
    found = {}
    for item in run.inputs.dataset_inputs:
        [context] = [tag.value for tag in item.tags if tag.key == CONTEXT]
        found[context] = item.dataset
    return found


def test_datasets_are_the_runs_inputs(runs):
    for run in (runs.routed, runs.explicit):
        inputs = _inputs(run)
        assert set(inputs) == {"training", "validation"}
        for context, size in (("training", len(TRAIN)), ("validation", len(VALIDATION))):
            dataset = inputs[context]
            assert dataset.name == f"qa_data-{context}"
            assert json.loads(dataset.profile) == {"num_rows": size}
            schema = json.loads(dataset.schema)
            assert schema["synalinks"]["x"] == runs.models.Question.get_schema()
            assert schema["synalinks"]["y"] == runs.models.Answer.get_schema()
            assert [(c["name"], c["type"]) for c in schema["mlflow_colspec"]] == [
                ("x.question", "string"), ("y.answer", "string"),
            ]
    assert set(_inputs(runs.evaluation)) == {"evaluation"}
    assert json.loads(_inputs(runs.evaluation)["evaluation"].profile) == {"num_rows": len(EVALUATION)}


def test_the_same_data_has_the_same_digest(runs):
    routed, explicit = _inputs(runs.routed), _inputs(runs.explicit)
    for context in ("training", "validation"):
        assert routed[context].digest == explicit[context].digest
    digests = {routed["training"].digest, routed["validation"].digest,
               _inputs(runs.evaluation)["evaluation"].digest}
    assert len(digests) == 3  # other data, another digest


def test_a_bounded_preview_beside_the_dataset(runs, tmp_path):
    def preview(run, context):
        local = runs.client.download_artifacts(run.info.run_id, f"datasets/{context}.json", str(tmp_path))
        return json.loads(Path(local).read_text())

    shown = preview(runs.explicit, "training")  # dataset_preview_rows=2
    assert shown["num_rows"] == len(TRAIN) and shown["preview_rows"] == 2
    assert shown["digest"] == _inputs(runs.explicit)["training"].digest
    assert shown["rows"] == [
        {"x": {"question": "Question 0?"}, "y": {"answer": "Something else."}},
        {"x": {"question": "Question 1?"}, "y": {"answer": "Answer 1."}},
    ]
    assert preview(runs.routed, "validation")["preview_rows"] == len(VALIDATION)  # default: 20


def test_the_routed_training_options_shape_the_autolog_run(runs):
    """synalinks.enable_observability(run_name=..., registered_model_name=...,
    register_prompts=..., log_inputs=...): every one reaches the run, none is ignored."""
    assert runs.routed.data.tags["synalinks_obs.autolog"] == "true"
    [version] = runs.client.search_model_versions("name='routed_model'")
    assert version.run_id == runs.routed.info.run_id
    assert "synalinks.prompts" not in runs.routed.data.tags  # register_prompts=False
    assert "synalinks.prompts" in runs.explicit.data.tags
    assert not [r for r in runs.records if "ignores" in r.getMessage()]

"""The trained program as an MLflow model, loaded in a fresh process.

A real training (RandomFewShot, 2 epochs, offline LM) with ``Monitor(registered_model_name=
...)`` logs the program as a pyfunc model under the run's ``model/``. A new Python process
(no synalinks-obs tracing, nothing shared but the store and the offline LM's address)
loads it with ``mlflow.pyfunc.load_model(f"runs:/{run_id}/model")`` and from the Model
Registry, and must answer like the trained program, from the same learned state: the
offline LM sees the learned few-shot examples in the request the loaded model sends.
"""

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import types

import pytest
from qa_training import answer_fields, build_program, compile_program, data_models, dataset, lm_for

QUESTIONS = ["Question 20?", "Question 22?"]
MODEL_NAME = "qa_model"

LOADER = textwrap.dedent("""
    import json, sys
    import mlflow
    import pandas as pd

    uri, run_id, name, questions = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    one = model.predict({"question": questions[0]})
    many = model.predict(pd.DataFrame({"question": questions}))
    registered = mlflow.pyfunc.load_model(f"models:/{name}/1").predict([{"question": questions[1]}])
    program = model.unwrap_python_model().program
    signature = model.metadata.signature
    print("RESULT" + json.dumps({
        "one": one, "many": many, "registered": registered,
        "state": program.get_state_tree()["trainable_variables"],
        "inputs": signature.inputs.input_names(), "outputs": signature.outputs.input_names(),
        "obs_loaded": "synalinks_obs.tracing.tracer" in sys.modules,
    }))
""")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    from fake_llm import FakeLLM

    from synalinks_obs.callbacks import Monitor

    models = data_models()
    folder = tmp_path_factory.mktemp("model")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with FakeLLM(fields=answer_fields) as server:

        async def main():
            program = await build_program(models, lm_for(models, server), name="qa_model_program")
            compile_program(models, program)
            monitor = Monitor(
                tracking_uri=uri, experiment_name="models", registered_model_name=MODEL_NAME,
                log_program_plot=False,
            )
            x, y = dataset(models, range(6))
            await program.fit(
                x=x, y=y, validation_data=dataset(models, range(6, 9)), epochs=2, batch_size=3,
                callbacks=[monitor], verbose=0,
            )
            answers = [(await program(models.Question(question=q))).get_json() for q in QUESTIONS]
            return monitor.run_id, answers, program.get_state_tree()["trainable_variables"]

        run_id, answers, state = asyncio.run(main())
        server.reset()
        env = {
            k: v for k, v in os.environ.items()
            if not k.startswith(("SYNALINKS_OBS", "SYNALINKS_OBSERVABILITY", "MLFLOW_"))
        }
        env.update(OPENAI_API_KEY="sk-test", LITELLM_LOCAL_MODEL_COST_MAP="True")
        done = subprocess.run(
            [sys.executable, "-c", LOADER, uri, run_id, MODEL_NAME, json.dumps(QUESTIONS)],
            env=env, cwd=folder, capture_output=True, text=True, timeout=600,
        )
        requests = server.requests
    assert done.returncode == 0, done.stderr[-3000:]
    [line] = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    import mlflow

    return types.SimpleNamespace(
        uri=uri, run_id=run_id, answers=answers, state=state, result=json.loads(line[6:]),
        requests=requests, client=mlflow.MlflowClient(uri),
    )


def test_the_loaded_model_answers_like_the_trained_program(loaded):
    result = loaded.result
    assert result["one"] == [loaded.answers[0]]
    assert result["many"] == loaded.answers
    assert result["registered"] == [loaded.answers[1]]
    assert result["obs_loaded"] is False  # nothing traced it: a plain MLflow model


def test_it_was_rebuilt_with_the_learned_state(loaded):
    learned = next(iter(next(iter(loaded.state.values())).values()))
    assert learned["examples"], "RandomFewShot learned few-shot examples"
    rebuilt = next(iter(next(iter(loaded.result["state"].values())).values()))
    assert rebuilt["examples"] == learned["examples"]
    assert rebuilt["instructions"] == learned["instructions"]
    # What the fresh process asked the LM: the learned examples are in its prompt.
    assert len(loaded.requests) == 1 + len(QUESTIONS) + 1
    system = loaded.requests[0]["messages"][0]["content"]
    for example in learned["examples"]:
        assert example["inputs"]["question"] in system


def test_signature_from_the_data_model_schemas(loaded):
    assert loaded.result["inputs"] == ["question"]
    assert loaded.result["outputs"] == ["answer"]


def test_registered_in_the_model_registry(loaded):
    [version] = loaded.client.search_model_versions(f"name='{MODEL_NAME}'")
    assert version.run_id == loaded.run_id and str(version.version) == "1"
    assert version.tags["synalinks.program"] == "qa_model_program"
    paths = {a.path for a in loaded.client.list_artifacts(loaded.run_id, "model")}
    assert {"model/MLmodel", "model/state_tree.json", "model/model_info.json"} <= paths

"""Tracing and training together, then the learned state restored into a fresh program.

    python examples/train_restore.py [--tracking-uri URI]

The seed's "Combining Tracing with Training" example, with synalinks-obs:

1. tracing is enabled into the experiment ``synalinks_traces``: the symbolic calls that
   build the program land in its companion ``synalinks_traces-build``;
2. ``fit()`` runs with an explicit ``synalinks_obs.callbacks.Monitor`` (experiment
   ``training_runs``, run ``experiment_v1``, batch metrics, tags): the run gets the
   metrics and artifacts, and the traces of the calls made during training are linked to
   it in ``training_runs``;
3. a fresh program built by the same code loads ``model/state_tree.json`` from the run
   with ``restore_state`` and has the same trainable variables as the trained one; it
   loads the state of the best epoch too (``epoch="best"``: ``model/epochs/<n>/``);
4. the trained program, logged as an MLflow model under ``model/``, is loaded with
   ``mlflow.pyfunc.load_model`` and answers a question.

The run also holds each example's reward as feedback on its trace, the datasets, the
readable diff of each epoch and the learned prompt in the Prompt Registry (see the
README's "Training runs").

Offline by default, like every example (see _offline_lm.py).
"""

import argparse
import asyncio
import json
import os

from train_qa import build_program, compile_program, train  # first: sets up the offline LM

import synalinks_obs
from synalinks_obs.callbacks import Monitor, restore_state


def variables(program):
    return [json.dumps(v.get_json(), sort_keys=True) for v in program.trainable_variables]


async def main(tracking_uri):
    synalinks_obs.enable(tracking_uri=tracking_uri, experiment_name="synalinks_traces")

    program = await build_program()  # symbolic calls: traced into synalinks_traces-build
    compile_program(program)
    monitor = Monitor(
        tracking_uri=tracking_uri,
        experiment_name="training_runs",
        run_name="experiment_v1",
        log_batch_metrics=True,
        tags={"optimizer": "RandomFewShot", "dataset": "capitals"},
    )
    history = await train(program, callbacks=[monitor])
    print(f"run {monitor.run_id}: val_reward per epoch {history.history['val_reward']}")

    fresh = await build_program()  # same code, untrained
    assert variables(fresh) != variables(program), "training changed nothing"
    restore_state(fresh, monitor.run_id, tracking_uri=tracking_uri)
    assert variables(fresh) == variables(program)
    print("restored model/state_tree.json into a fresh program: same trainable variables")
    restore_state(fresh, monitor.run_id, tracking_uri=tracking_uri, epoch="best")
    print("restored the state of the best epoch too")
    synalinks_obs.flush()

    import mlflow

    if not os.environ.get("SYNALINKS_EXAMPLE_MODEL"):
        os.environ.setdefault("OPENAI_API_KEY", "sk-offline")  # a key is never stored in a model
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(f"runs:/{monitor.run_id}/model")
    answer = model.predict({"question": "What is the capital of France?"})
    print(f"the MLflow model runs:/{monitor.run_id}/model answers {answer}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=None, help="default: MLflow's default store")
    asyncio.run(main(parser.parse_args().tracking_uri))

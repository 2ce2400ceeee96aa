"""A store that refuses assessments, datasets and prompts costs one warning each, never
the run.

A real ``mlflow server`` behind ``refusing_proxy.RefusingProxy``, which answers 403 to the
assessment, dataset-input and registry (prompt, model) endpoints and relays the rest. A
real traced training (offline LM, RandomFewShot, 2 epochs) logs through the proxy: training
completes, the run is FINISHED with its metrics, artifacts and traces, and each refused
kind of record was tried and cost exactly one warning.
"""

import asyncio
import logging
import re

import pytest
from qa_training import answer_fields, build_program, compile_program, data_models, dataset, lm_for
from refusing_proxy import RefusingProxy
from traces import load_traces

REFUSED = {
    "feedback": r"/traces/[^/]+/assessments",
    "datasets": r"/runs/log-inputs$",
    "registry": r"/registered-models/create$",
}


@pytest.mark.server
def test_refused_records_cost_one_warning_each(mlflow_server, tmp_path, caplog):
    import mlflow
    from fake_llm import FakeLLM

    import synalinks_obs
    from synalinks_obs.callbacks import Monitor

    models = data_models()
    experiment = f"refused_{tmp_path.name}"
    with RefusingProxy(mlflow_server.uri, REFUSED.values()) as proxy, FakeLLM(fields=answer_fields) as server:
        synalinks_obs.enable(tracking_uri=proxy.url, experiment_name=f"{experiment}_tracing")
        monitor = Monitor(
            experiment_name=experiment, registered_model_name=f"{experiment}_model",
            log_program_plot=False,
        )

        async def main():
            program = await build_program(models, lm_for(models, server), name="refused_program")
            compile_program(models, program)
            x, y = dataset(models, range(6))
            return await program.fit(
                x=x, y=y, validation_data=dataset(models, range(6, 9)), epochs=2, batch_size=3,
                callbacks=[monitor], verbose=0,
            )

        try:
            with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
                history = asyncio.run(main())
            assert synalinks_obs.flush(120)
        finally:
            synalinks_obs.uninstrument()
        refused = list(proxy.refused_paths)
    assert len(history.history["reward"]) == 2  # training went on
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    by_kind = {
        "feedback": [w for w in warnings if "did not take the feedback" in w],
        "datasets": [w for w in warnings if "could not log datasets" in w],
        "prompts": [w for w in warnings if "could not log prompts" in w],
        "model": [w for w in warnings if "could not log the registered model" in w],
    }
    assert {kind: len(found) for kind, found in by_kind.items()} == dict.fromkeys(by_kind, 1), warnings
    assert "PERMISSION_DENIED" in by_kind["feedback"][0] or "403" in by_kind["feedback"][0]
    assert len(warnings) == 4, warnings
    for pattern in REFUSED.values():  # each refused endpoint was really asked
        assert any(re.search(pattern, path) for path in refused), (pattern, refused)
    client = mlflow.MlflowClient(mlflow_server.uri)
    run = client.get_run(monitor.run_id)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_reward")] == [0, 1]
    assert "synalinks.best_epoch" in run.data.tags
    paths = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert "model/MLmodel" in paths and "model/state_tree.json" in paths
    traces = load_traces(mlflow_server.uri, experiment)
    assert traces and all(not t.info.assessments for t in traces)
    assert not run.inputs.dataset_inputs

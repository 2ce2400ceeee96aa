"""The oldest MLflow server the README supports (3.4.0), written to by today's client.

Companies upgrade their tracking server later than their apps. This starts MLflow
3.4.0's ``mlflow server`` from its own venv (tests/support/old_mlflow.py, built once and
cached) and runs the traced app (tests/support/traced_app.py: two calls and a ``fit()``
epoch) and ``doctor`` against it, with today's MLflow in the app. The exporter's batches
hold several traces (the export interval is longer than the app, so everything goes in
the exit flush, in one batch): a 3.4 server refuses a batch mixing traces, so this
checks that the writer sends those one trace per call (``store.trace_batches``). What
landed is read back through the server with MLflow's client.
"""

from __future__ import annotations

import json

import pytest
import traced_app
from support_base import ServiceUnavailable, skip_or_fail
from traces import load_traces, render


@pytest.fixture(scope="module")
def old_server(tmp_path_factory):
    import old_mlflow

    try:
        server = old_mlflow.OldMlflowServer(tmp_path_factory.mktemp("mlflow-3.4"))
        server.start()
    except ServiceUnavailable as missing:
        skip_or_fail(missing)
    yield server
    server.stop()


def app_env(server, experiment, fake_llm, **extra):
    return {"MLFLOW_TRACKING_URI": server.url, "MLFLOW_EXPERIMENT_NAME": experiment,
            "FAKE_LLM_URL": fake_llm.base_url, "OPENAI_API_KEY": "sk-test",
            # Longer than the app: every span goes in the exit flush, one batch of traces.
            "SYNALINKS_OBS_EXPORT_INTERVAL": "600", **extra}


@pytest.mark.server
def test_todays_client_traces_and_trains_into_mlflow_3_4_server(old_server, fake_llm, tmp_path):
    import mlflow
    import old_mlflow

    # Reading a 3.4 server's traces back downloads their spans through its artifact proxy
    # (mlflow-artifacts: URIs, resolved against the current tracking URI; conftest resets it).
    mlflow.set_tracking_uri(old_server.url)
    status, version = old_server.request("GET", "/version")
    assert (status, version) == (200, old_mlflow.DEFAULT_VERSION)

    app = traced_app.run("app", tmp_path, app_env(old_server, "old_server_app", fake_llm, APP_TRAIN="1"))
    assert app.returncode == 0, app.stderr[-3000:]
    assert not traced_app.obs_lines(app.stderr), app.stderr[-3000:]  # nothing dropped, no warning

    traces = load_traces(old_server.url, "old_server_app")
    real = [t for t in traces if not any(s.attributes.get("synalinks.is_symbolic") for s in t.data.spans)]
    assert len(real) == 2, "\n".join(render(t) for t in traces)
    for trace in real:
        assert sorted(s.span_type for s in trace.data.spans) == ["CHAIN", "CHAT_MODEL", "LLM"], render(trace)
        root = next(s for s in trace.data.spans if s.parent_id is None)
        assert root.name == "Functional:auth_qa" and root.attributes["synalinks.cost"] > 0

    client = mlflow.MlflowClient(old_server.url)
    experiment = client.get_experiment_by_name("auth_qa")  # the training run's (autolog)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert {"model", "program_plots"} <= {f.path for f in client.list_artifacts(run.info.run_id)}
    trained = load_traces(old_server.url, "auth_qa")
    # The fit() epoch's calls: more than one trace in the run's experiment, all written in
    # the same exit batch as the app's, linked to the run.
    assert len(trained) >= 2, "\n".join(render(t) for t in trained)
    assert {t.info.trace_metadata.get("mlflow.sourceRun") for t in trained} == {run.info.run_id}

    doctor = traced_app.run("doctor", tmp_path, app_env(old_server, "old_server_doctor", fake_llm), "--json")
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["trace write"]["ok"], checks["trace write"]
    assert doctor.returncode == 0, checks

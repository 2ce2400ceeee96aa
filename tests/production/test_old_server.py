"""Older MLflow servers, written to by today's client: the oldest supported, and one older.

Companies upgrade their tracking server later than their apps. These start an older
MLflow's ``mlflow server`` from its own venv (tests/support/old_mlflow.py, built once and
cached) and run the traced app (tests/support/traced_app.py: two calls and a ``fit()``
epoch) and ``doctor`` against it, with today's MLflow in the app.

- MLflow 3.13.0, the oldest server the README supports: everything lands and reads back
  through MLflow's client, with its trace tags (name, program, kind; older servers drop
  the tags we send as span attributes), the training run's traces linked to it.
- MLflow 3.4.0 (3.5 alike): it stores spans written with ``log_spans`` in its database
  but reads only trace artifacts back (client and UI show traces without spans), and
  refuses a batch mixing traces; 3.6 to 3.9 show them but answer 500 to a training
  run's link (measured on 3.6.0 and 3.7.0).
  The app still runs untouched; the writer and ``doctor`` say in one line that the server
  is too old and what to upgrade to (``store.server_support``).
"""

from __future__ import annotations

import json

import pytest
import traced_app
from support_base import ServiceUnavailable, skip_or_fail
from traces import load_traces, render

OLDEST_SUPPORTED = "3.13.0"
TOO_OLD = "3.4.0"


def server_of(version, tmp_path_factory):
    import old_mlflow

    try:
        server = old_mlflow.OldMlflowServer(tmp_path_factory.mktemp(f"mlflow-{version}"), version=version)
        server.start()
    except ServiceUnavailable as missing:
        skip_or_fail(missing)
    status, body = server.request("GET", "/version")
    assert (status, body) == (200, version)
    return server


@pytest.fixture(scope="module")
def oldest_server(tmp_path_factory):
    server = server_of(OLDEST_SUPPORTED, tmp_path_factory)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def too_old_server(tmp_path_factory):
    server = server_of(TOO_OLD, tmp_path_factory)
    yield server
    server.stop()


def app_env(server, experiment, fake_llm, **extra):
    return {"MLFLOW_TRACKING_URI": server.url, "MLFLOW_EXPERIMENT_NAME": experiment,
            "FAKE_LLM_URL": fake_llm.base_url, "OPENAI_API_KEY": "sk-test", **extra}


def doctor_checks(done):
    assert done.stdout.strip(), done.stderr[-3000:]
    return {c["name"]: c for c in json.loads(done.stdout)["checks"]}


@pytest.mark.server
def test_todays_client_traces_and_trains_into_the_oldest_supported_server(oldest_server, fake_llm, tmp_path):
    import mlflow

    # Spans are read back through the server (its artifact proxy too: mlflow-artifacts:
    # URIs resolve against the current tracking URI; conftest resets it).
    mlflow.set_tracking_uri(oldest_server.url)
    app = traced_app.run("app", tmp_path, app_env(oldest_server, "old_server_app", fake_llm, APP_TRAIN="1"))
    assert app.returncode == 0, app.stderr[-3000:]
    assert not traced_app.obs_lines(app.stderr), app.stderr[-3000:]  # nothing dropped, no warning

    traces = load_traces(oldest_server.url, "old_server_app")
    real = [t for t in traces if not any(s.attributes.get("synalinks.is_symbolic") for s in t.data.spans)]
    assert len(real) == 2, "\n".join(render(t) for t in traces)
    for trace in real:
        assert sorted(s.span_type for s in trace.data.spans) == ["CHAIN", "CHAT_MODEL", "LLM"], render(trace)
        root = next(s for s in trace.data.spans if s.parent_id is None)
        assert root.name == "Functional:auth_qa" and root.attributes["synalinks.cost"] > 0
        tags = trace.info.tags
        assert (tags.get("mlflow.traceName"), tags.get("synalinks.program"), tags.get("synalinks.trace_kind")) \
            == ("Functional:auth_qa", "auth_qa", "call"), tags

    client = mlflow.MlflowClient(oldest_server.url)
    experiment = client.get_experiment_by_name("auth_qa")  # the training run's (autolog)
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert {"model", "program_plots"} <= {f.path for f in client.list_artifacts(run.info.run_id)}
    trained = load_traces(oldest_server.url, "auth_qa")
    # The fit() epoch's calls, written in the same exit batch as the app's, linked to the run.
    assert len(trained) >= 2, "\n".join(render(t) for t in trained)
    assert {t.info.trace_metadata.get("mlflow.sourceRun") for t in trained} == {run.info.run_id}

    doctor = traced_app.run("doctor", tmp_path, app_env(oldest_server, "old_server_doctor", fake_llm), "--json")
    checks = doctor_checks(doctor)
    assert checks["trace write"]["ok"], checks["trace write"]
    assert doctor.returncode == 0, checks


@pytest.mark.server
def test_a_server_older_than_supported_is_named_by_the_app_and_doctor(too_old_server, fake_llm, tmp_path):
    app = traced_app.run("app", tmp_path, app_env(too_old_server, "too_old_app", fake_llm))
    assert app.returncode == 0 and app.exit_after_done is not None, app.stderr[-3000:]
    said = traced_app.obs_lines(app.stderr)
    assert len(said) == 1, app.stderr[-3000:]
    assert f"MLflow {TOO_OLD}, older than 3.10" in said[0] and "upgrade the server" in said[0], said

    doctor = traced_app.run("doctor", tmp_path, app_env(too_old_server, "too_old_doctor", fake_llm), "--json")
    check = doctor_checks(doctor)["trace write"]
    assert doctor.returncode == 1 and not check["ok"], check
    assert check["detail"] == f"the tracking server runs MLflow {TOO_OLD}, older than 3.10: it cannot show " \
        "our spans or link them to training runs", check
    assert check["fix"].startswith("upgrade the tracking server to MLflow >= 3.10"), check

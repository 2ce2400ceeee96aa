"""Tests of `traces.py`: traces written with MLflow's own fluent tracing API
(no synalinks_obs involved) must read back complete, in order, and render,
from a SQLite store and from a real tracking server."""

import uuid

import pytest
import traces
from traces import load_traces, render, span_tree, wait_for_traces


def trace_into(tracking_uri):
    """Point MLflow's global tracing at a new experiment; return its name.
    The autouse `_isolate_mlflow_globals` fixture undoes this after the test."""
    import mlflow
    from mlflow.entities.trace_location import MlflowExperimentLocation

    name = f"helpers-{uuid.uuid4().hex[:8]}"
    experiment_id = mlflow.MlflowClient(tracking_uri).create_experiment(name)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.tracing.set_destination(MlflowExperimentLocation(experiment_id=experiment_id))
    return name


def emit_trace(index):
    """root [CHAIN] -> answer [LLM] (OK), lookup [TOOL] (ERROR)."""
    import mlflow

    with mlflow.start_span("root", span_type="CHAIN") as root:
        root.set_inputs({"index": index})
        with mlflow.start_span("answer", span_type="LLM") as answer:
            answer.set_attribute("cost", 0.25)
        with pytest.raises(ValueError):
            with mlflow.start_span("lookup", span_type="TOOL"):
                raise ValueError(f"lookup {index} failed")


def test_round_trip_through_sqlite(sqlite_uri):
    experiment = trace_into(sqlite_uri)
    for index in range(3):
        emit_trace(index)

    loaded = load_traces(sqlite_uri, experiment)

    assert len(loaded) == 3
    # (ordered by start time, in milliseconds: two traces of the same millisecond tie)
    loaded.sort(key=lambda trace: span_tree(trace)["attributes"]["mlflow.spanInputs"]["index"])
    roots = [span_tree(trace) for trace in loaded]
    assert [root["attributes"]["mlflow.spanInputs"] for root in roots] == [
        {"index": 0},
        {"index": 1},
        {"index": 2},
    ]
    root = roots[0]
    assert (root["name"], root["span_type"], root["status"]) == ("root", "CHAIN", "OK")
    answer, lookup = root["children"]
    assert (answer["name"], answer["span_type"], answer["status"]) == ("answer", "LLM", "OK")
    assert answer["attributes"]["cost"] == 0.25
    assert (lookup["name"], lookup["status"]) == ("lookup", "ERROR")
    (event,) = lookup["events"]
    assert event["name"] == "exception"
    assert event["attributes"]["exception.message"] == "lookup 0 failed"

    text = render(loaded[0])
    assert text.splitlines()[1:3] == ["  root [CHAIN] OK", '    | mlflow.spanInputs = {"index": 0}']
    assert "    answer [LLM] OK" in text
    assert "      | cost = 0.25" in text
    assert "    lookup [TOOL] ERROR" in text
    assert "mlflow.traceRequestId" not in text
    assert "|" not in render(loaded[0], attributes=False)


def test_wait_for_traces_pages_through_a_server(mlflow_server, monkeypatch):
    monkeypatch.setattr(traces, "PAGE_SIZE", 2)
    experiment = trace_into(mlflow_server.uri)
    for index in range(5):
        emit_trace(index)

    loaded = wait_for_traces(mlflow_server.uri, experiment, 5)

    assert len(loaded) == 5
    assert len({trace.info.trace_id for trace in loaded}) == 5
    assert all(len(trace.data.spans) == 3 for trace in loaded)


def test_wait_for_traces_times_out(sqlite_uri):
    with pytest.raises(TimeoutError, match="saw 0.*No experiment named 'missing'"):
        wait_for_traces(sqlite_uri, "missing", 1, timeout=0.5)


def test_load_traces_requires_the_experiment(sqlite_uri):
    with pytest.raises(LookupError, match="missing"):
        load_traces(sqlite_uri, "missing")

"""MLflow's OTLP settings honoured for our spans (issue 15), with a real OTLP receiver.

``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` names a receiver on 127.0.0.1 (tests/support/otlp.py,
built on ``opentelemetry-proto``); with MLflow's dual-export switch
``MLFLOW_TRACE_ENABLE_OTLP_DUAL_EXPORT=true`` the same spans (ids, parents, ``synalinks.*``
attributes) arrive there and in the MLflow store; without it, only there (as MLflow does
for its own traces). An MLflow span opened inside a module call arrives there too, under
our span. Over OTLP/HTTP and, when grpcio is installed, OTLP/gRPC. A collector that
refuses the spans is one warning line, and MLflow still gets them.
"""

from __future__ import annotations

import asyncio
import json

import otlp
import pytest
from support_base import ServiceUnavailable, skip_or_fail
from traces import load_traces, render


@pytest.fixture
def synalinks():
    import synalinks as module

    return module


@pytest.fixture(params=["http/protobuf", "grpc"])
def receiver(request, monkeypatch):
    """A running OTLP receiver, MLflow's OTLP settings pointing at it."""
    protocol = request.param
    if protocol == "grpc" and (reason := otlp.grpc_unavailable()):
        skip_or_fail(ServiceUnavailable(reason, otlp.REQUIRE_GRPC_ENV))
    with otlp.OtlpReceiver(grpc=protocol == "grpc") as server:
        endpoint = server.traces_url if protocol == "http/protobuf" else f"http://{server.grpc_endpoint}"
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", protocol)
        server.protocol = protocol
        yield server
        import mlflow

        mlflow.tracing.reset()  # MLflow's own OTLP exporter lets go of this receiver


def _run(synalinks, lm, sqlite_uri, experiment):
    import mlflow

    import synalinks_obs

    class Step(synalinks.Module):
        """Opens an MLflow span inside the call."""

        async def call(self, inputs, training=False):
            with mlflow.start_span("user-span"):
                pass
            return inputs.clone()

        async def compute_output_spec(self, inputs, training=False):
            return inputs.clone()

    class Question(synalinks.DataModel):
        question: str

    class Answer(synalinks.DataModel):
        answer: str

    async def main():
        inputs = synalinks.Input(data_model=Question)
        x = await Step(name="step")(inputs)
        outputs = await synalinks.Generator(data_model=Answer, language_model=lm, name="gen")(x)
        program = synalinks.Program(inputs=inputs, outputs=outputs, name="qa")
        await program(Question(question="What is 2 + 2?"))

    mlflow.tracing.reset()  # MLflow reads its OTLP settings when its tracer is set up
    synalinks_obs.enable(tracking_uri=sqlite_uri, experiment_name=experiment)
    mlflow.set_experiment(experiment)
    try:
        asyncio.run(main())
        assert synalinks_obs.flush(30)
    finally:
        synalinks_obs.disable()


def _ours(received):
    """Our spans of the program call's trace (program building is a trace of its own)."""
    (root,) = [s for s in received if s.name == "Functional:qa"]
    return [s for s in received if "synalinks.call_id" in s.attributes and s.trace_id == root.trace_id]


def test_dual_export_same_spans_in_mlflow_and_at_the_receiver(
    receiver, synalinks, lm, sqlite_uri, request, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACE_ENABLE_OTLP_DUAL_EXPORT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri)
    experiment = f"exp_{request.node.name}"[:200]
    _run(synalinks, lm, sqlite_uri, experiment)

    received = receiver.wait_for_spans(7, timeout=30)  # 4 of ours, the user's, 2 of building
    (trace,) = load_traces(sqlite_uri, experiment)
    stored = {s.span_id: s for s in trace.data.spans}
    ours = _ours(received)
    assert len(ours) == 4, [s.name for s in received]
    otel_trace_id = {s.trace_id for s in ours}
    assert len(otel_trace_id) == 1
    assert trace.info.trace_id == "tr-" + otel_trace_id.pop()
    for span in ours:
        twin = stored[span.span_id]
        assert span.name == twin.name
        assert (span.parent_span_id or None) == twin.parent_id, render(trace)
        synalinks_keys = {k for k in span.attributes if k.startswith("synalinks.")}
        assert len(synalinks_keys) >= 9
        for key in synalinks_keys:
            assert json.loads(span.attributes[key]) == twin.attributes[key], key
        assert span.start_time_unix_nano == twin.start_time_ns
        assert span.end_time_unix_nano == twin.end_time_ns
        assert span.transport == ("grpc" if receiver.protocol == "grpc" else "http")
    (step,) = [s for s in ours if s.name == "Step:step"]
    (user,) = [s for s in received if s.name == "user-span"]
    assert user.parent_span_id == step.span_id and user.trace_id == step.trace_id
    assert stored[user.span_id].parent_id == step.span_id  # MLflow has it too
    root = [s for s in ours if not s.parent_span_id][0]
    assert json.loads(root.attributes["mlflow.traceTag.synalinks.program"]) == "qa"


def test_otlp_only_when_mlflow_says_so(receiver, synalinks, lm, sqlite_uri, request, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACE_ENABLE_OTLP_DUAL_EXPORT", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri)  # (the test's set_experiment: not ./mlflow.db)
    experiment = f"exp_{request.node.name}"[:200]
    _run(synalinks, lm, sqlite_uri, experiment)
    received = receiver.wait_for_spans(7, timeout=30)
    ours = _ours(received)
    assert len(ours) == 4 and len({s.trace_id for s in ours}) == 1
    (step,) = [s for s in ours if s.name == "Step:step"]
    (user,) = [s for s in received if s.name == "user-span"]
    assert user.parent_span_id == step.span_id
    try:
        traces = load_traces(sqlite_uri, experiment)
    except LookupError:  # no experiment: nothing was written to MLflow
        traces = []
    assert traces == []


def test_a_collector_that_refuses_is_one_line_and_mlflow_still_gets_the_spans(
    receiver, synalinks, lm, sqlite_uri, request, monkeypatch, caplog
):
    import logging

    if receiver.protocol == "grpc":
        pytest.skip("the receiver injects errors on OTLP/HTTP only")
    monkeypatch.setenv("MLFLOW_TRACE_ENABLE_OTLP_DUAL_EXPORT", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri)
    receiver.inject_errors(1000, status=400)  # not retried by the OTLP exporter
    experiment = f"exp_{request.node.name}"[:200]
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        _run(synalinks, lm, sqlite_uri, experiment)
    lines = [r.getMessage() for r in caplog.records
             if r.name.startswith("synalinks_obs") and "not sent to the OTLP endpoint" in r.getMessage()]
    assert lines, [r.getMessage() for r in caplog.records]
    assert all("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" in line for line in lines)
    (trace,) = load_traces(sqlite_uri, experiment)
    assert {s.name for s in trace.data.spans} >= {"Functional:qa", "Step:step", "Generator:gen"}
    assert not _ours_or_none(receiver.spans)


def _ours_or_none(received):
    return [s for s in received if "synalinks.call_id" in s.attributes]

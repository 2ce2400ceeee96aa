"""``store.trace_batches``: many traces in one export land in a local store, whatever its
MLflow; MLflow's SQL store of 3.11 refuses a batch mixing traces, so there the writer
sends one trace per call.

The export interval is longer than the test, so the six traces go in one batch at the
flush. ``natural`` lets the installed MLflow decide (mixed batches from 3.12, one trace
per call on 3.11.x, as in the matrix's ``oldest`` environment); ``per_trace`` forces one
trace per call on any MLflow. The batches the writer made are recorded around the real
``batches_for``; what landed is read back through MLflow's client.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from traces import load_traces, render

CALLS = 6


@pytest.mark.parametrize("mode", ["natural", "per_trace"])
def test_one_export_of_many_traces_lands_in_a_local_store(sqlite_uri, monkeypatch, mode):
    import mlflow
    import synalinks
    from packaging.version import Version

    import synalinks_obs
    from synalinks_obs.store import trace_batches, writer

    if mode == "per_trace":
        monkeypatch.setattr(trace_batches, "MIXED_LOCAL", "999")
    made = []
    real = trace_batches.batches_for

    def recording(spans, mixed):
        groups = real(spans, mixed)
        made.append([len({s.trace_id for s in group}) for group in groups])
        return groups

    monkeypatch.setattr(writer, "batches_for", recording)

    class Q(synalinks.DataModel):
        question: str

    class Echo(synalinks.Module):
        async def call(self, inputs, training=False):
            return inputs.clone()

    synalinks_obs.enable(tracking_uri=sqlite_uri, experiment_name="many_traces",
                         export_interval=600, export_process=False)
    try:
        async def main():
            echo = Echo(name="echo")
            return await asyncio.gather(*(echo(Q(question=f"q{i}")) for i in range(CALLS)))

        results = asyncio.run(main())
        assert synalinks_obs.flush(60)
    finally:
        synalinks_obs.uninstrument()
    assert [r.get("question") for r in results] == [f"q{i}" for i in range(CALLS)]

    per_trace = mode == "per_trace" or Version(mlflow.__version__) < Version("3.12")
    assert made == [[1] * CALLS] if per_trace else made == [[CALLS]], made
    traces = load_traces(sqlite_uri, "many_traces")
    asked = sorted(q for t in traces for q in (f"q{i}" for i in range(CALLS))
                   if f'"{q}"' in json.dumps(t.data.spans[0].inputs))
    assert asked == [f"q{i}" for i in range(CALLS)], "\n".join(render(t) for t in traces)
    assert all(len(t.data.spans) == 1 and t.data.spans[0].name == "Echo:echo" for t in traces)


def test_mlflow_3_11_refuses_what_the_writer_groups(sqlite_uri):
    """Why the grouping exists, on the MLflow installed: below 3.12 its SQL store refuses a
    batch mixing traces (the matrix's ``oldest`` environment runs MLflow 3.11.1)."""
    import mlflow
    from packaging.version import Version

    from synalinks_obs.cli.store_checks import _scratch_wire
    from synalinks_obs.compat import mlflow as mlflow_compat
    from synalinks_obs.store import trace_batches
    from synalinks_obs.store.experiments import resolve_experiment
    from synalinks_obs.store.mlflow_spans import wire_to_span

    client = mlflow_compat.tracing_client(sqlite_uri)
    experiment_id = resolve_experiment(sqlite_uri, "mixed")
    spans = [wire_to_span(_scratch_wire()) for _ in range(2)]
    mixed = trace_batches.accepts_mixed_traces(sqlite_uri, client)
    assert mixed is (Version(mlflow.__version__) >= Version("3.12"))
    if mixed:
        client.log_spans(experiment_id, spans)
    else:
        with pytest.raises(Exception, match="same trace"):
            client.log_spans(experiment_id, spans)
        for group in trace_batches.batches_for(spans, mixed):
            client.log_spans(experiment_id, group)
    found = mlflow.MlflowClient(sqlite_uri).search_traces(locations=[experiment_id])
    assert sorted(t.info.trace_id for t in found) == sorted(s.trace_id for s in spans)

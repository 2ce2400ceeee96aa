"""MLflow's own span flush, asked by synalinks-obs from two threads at once, never
overlaps and always returns.

``flush_all_batch_processors`` stops and restarts MLflow's asynchronous trace-logging
queue; before MLflow 3.17 two concurrent calls could leave one joining a consumer thread
the other had restarted, forever (seen in CI on MLflow 3.13: ``synalinks_obs.flush()`` on
the test's thread while the exporter thread wrote MLflow's spans of a trace before its
root). ``compat.mlflow.flush_mlflow_span_processors`` serialises the calls.
"""

import threading
import time

import pytest

ROUNDS = 15


def test_concurrent_mlflow_flushes_never_overlap(sqlite_uri, monkeypatch):
    import mlflow
    from mlflow.tracing.processor import base_mlflow

    from synalinks_obs.compat import mlflow as mlflow_compat

    real_flush = base_mlflow.flush_all_batch_processors
    inside = []
    overlaps = []

    def watched_flush(*args, **kwargs):  # the real flush, noting who else is inside
        inside.append(threading.current_thread().name)
        if len(inside) > 1:
            overlaps.append(list(inside))
        try:
            time.sleep(0.01)  # widen the window a concurrent caller would fall in
            return real_flush(*args, **kwargs)
        finally:
            inside.remove(threading.current_thread().name)

    monkeypatch.setattr(base_mlflow, "flush_all_batch_processors", watched_flush)
    mlflow.set_tracking_uri(sqlite_uri)
    mlflow.set_experiment("flush-race")
    with mlflow.start_span(name="warm"):  # MLflow's async queue is started by a trace
        pass

    finished = []

    def flusher(name):
        for _ in range(ROUNDS):
            with mlflow.start_span(name=f"{name}-span"):
                pass
            mlflow_compat.flush_mlflow_span_processors(30.0)
        finished.append(name)

    threads = [threading.Thread(target=flusher, args=(n,), name=n, daemon=True) for n in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    if any(thread.is_alive() for thread in threads):
        pytest.fail("a flush of MLflow's span processors never returned")
    assert sorted(finished) == ["a", "b"]
    assert overlaps == [], f"MLflow's flush ran in two threads at once: {overlaps[:3]}"
    traces = mlflow.search_traces(return_type="list", max_results=1000)
    assert len(traces) == 1 + 2 * ROUNDS

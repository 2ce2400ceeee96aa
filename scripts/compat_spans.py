"""What the traced run of scripts/compat-synalinks-tests wrote, per pytest worker.

    python scripts/compat_spans.py STORE_URI WORKERS MIN_SPANS OUT.json

Reads the run's store back through MLflow's own client: for each worker (``gw0``...,
or ``main`` when WORKERS is 0) the traces and spans of its experiments (the worker's
``synalinks_suite-<worker>`` and the ``-build`` companion of program building, named by
``scripts/compat_worker.py``). Writes the counts to OUT.json (the report's input) and
prints them. Exit status 1 when a worker wrote fewer than MIN_SPANS spans: tracing did
not start in that process, or its spans were lost, and the comparison proves nothing.
"""

import json
import os
import sys

import mlflow

BASE = os.environ.get("COMPAT_EXPERIMENT_BASE", "synalinks_suite")


def count(client, experiment_id) -> tuple[int, int]:
    """(traces, spans) of one experiment, every page."""
    traces = spans = 0
    token = None
    while True:
        page = client.search_traces(locations=[experiment_id], max_results=200, page_token=token,
                                    include_spans=True)
        traces += len(page)
        spans += sum(len(trace.data.spans) for trace in page)
        token = page.token
        if not token:
            return traces, spans


def main(argv) -> int:
    uri, workers, minimum, out = argv[0], int(argv[1]), int(argv[2]), argv[3]
    names = [f"gw{i}" for i in range(workers)] if workers > 0 else ["main"]
    client = mlflow.MlflowClient(uri)
    per_worker = {name: {"traces": 0, "spans": 0, "experiments": {}} for name in names}
    other = {}
    for experiment in client.search_experiments():
        traces, spans = count(client, experiment.experiment_id)
        if not traces:
            continue
        owner = next((n for n in names if experiment.name in (f"{BASE}-{n}", f"{BASE}-{n}-build")), None)
        if owner is None:
            other[experiment.name] = {"traces": traces, "spans": spans}
            continue
        entry = per_worker[owner]
        entry["traces"] += traces
        entry["spans"] += spans
        entry["experiments"][experiment.name] = {"traces": traces, "spans": spans}
    short = {name: entry["spans"] for name, entry in per_worker.items() if entry["spans"] < minimum}
    result = {"store": uri, "minimum_spans_per_worker": minimum, "workers": per_worker,
              "other_experiments": other,
              "traces": sum(e["traces"] for e in per_worker.values()),
              "spans": sum(e["spans"] for e in per_worker.values()), "short": short}
    with open(out, "w") as handle:
        json.dump(result, handle, indent=1)
    listed = ", ".join(f"{n}: {e['traces']} traces / {e['spans']} spans" for n, e in per_worker.items())
    print(f"    traced run wrote {result['traces']} traces, {result['spans']} spans ({listed})")
    if other:
        print(f"    (also in the store, outside the workers' experiments: {other})")
    if short:
        print(f"FAILED: the traced run wrote fewer than {minimum} spans in worker(s) "
              f"{', '.join(f'{n} ({s})' for n, s in short.items())}: tracing did not start there "
              "or its spans were lost, so identical outcomes would prove nothing")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

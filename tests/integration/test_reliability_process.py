"""Tracing across real app processes: fork, every way to exit, the exit bound.

Each scenario is the small app of ``tests/support/app_processes.py`` run as its own
process, traced and untraced, and compared: the traced run prints exactly the same,
exits with the same status, writes at most one extra line on stderr (how many spans were
not written and why), and every span it finished is in the store when the store is up.
The runs are forked from a process that imported Synalinks once (the ``zygote``
fixture); the stores that misbehave are in ``test_reliability_stores.py``, the apps
started by the ``.pth`` file and the launcher in ``test_real_apps.py``.
"""

from __future__ import annotations

import os
import signal
import time

from app_processes import (
    assert_complete,
    assert_same_app_behaviour,
    extra_stderr,
    questions,
    real_traces,
    sqlite_store,
)
from store_faults import FaultyStore

# The shipped default of SYNALINKS_OBS_FLUSH_TIMEOUT, the bound the README states.
SHIPPED_FLUSH_TIMEOUT = 30.0
# What a loaded 2-core machine adds to an exit on top of that bound: killing the exporter
# process, the interpreter's own teardown, and scheduling (measured: ~1-2 s).
EXIT_TOLERANCE = 5.0


# -- fork -------------------------------------------------------------------------------------


def test_forked_workers_trace_without_duplicates_or_losses(zygote, tmp_path):
    uri = sqlite_store(tmp_path, "fork")
    env = dict(
        MLFLOW_TRACKING_URI=uri, MLFLOW_EXPERIMENT_NAME="apps", CALLS=4,
        SYNALINKS_OBS_EXPORT_INTERVAL=30,  # the parent's spans are still queued at fork
    )
    forked = zygote.run("fork", True, SCENARIO="fork", **env)
    pool_uri = sqlite_store(tmp_path, "pool")
    pooled = zygote.run(
        "pool", True, SCENARIO="pool", SYNALINKS_OBS_EXPORT_PROCESS=0,
        **dict(env, MLFLOW_TRACKING_URI=pool_uri),
    )
    plain_fork = zygote.run("fork", False, SCENARIO="fork", CALLS=4)
    plain_pool = zygote.run("pool", False, SCENARIO="pool", CALLS=4)
    for run in (forked, pooled, plain_fork, plain_pool):
        run.wait()
    assert_same_app_behaviour(forked, plain_fork)
    assert_same_app_behaviour(pooled, plain_pool)
    assert extra_stderr(forked, plain_fork) == [] and extra_stderr(pooled, plain_pool) == []

    traces = real_traces(uri, "apps")
    assert questions(traces) == sorted(
        [f"main-parent-{i}" for i in range(4)]
        + [f"main-parent-after-{i}" for i in range(4)]
        + [f"child{n}-run-{i}" for n in range(2) for i in range(4)]
    )
    assert_complete(traces)
    assert len({t.info.trace_id for t in traces}) == len(traces) == 16
    traces = real_traces(pool_uri, "apps")
    assert questions(traces) == sorted(
        [f"main-parent-{i}" for i in range(4)] + [f"main-pool-{i}" for i in range(8)]
    )
    assert_complete(traces)


# -- exit -------------------------------------------------------------------------------------


def test_every_way_to_exit_flushes_every_finished_span(zygote, tmp_path):
    """Normal end, sys.exit(3), an uncaught exception, SIGTERM with the app's own
    handler (two with the exporter process, two without): all spans are in the store."""
    runs = {}
    for scenario, process in (("plain", 1), ("exit3", 0), ("raise", 1), ("sigterm", 0)):
        uri = sqlite_store(tmp_path, scenario)
        runs[scenario, process] = (uri, zygote.run(
            f"exit-{scenario}", True, SCENARIO=scenario, CALLS=6, MLFLOW_TRACKING_URI=uri,
            MLFLOW_EXPERIMENT_NAME="apps", SYNALINKS_OBS_EXPORT_PROCESS=process,
            SYNALINKS_OBS_EXPORT_INTERVAL=30,  # everything is still queued at exit
        ))
        runs[scenario, "plain"] = (None, zygote.run(f"exit-{scenario}", False, SCENARIO=scenario, CALLS=6))
    for (scenario, _kind), (_uri, run) in runs.items():
        if scenario == "sigterm":
            run.wait_for_output("ready")
            os.kill(run.pid, signal.SIGTERM)
    for _, run in runs.values():
        run.wait()
    for (scenario, kind), (uri, run) in runs.items():
        if kind == "plain":
            continue
        plain = runs[scenario, "plain"][1]
        assert_same_app_behaviour(run, plain)
        assert extra_stderr(run, plain) == [], (scenario, kind, run.stderr[-2000:])
        traces = real_traces(uri, "apps")
        assert questions(traces) == sorted(f"main-run-{i}" for i in range(6)), (scenario, kind)
        assert_complete(traces)
    assert runs["exit3", 0][1].exit == 3 and runs["raise", 1][1].exit == 1
    assert "RuntimeError: the app failed" in runs["raise", 1][1].stderr


def test_exit_is_bounded_by_the_shipped_flush_timeout_when_the_store_hangs(zygote, mlflow_server):
    """A store whose ``/health`` answers but whose span writes never do: with the shipped
    default SYNALINKS_OBS_FLUSH_TIMEOUT (30 s, the variable unset) the app's exit takes at
    most that much longer than its untraced exit, with the exporter process (an app
    that keeps calling) and without it (a short script); one line says what was lost."""
    store = FaultyStore("proxy", upstream=mlflow_server.port, writes="hang")
    experiment = f"hang_{os.getpid()}_{time.time_ns()}"
    try:
        plain = {calls: zygote.run("hang", False, CALLS=calls) for calls in (700, 6)}
        runs = {
            # 700 calls (2,100 spans) start the exporter process; 6 are written locally.
            calls: zygote.run(
                "hang", True, CALLS=calls, MLFLOW_TRACKING_URI=store.url,
                MLFLOW_EXPERIMENT_NAME=experiment, AUDIT="audit.json",
            )
            for calls in (700, 6)
        }
        for run in (*plain.values(), *runs.values()):
            run.wait()
    finally:
        store.close()
    for calls, run in runs.items():
        assert_same_app_behaviour(run, plain[calls])
        (line,) = extra_stderr(run, plain[calls])
        # 3 spans per call, and the 2 symbolic calls that built the program
        assert line.startswith(f"synalinks-obs: {3 * calls + 2} span(s) were not written"), line
        assert "timed out" in line, line
        assert run.exit_seconds <= plain[calls].exit_seconds + SHIPPED_FLUSH_TIMEOUT + EXIT_TOLERANCE, (
            calls, run.exit_seconds, plain[calls].exit_seconds,
        )
    assert store.requests  # the hanging writes were really sent
    started = {calls: run.started_exporter() for calls, run in runs.items()}
    assert started == {700: True, 6: False}

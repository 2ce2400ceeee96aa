"""Stores that misbehave, met by real app processes: the app never notices, nothing is
lost silently, memory stays bounded.

The app of ``tests/support/app_processes.py`` runs traced and untraced (forked by the
``zygote`` fixture) and the runs are compared: same output, same exit status, at most one
extra line on stderr saying how many spans were not written and why, an exit at most
``SYNALINKS_OBS_FLUSH_TIMEOUT`` longer (``Run.exit_seconds``: from the end of the app's
own work to the end of its process). Stores: nothing listening, HTTP 500 everywhere,
answers after 10 s, and a real ``mlflow server`` behind a proxy whose ``/health``
answers while span writes fail (HTTP 500) or answer after 10 s; a real server SIGKILLed
mid-run and restarted on the same port and database; the exporter process SIGKILLed in
the middle of a write.
"""

from __future__ import annotations

import os
import time

import pytest
from app_processes import (
    assert_complete,
    assert_same_app_behaviour,
    extra_stderr,
    questions,
    read_traces,
    real_traces,
)
from process_watch import (
    PeakMemory,
    calls_connecting_to,
    exporter_processes,
    kill_exporter_process,
    wait_until,
)
from store_faults import Control, FaultyStore

# What a loaded 2-core machine adds to an exit on top of the flush budget: killing the
# exporter process, the interpreter's own teardown, and scheduling (measured: ~1-2 s).
EXIT_TOLERANCE = 5.0


def unique(name):
    return f"{name}_{os.getpid()}_{time.time_ns()}"


def not_written(line):
    """The count of the one exit line, ``synalinks-obs: N span(s) were not written ...``."""
    assert line.startswith("synalinks-obs: ") and " span(s) were not written to MLflow (" in line, line
    return int(line.split()[1])


# -- a store that is down, failing or slow ---------------------------------------------------


def exporter_ready_control(store, runs, name):
    """The app's ``exporter-ready`` request returns once its exporter process has started
    and asked ``store`` something (``SCENARIO=warm-start``: the calls after it go there)."""

    def exporter_ready():
        wait_until(lambda: store.requests, 240, "a request of the exporter process")
        wait_until(lambda: name in runs, 60, "the app's start")
        wait_until(lambda: exporter_processes(runs[name].pid), 60, "the exporter process")

    return Control({"exporter-ready": exporter_ready})


def test_a_store_down_failing_or_slow_never_touches_the_app(zygote, mlflow_server):
    """Nothing listening, HTTP 500 everywhere, answers after 10 s, and a store whose
    ``/health`` answers while its span writes fail (HTTP 500) or answer after 10 s (met by
    the exporter process and by the app's own thread): same output and exit status, an
    exit at most SYNALINKS_OBS_FLUSH_TIMEOUT longer (a store known to be down not waited
    for at all), never a connection to the store from the app's calls, one line saying
    what was not written and why; what a slow store took is there once, and with what the
    line counts, it is every span."""
    calls, budget = 400, 5.0  # 1,200 spans of program calls; the buffers hold 300
    common = dict(CALLS=calls, SYNALINKS_OBS_FLUSH_TIMEOUT=budget, SYNALINKS_OBS_MAX_QUEUE_SPANS=300,
                  AUDIT="audit.json")
    faults = {  # name: (store, scenario, exporter process)
        "down": (FaultyStore("down"), "plain", 1),
        "down-in-process": (FaultyStore("down"), "plain", 0),
        "error": (FaultyStore("error"), "plain", 1),
        "slow": (FaultyStore("slow", delay=10.0), "plain", 1),
    }
    for how, process in (("", 1), ("-in-process", 0)):
        for writes in ("error", "slow"):
            store = FaultyStore("proxy", upstream=mlflow_server.port, writes=writes, delay=10.0)
            faults[f"write-{writes}{how}"] = (store, "warm-start" if process else "plain", process)
    experiments = {name: unique(name.replace("-", "_")) for name in faults}
    runs, plain, controls = {}, {}, []
    try:
        # A few runs at a time, each group with its own untraced runs: the exits of a
        # dozen heavy interpreters at once on 2 cores would vary by far more than the
        # budget (the exit is mostly the interpreter's own teardown).
        names = list(faults)
        for group in (names[0:3], names[3:6], names[6:]):
            scenarios = {faults[name][1] for name in group}
            group_plain = {scenario: zygote.run(f"outage-plain-{scenario}", False, SCENARIO=scenario, **common)
                           for scenario in scenarios}
            for name in group:
                store, scenario, process = faults[name]
                control = exporter_ready_control(store, runs, name)
                controls.append(control)
                runs[name] = zygote.run(
                    f"outage-{name}", True, SCENARIO=scenario, CONTROL=control.url,
                    MLFLOW_TRACKING_URI=store.url, MLFLOW_EXPERIMENT_NAME=experiments[name],
                    SYNALINKS_OBS_EXPORT_PROCESS=process, **common,
                )
                plain[name] = group_plain[scenario]
            for run in (*group_plain.values(), *(runs[name] for name in group)):
                run.wait()
    finally:
        for closable in (*[f[0] for f in faults.values()], *controls):
            closable.close()
    assert not any(control.errors for control in controls)
    reasons = {
        "down": f"tracking store {faults['down'][0].url} unreachable",
        "down-in-process": f"tracking store {faults['down-in-process'][0].url} unreachable",
        "error": f"tracking store {faults['error'][0].url} answered HTTP 500",
        "slow": f"tracking store {faults['slow'][0].url} did not answer within",
        # MLflow's client (no retries in the exporter process) says what the store answered
        "write-error": "500",
        "write-slow": "timed out",
        # in the app's own thread MLflow's client retries (the app's MLflow settings are
        # left alone): the exit line says which write did not return in time
        "write-error-in-process": f"a write to {faults['write-error-in-process'][0].url} had not returned",
        "write-slow-in-process": "timed out",
    }
    for name, run in runs.items():
        scenario = faults[name][1]
        total = 3 * calls + 2 + (9 if scenario == "warm-start" else 0)  # + the symbolic calls
        assert_same_app_behaviour(run, plain[name])
        (line,) = extra_stderr(run, plain[name])  # one line, not one per span
        assert reasons[name] in line, (name, line)
        limit = plain[name].exit_seconds + EXIT_TOLERANCE
        if not name.startswith("down"):  # a store known to be down is not waited for
            limit += budget
        assert run.exit_seconds <= limit, (name, run.exit_seconds, plain[name].exit_seconds)
        assert calls_connecting_to(run.audit(), faults[name][0].url) == []  # never per call
        landed = read_traces(mlflow_server.uri, experiments[name]) if name.startswith("write") else []
        if name.startswith("write-slow"):
            # It took some spans, each once; with what the line counts, every span (a write
            # cut off at exit may still land: counted as not written, and there).
            assert len({t.info.trace_id for t in landed}) == len(landed)
            assert_complete(real_traces(mlflow_server.uri, experiments[name]))
            landed_spans = sum(len(t.data.spans) for t in landed)
            assert landed_spans + not_written(line) >= total, (name, landed_spans, line)
        else:
            assert landed == [] and not_written(line) == total, (name, line)
    assert faults["error"][0].requests and faults["slow"][0].requests


# -- bounded memory ----------------------------------------------------------------------------

CAP = 1_000  # SYNALINKS_OBS_MAX_QUEUE_SPANS in these runs
PUSHED = 10 * CAP  # spans the app makes: ten times the cap
PAYLOAD = 20_000  # characters of each module call's output (a new string per span)
MAX_PAYLOAD_CHARS = 5_000  # SYNALINKS_OBS_MAX_PAYLOAD_CHARS: each span's inputs/outputs JSON
# What one held span may cost, derived from the payload settings:
# - in the app: the output it references (PAYLOAD characters) and at most three copies
#   of its JSON at once (the serialised record, its pickle for the exporter process, the
#   copy kept until that process has written it), plus the record itself;
# - in the exporter process: its pickle and the unpickled span, and while it is being
#   written to a server, the OTLP protobuf MLflow builds from it, that protobuf's bytes
#   and the HTTP layer's copy of them (six copies of its JSON), plus its attributes.
SPAN_JSON = 2 * MAX_PAYLOAD_CHARS  # inputs + outputs
APP_BYTES_PER_SPAN = PAYLOAD + 3 * SPAN_JSON + 2_048
EXPORTER_BYTES_PER_SPAN = 6 * SPAN_JSON + 2_048
# Allocator and interpreter noise on top (arenas, lazily imported modules), measured at
# 5-15 MB between two identical runs.
MEMORY_TOLERANCE = 30 * 1024 * 1024


@pytest.mark.parametrize("fault", ["error", "write-slow"])
def test_memory_stays_bounded_ten_times_past_the_cap(zygote, mlflow_server, fault):
    """The app makes ten times SYNALINKS_OBS_MAX_QUEUE_SPANS spans into a store that
    fails (HTTP 500) or takes 10 s per span write: the peak memory of the app grows, over
    its untraced run, and the exporter process's, over one that got 90 spans, by less
    than the cap's worth of spans (derived above) plus a named tolerance."""
    stores, controls, runs, peaks = {}, {}, {}, {}

    def store_and_control(name):
        store = stores[name] = FaultyStore("error") if fault == "error" else FaultyStore(
            "proxy", upstream=mlflow_server.port, writes="slow", delay=10.0
        )
        controls[name] = exporter_ready_control(store, runs, name)
        return dict(MLFLOW_TRACKING_URI=store.url, CONTROL=controls[name].url)

    calls = PUSHED // 3 + 1
    env = dict(
        SCENARIO="warm-start", PAYLOAD=PAYLOAD, HOLD=3, SYNALINKS_OBS_FLUSH_TIMEOUT=5,
        SYNALINKS_OBS_MAX_QUEUE_SPANS=CAP, SYNALINKS_OBS_MAX_PAYLOAD_CHARS=MAX_PAYLOAD_CHARS,
        MLFLOW_EXPERIMENT_NAME=unique("memory"),
    )
    try:
        for name, traced, count in (("plain", False, calls), ("pushed", True, calls), ("few", True, 30)):
            where = store_and_control(name) if traced else {}
            runs[name] = zygote.run(f"memory-{name}", traced, **env, CALLS=count, **where)
            peaks[name] = PeakMemory(runs[name].pid)
        for run in runs.values():
            run.wait()
    finally:
        for closable in (*stores.values(), *controls.values()):
            closable.close()
    for peak in peaks.values():
        peak.join()
    assert not any(control.errors for control in controls.values()), controls
    assert_same_app_behaviour(runs["pushed"], runs["plain"])
    (line,) = extra_stderr(runs["pushed"], runs["plain"])
    assert not_written(line) >= PUSHED - CAP, line  # past the cap: dropped, counted
    app_growth = (peaks["pushed"].app_kb - peaks["plain"].app_kb) * 1024
    exporter_growth = (peaks["pushed"].exporter_peak_kb - peaks["few"].exporter_peak_kb) * 1024
    app_bound = CAP * APP_BYTES_PER_SPAN + MEMORY_TOLERANCE
    exporter_bound = CAP * EXPORTER_BYTES_PER_SPAN + MEMORY_TOLERANCE
    figures = (f"{fault}: app +{app_growth / 2**20:.1f} MB (bound {app_bound / 2**20:.1f}), "
               f"exporter process +{exporter_growth / 2**20:.1f} MB (bound {exporter_bound / 2**20:.1f})")
    print(figures)
    assert app_growth < app_bound, figures
    assert exporter_growth < exporter_bound, figures


# -- killed in the middle of the run ----------------------------------------------------------


@pytest.mark.server
def test_the_mlflow_server_killed_mid_run_and_restarted_loses_nothing(zygote, mlflow_server_factory):
    """The real ``mlflow server`` is SIGKILLed once the app's first spans are in it, the
    app goes on calling while it is down, and it comes back on the same port and
    database: every span of before, during and after is there, once; the app saw
    nothing (same output and exit status, no line on stderr)."""
    import mlflow

    server = mlflow_server_factory()
    experiment = unique("server_killed")

    def spans_landed():
        found = mlflow.MlflowClient(server.uri).get_experiment_by_name(experiment)
        return found is not None and mlflow.MlflowClient(server.uri).search_traces(
            locations=[found.experiment_id], max_results=1
        )

    def down():
        wait_until(spans_landed, 240, "the app's first spans in the server")
        server.kill()

    control = Control({"down": down, "up": server.start})
    try:
        plain = zygote.run("killed-plain", False, SCENARIO="outage", CALLS=10).wait()
        traced = zygote.run(
            "killed-traced", True, SCENARIO="outage", CALLS=10, CONTROL=control.url,
            MLFLOW_TRACKING_URI=server.uri, MLFLOW_EXPERIMENT_NAME=experiment,
        ).wait()
    finally:
        control.close()
    assert not control.errors, control.errors
    assert_same_app_behaviour(traced, plain)
    assert extra_stderr(traced, plain) == []
    traces = real_traces(server.uri, experiment)
    assert questions(traces) == sorted(
        f"main-{phase}-{i}" for phase in ("before", "during", "after") for i in range(10)
    )
    assert_complete(traces)


def test_the_exporter_process_killed_mid_write_loses_nothing_and_writes_nothing_twice(
    zygote, mlflow_server
):
    """The exporter process is SIGKILLed while a span write of it is in flight (held by
    the proxy, which then delivers it anyway): the app writes what that process had not
    reported written itself (MLflow upserts spans by id), and every later span; every
    call is one complete trace, none twice, and the app saw nothing."""
    store = FaultyStore("proxy", upstream=mlflow_server.port)
    experiment = unique("exporter_killed")
    killed = []

    def kill_exporter():
        store.writes = "hold"
        wait_until(lambda: store.held, 240, "a span write of the exporter process")
        killed.append(kill_exporter_process(traced.pid))
        store.release()  # the write it had in flight lands after all

    control = Control({"kill-exporter": kill_exporter})
    try:
        plain = zygote.run("exporter-plain", False, SCENARIO="kill-exporter", CALLS=10).wait()
        traced = zygote.run(
            "exporter-traced", True, SCENARIO="kill-exporter", CALLS=10, CONTROL=control.url,
            MLFLOW_TRACKING_URI=store.url, MLFLOW_EXPERIMENT_NAME=experiment,
        )
        traced.wait()
    finally:
        control.close()
        store.close()
    assert not control.errors, control.errors
    assert killed, "the exporter process was not killed"
    assert_same_app_behaviour(traced, plain)
    assert extra_stderr(traced, plain) == []
    traces = real_traces(mlflow_server.uri, experiment)
    assert questions(traces) == sorted(f"main-{phase}-{i}" for phase in ("before", "after") for i in range(10))
    assert_complete(traces)
    assert store.span_writes >= 2  # the killed process's write, and the app's own after it

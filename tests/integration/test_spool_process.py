"""The spool across real processes: an app traces into a real ``mlflow server`` that is
down, exits (its spans go to ``SYNALINKS_OBS_SPOOL_DIR``, the exit line says how many and
where), the server comes up, and the next traced app writes them: every span lands once.
Apps run as forked children of one process that imported Synalinks (the ``zygote``
fixture, ``tests/support/app_processes.py``); each traced child starts its own exporter
process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from app_processes import (
    assert_complete,
    assert_same_app_behaviour,
    extra_stderr,
    real_traces,
    root,
)
from conftest import MlflowServer


def _questions(traces):
    """The question of each trace's program call, whatever envelope its inputs have."""
    found = []
    for trace in traces:
        value = root(trace).inputs
        if isinstance(value, dict) and "data" in value:
            value = value["data"]
        if isinstance(value, list):
            value = value[0]
        found.append(value["question"].rstrip("q"))
    return sorted(found)


def _spool_files(directory):
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def _kept_line(run, plain, spool):
    (line,) = extra_stderr(run, plain)  # one line, not one per span
    assert " span(s) were not written to MLflow (" in line, line
    assert f"kept in {spool}: written by the next process that traces into the same store" in line
    return line


@pytest.mark.server
def test_spans_kept_while_the_server_is_down_land_once_when_it_is_back(zygote, tmp_path):
    """Two apps trace while the server is down, each with its own spool; once it is up,
    the next traced app writes the first spool and ``flush-spool`` the second."""
    server = MlflowServer(tmp_path / "server")  # its port is chosen, nothing listens yet
    spools = {"next-app": tmp_path / "spool-a", "command": tmp_path / "spool-b"}
    common = dict(MLFLOW_TRACKING_URI=server.uri, MLFLOW_EXPERIMENT_NAME="apps",
                  SYNALINKS_OBS_FLUSH_TIMEOUT=5)
    plain = zygote.run("spool-plain", False, CALLS=20, TAG="down").wait()
    for way, spool in spools.items():
        down = zygote.run(f"spool-down-{way}", True, CALLS=20, TAG=f"down-{way}",
                          SYNALINKS_OBS_SPOOL_DIR=spool, **common).wait()
        assert down.exit == plain.exit and down.stdout == plain.stdout.replace("down-", f"down-{way}-")
        line = _kept_line(down, plain, spool)
        assert line.startswith("synalinks-obs: 62 span(s) were not written"), line  # 20 x 3 + build
        assert "unreachable" in line and "; 62 kept in " in line
        assert len(_spool_files(spool)) == 1

    server.start()
    try:
        plain_up = zygote.run("spool-plain-up", False, CALLS=5, TAG="up").wait()
        up = zygote.run("spool-up", True, CALLS=5, TAG="up",
                        SYNALINKS_OBS_SPOOL_DIR=spools["next-app"], **common).wait()
        assert_same_app_behaviour(up, plain_up)
        assert extra_stderr(up, plain_up) == []
        assert _spool_files(spools["next-app"]) == []
        flush = subprocess.run(
            [sys.executable, "-m", "synalinks_obs", "flush-spool", "--tracking-uri", server.uri],
            env=dict(os.environ, SYNALINKS_OBS_SPOOL_DIR=str(spools["command"])),
            capture_output=True, text=True, timeout=300,
        )
        assert flush.returncode == 0, flush.stdout + flush.stderr
        assert "62 spooled span(s) written to" in flush.stdout, flush.stdout
        assert _spool_files(spools["command"]) == []
        traces = real_traces(server.uri, "apps")
    finally:
        server.stop()
    assert _questions(traces) == sorted(
        [f"down-{way}-run-{i}" for way in spools for i in range(20)]
        + [f"up-run-{i}" for i in range(5)]
    )  # each trace once
    assert_complete(traces)  # each span once: a root and its two children

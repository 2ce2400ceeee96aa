"""Real apps, traced with zero code changes, the way a user starts them.

Fresh interpreters of the installed wheel (``wheel_python``), not forks: the app of
``tests/support/app_processes.py`` (which never mentions tracing) run as
``SYNALINKS_OBSERVABILITY=1 python app.py`` (the ``.pth`` activation) and as
``python -m synalinks_obs.run app.py`` (the launcher), every setting at its shipped
default, into MLflow's default store ``./mlflow.db``, which the traced run creates
itself (the app waits, once, for its exporter process to have written its first
traces: ``SCENARIO=warm-start``). Compared with ``python app.py``: same output, exit
status and stderr, an exit at most the shipped ``SYNALINKS_OBS_FLUSH_TIMEOUT`` longer,
every span in the store once.
What the app's process itself did is recorded by an audit hook in the app (``AUDIT``):
it starts the exporter process and never opens the store. The ``.pth`` run works in a
directory holding a ``struct.py`` and an ``mlflow.py`` that would break any process
importing them from there: the exporter process does not (``python -P``).

An app whose work runs in ``ProcessPoolExecutor`` workers started by ``spawn`` and by
``forkserver`` (fresh interpreters, not forks: Python 3.14's default on Linux): each
worker is traced too, by the ``.pth`` activation and by the launcher, every span once.

Also here, through the same installed wheel: the ``synalinks_obs.start`` entry point
(PEP 829) called as Python 3.15's ``site`` will call it, and ``doctor`` exiting 0 on a
good set-up.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
from app_processes import (
    APP,
    PROGRAM,
    assert_complete,
    questions,
    real_traces,
    sqlite_store,
)
from process_watch import (
    exporter_processes,
    started_exporter,
    store_connections,
    wait_until,
)
from store_faults import Control
from wheel_env import TIMEOUT, clean_env

# The shipped default of SYNALINKS_OBS_FLUSH_TIMEOUT, the exit bound the README states.
SHIPPED_FLUSH_TIMEOUT = 30.0
# What a loaded 2-core machine adds to an exit on top of that bound (see
# test_reliability_process.py): process teardown and scheduling.
EXIT_TOLERANCE = 5.0
# An app that keeps working: a few calls, then (once its exporter process has created
# the store and written them: the app asks, SCENARIO=warm-start) 100 calls 0.1 s apart.
CALLS, PACE = 100, 0.1

SHADOW = """\
import os
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "shadow-imported"), "a") as f:
    f.write(__name__ + "\\n")
raise ImportError("the app's own {name}.py was imported instead of the real module")
"""


def exporter_wrote(started, name, store):
    """``exporter-ready`` returns once the app's exporter process exists and has written
    its first traces into ``store`` (read with sqlite3: opening it with MLflow from here
    could race the schema's creation)."""

    def first_traces_written():
        if not store.exists():
            return False
        try:
            with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=1) as db:
                return db.execute("SELECT count(*) FROM trace_info").fetchone()[0] > 0
        except sqlite3.Error:
            return False

    def exporter_ready():
        wait_until(lambda: name in started, 60, "the app's start")
        wait_until(lambda: exporter_processes(started[name].process.pid), 240, "its exporter process")
        wait_until(first_traces_written, 240, "its first traces")

    return Control({"exporter-ready": exporter_ready})


class Started:
    """A process of the wheel's python, and when it ended (for its exit time)."""

    def __init__(self, python, args, env, cwd):
        self.cwd = Path(cwd)
        self.process = subprocess.Popen(
            [python, *map(str, args)], env=env, cwd=cwd,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.stdout = self.stderr = None
        self.ended = None
        self._thread = threading.Thread(target=self._wait, daemon=True)
        self._thread.start()

    def _wait(self):
        self.stdout, self.stderr = self.process.communicate(timeout=TIMEOUT)
        self.ended = time.time()

    def wait(self):
        self._thread.join(TIMEOUT + 30)
        assert self.ended is not None, "the app did not end"
        return self

    @property
    def exit_seconds(self):
        return self.ended - float((self.cwd / "end-mark").read_text())

    def audit(self):
        return json.loads((self.cwd / "audit.json").read_text())


def test_pth_and_launcher_apps_into_a_store_they_create(wheel_python, tmp_path):
    apps = tmp_path / "apps"
    apps.mkdir()
    app = apps / "app.py"
    app.write_text(APP)
    workdirs = {name: tmp_path / name for name in ("plain", "pth", "launcher")}
    for directory in workdirs.values():
        directory.mkdir()
    for name in ("struct", "mlflow"):  # beside where the app runs: never the exporter's
        (workdirs["pth"] / f"{name}.py").write_text(SHADOW.replace("{name}", name))
    common = dict(SYNALINKS_HOME=tmp_path / "home", CALLS=CALLS, PACE=PACE, END_MARK="end-mark",
                  AUDIT="audit.json", SCENARIO="warm-start")
    started = {}
    controls = {name: exporter_wrote(started, name, workdirs[name] / "mlflow.db") for name in ("pth", "launcher")}
    try:
        started["plain"] = Started(wheel_python, [app], clean_env(**common), workdirs["plain"])
        started["pth"] = Started(
            wheel_python, [app], clean_env(SYNALINKS_OBSERVABILITY="1", CONTROL=controls["pth"].url, **common),
            workdirs["pth"],
        )
        started["launcher"] = Started(
            wheel_python, ["-m", "synalinks_obs.run", app], clean_env(CONTROL=controls["launcher"].url, **common),
            workdirs["launcher"],
        )
        for run in started.values():
            run.wait()
    finally:
        for control in controls.values():
            control.close()
    assert not [c.errors for c in controls.values() if c.errors]
    plain = started["plain"]
    assert plain.process.returncode == 0, plain.stderr[-3000:]
    expected = sorted([f"main-warm-{i}" for i in range(3)] + [f"main-run-{i}" for i in range(CALLS)])
    for name in ("pth", "launcher"):
        run = started[name]
        assert run.process.returncode == 0, (name, run.stderr[-3000:])
        assert run.stdout == plain.stdout, name
        assert run.stderr == plain.stderr, (name, run.stderr[-3000:])
        assert run.exit_seconds <= plain.exit_seconds + SHIPPED_FLUSH_TIMEOUT + EXIT_TOLERANCE, (
            name, run.exit_seconds, plain.exit_seconds,
        )
        store = workdirs[name] / "mlflow.db"  # MLflow's default store, created by the run
        traces = real_traces(f"sqlite:///{store}", "synalinks_traces")
        assert questions(traces) == expected, name
        assert_complete(traces)
        audit = run.audit()
        assert started_exporter(audit), (name, audit)  # the exporter process wrote them...
        assert store_connections(audit, store) == [], (name, audit)  # ...not the app's process
    assert not (workdirs["plain"] / "mlflow.db").exists()
    assert not (workdirs["pth"] / "shadow-imported").exists()


# APP's program, run in the workers of a process pool whose start method is argv[1]; the
# parent makes no call of its own.
WORKERS_APP = """\
import asyncio, multiprocessing, os, sys
from concurrent.futures import ProcessPoolExecutor

import synalinks

""" + PROGRAM + """

def work(question):
    async def run():
        program = await build()
        return (await program(Question(question=question))).get("question")
    return asyncio.run(run())


if __name__ == "__main__":
    method = sys.argv[1]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context(method)) as pool:
        print(sorted(pool.map(work, [f"{method}-{i}" for i in range(4)])))
"""


def test_spawned_and_forkserver_workers_are_traced_by_the_pth_and_the_launcher(wheel_python, tmp_path):
    """Pool workers are fresh interpreters: the ``.pth`` activation (the variable is
    inherited) and the launcher (its start-up files are) trace each of them, so every call
    made in a worker is in the store once, and the app prints and exits as untraced."""
    app = tmp_path / "workers.py"
    app.write_text(WORKERS_APP)
    runs = {}
    for name, method, args, extra in (
        ("pth", "spawn", [app, "spawn"], {"SYNALINKS_OBSERVABILITY": "1"}),
        ("launcher", "forkserver", ["-m", "synalinks_obs.run", app, "forkserver"], {}),
    ):
        workdir = tmp_path / name
        workdir.mkdir()
        env = clean_env(SYNALINKS_HOME=tmp_path / "home", MLFLOW_TRACKING_URI=sqlite_store(tmp_path, name),
                        MLFLOW_EXPERIMENT_NAME="apps", **extra)
        runs[name] = (method, Started(wheel_python, args, env, workdir))
    for name, (method, run) in runs.items():
        run.wait()
        expected = [f"{method}-{i}" for i in range(4)]
        assert run.process.returncode == 0, (name, run.stderr[-3000:])
        assert run.stdout == f"{expected}\n", name
        assert run.stderr == "", (name, run.stderr[-3000:])
        traces = real_traces(f"sqlite:///{tmp_path / name}.db", "apps")
        assert questions(traces) == expected, name
        assert_complete(traces)
        assert len({t.info.trace_id for t in traces}) == 4


START_ENTRY = """\
import json, os, pkgutil, sys, sysconfig
path = os.path.join(sysconfig.get_path("purelib"), "synalinks_obs.start")
entry = open(path).read().strip()
os.environ["SYNALINKS_OBSERVABILITY"] = "1"  # unset at start-up: the .pth line did nothing
run = pkgutil.resolve_name(entry)  # what site does with a .start line (PEP 829)
first, again = run(), run()
import synalinks_obs
print(json.dumps({
    "entry": entry, "first": first, "again": again, "enabled": synalinks_obs.is_enabled(),
    "source": synalinks_obs.activation_source(),
    "finders": [type(f).__name__ for f in sys.meta_path].count("PostImportFinder"),
    "heavy": sorted(m for m in ("mlflow", "synalinks", "pydantic") if m in sys.modules),
}))
"""


def test_the_start_file_entry_point_is_callable_with_todays_python(run_py, wheel_python):
    """The wheel's ``synalinks_obs.start`` names an entry point that, called as site will
    call it, activates tracing once (one import hook, nothing heavy imported)."""
    site = subprocess.run(
        [wheel_python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, env=clean_env(), check=True,
    ).stdout.strip()
    assert Path(site, "synalinks_obs.start").read_text().strip() == "synalinks_obs._bootstrap:run"
    out = run_py("-c", START_ENTRY, env={"SYNALINKS_OBSERVABILITY": None})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {
        "entry": "synalinks_obs._bootstrap:run", "first": True, "again": False, "enabled": True,
        "source": "env", "finders": 1, "heavy": [],
    }
    assert out.stderr == ""


@pytest.mark.server
def test_doctor_exits_0_on_a_good_set_up(run_py, wheel_python, mlflow_server):
    """The installed wheel (its ``.pth`` in site-packages), tracing on, a server that
    proxies artifacts: every check passes, exit status 0. The start-up hook line names the
    wheel's own ``.pth`` file, found here from the interpreter's site directory."""
    site = subprocess.run(
        [wheel_python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, env=clean_env(), check=True,
    ).stdout.strip()
    pth = os.path.join(site, "synalinks_obs.pth")
    out = run_py(
        "-m", "synalinks_obs", "doctor", "--tracking-uri", mlflow_server.uri,
        "--experiment-name", f"doctor_ok_{os.getpid()}",
        env={"SYNALINKS_OBSERVABILITY": "1"},
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[-1] == "all checks passed", lines
    assert all(line.startswith("[ ok ] ") for line in lines[1:-1]), lines
    assert f"[ ok ] start-up hook: {pth} present" in lines
    tracing = next(line for line in lines if line.startswith("[ ok ] tracing: "))
    assert "SYNALINKS_OBSERVABILITY=1" in tracing

"""The first hour of a new user (issue 12), through real subprocesses of the installed wheel.

What a user meets before reading any code: a store that cannot take traces (a ``file:``
URI or plain path, an old ``./mlruns``, a sqlite file in a read-only directory, a server
that refuses connections) is said in one line with the reason and the fix, and the app's
exit is not held for it; ``traces`` only reads; ``doctor`` run plainly passes on a good
set-up, and ``--require-tracing`` checks a launcher set-up; a bad setting says which value
is used instead; a traced app's traceback is the untraced one.

Each app is a small program of the user's own (``APP``: Input -> Generator -> Generator
over the fake LLM) run with the wheel's python (the ``run_py`` / ``wheel_python`` fixtures
of tests/conftest.py). ``import synalinks`` costs 15-30 s per process here, so the runs of
one test are started together (``_run_all``): traced and untraced runs then share the
machine's load, and their exit times are compared run against run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from traces import load_traces, span_tree
from user_app import APP
from wheel_env import clean_env as _clean_env

# Seconds the traced run's exit (after its last line) may exceed the untraced run's. The
# stores below used to hold the exit for the whole 30 s flush budget; what is left is
# the exporter's last probe and the noise of a loaded 2-core machine.
EXIT_TOLERANCE = 3.0
FLUSH_BUDGET = "30"  # the default SYNALINKS_OBS_FLUSH_TIMEOUT (test_activation raises it)

class Run:
    """One finished app process: status, output, and seconds from its last line to exit."""

    def __init__(self, returncode, stdout, stderr, ended):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr
        last = [line for line in stdout.splitlines() if line.startswith("last line at ")]
        self.exit_after_last_line = ended - float(last[-1].split()[-1]) if last else None

    @property
    def app_output(self):
        return [line for line in self.stdout.splitlines() if not line.startswith("last line at ")]

    def __repr__(self):
        return f"Run({self.returncode}, exit after {self.exit_after_last_line}, stderr={self.stderr!r})"


def _run_all(specs, timeout=600):
    """Start every ``(argv, env, cwd)`` at once; their ``Run`` results, in order."""
    results = [None] * len(specs)

    def one(i, argv, env, cwd):
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        out, err = process.communicate(timeout=timeout)
        results[i] = Run(process.returncode, out, err, time.time())

    threads = [threading.Thread(target=one, args=(i, *spec)) for i, spec in enumerate(specs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.fixture
def app(tmp_path):
    path = tmp_path / "my_app.py"
    path.write_text(APP)
    return path


@pytest.fixture
def app_env(fake_llm, tmp_path):
    """``app_env(**extra)``: the clean environment of a user's shell, with the fake LLM."""

    def make(**extra):
        return _clean_env(SYNALINKS_HOME=tmp_path / "home", FAKE_LLM=fake_llm.base_url,
                          SYNALINKS_OBS_FLUSH_TIMEOUT=FLUSH_BUDGET, **extra)

    return make


def _only_line(run, start):
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), run
    return lines[0]


# -- item 2: file stores ---------------------------------------------------------------------
def test_file_stores_are_refused_at_start_up_in_one_line(wheel_python, app, app_env, tmp_path):
    """file: URI, plain path and enable(): one line with the fix; the app runs as
    untraced; nothing is created. A legacy ./mlruns only gets a note: traces go to
    mlflow.db beside it."""
    work = tmp_path / "work"
    legacy = tmp_path / "legacy"
    (legacy / "mlruns" / "0").mkdir(parents=True)
    (legacy / "mlruns" / "0" / "meta.yaml").write_text("name: Default\n")
    work.mkdir()
    file_uri = (tmp_path / "store" / "mlruns").as_uri()
    python = wheel_python
    runs = _run_all([
        ([python, app], app_env(), work),
        ([python, app], app_env(SYNALINKS_OBSERVABILITY="1", MLFLOW_TRACKING_URI=file_uri), work),
        ([python, "-m", "synalinks_obs.run", "--tracking-uri", "mlruns", app], app_env(), work),
        ([python, app], app_env(ENABLE_URI=file_uri), work),
        ([python, "-m", "synalinks_obs.run", app], app_env(), legacy),
    ])
    plain, by_env, by_launcher, by_enable, with_legacy = runs
    assert plain.returncode == 0 and plain.stderr == "", plain
    for run in runs[1:]:
        assert run.returncode == 0 and run.app_output == plain.app_output, run
    line = _only_line(by_env, f"synalinks-obs: MLFLOW_TRACKING_URI={file_uri} is an MLflow file store")
    assert "tracing is off" in line and f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}" in line
    _only_line(by_launcher, f"synalinks-obs: MLFLOW_TRACKING_URI={(work / 'mlruns').as_uri()} is an MLflow file store")
    _only_line(by_enable, f"synalinks-obs: tracking_uri={file_uri} is an MLflow file store")
    assert not (tmp_path / "store").exists() and sorted(os.listdir(work)) == []
    note = _only_line(with_legacy, f"synalinks-obs: {legacy / 'mlruns'} is an MLflow file store")
    assert f"traces go to sqlite:///{legacy / 'mlflow.db'}" in note
    traces = load_traces(f"sqlite:///{legacy / 'mlflow.db'}", "synalinks_traces")
    roots = [span_tree(t)["name"] for t in traces]
    assert roots.count("Functional:two_generators") == 3, roots


# -- item 3: stores that cannot be opened ----------------------------------------------------
def _read_only_runner(directory: Path):
    """A command prefix under which ``directory`` cannot be written by the app, or a
    reason to skip. Not root: a 0555 directory. Root writes anywhere, so the directory is
    bind-mounted read-only in a private mount namespace (the host's mount is untouched)."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        return []
    if shutil.which("unshare") is None:
        return "root, and no unshare(1) to make a read-only mount"
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        return f"root, and unshare --mount fails here ({probe.stderr.decode().strip()})"
    script = f'mount --bind -o ro "{directory}" "{directory}" && exec "$@"'
    return ["unshare", "--mount", "sh", "-c", script, "sh"]


def test_sqlite_store_in_a_read_only_directory(wheel_python, app, app_env, tmp_path):
    read_only = tmp_path / "read-only"
    read_only.mkdir()
    prefix = _read_only_runner(read_only)
    if isinstance(prefix, str):
        pytest.skip(prefix)
    uri = f"sqlite:///{read_only / 'mlflow.db'}"
    python = wheel_python
    plain, traced, launched = _run_all([
        ([*prefix, python, app], app_env(), tmp_path),
        ([*prefix, python, app], app_env(SYNALINKS_OBSERVABILITY="1", MLFLOW_TRACKING_URI=uri), tmp_path),
        ([*prefix, python, "-m", "synalinks_obs.run", "--tracking-uri", uri, app], app_env(), tmp_path),
    ])
    assert plain.returncode == 0 and plain.stderr == "", plain
    for run in (traced, launched):
        assert run.returncode == 0 and run.app_output == plain.app_output, run
        line = _only_line(run, f"synalinks-obs: MLFLOW_TRACKING_URI={uri} cannot be opened: ")
        assert "read-only file system" in line or "not writable by this user" in line, line
        assert "tracing is off" in line and "sqlite:///DIR/mlflow.db" in line
        assert run.exit_after_last_line <= plain.exit_after_last_line + EXIT_TOLERANCE, (run, plain)
    assert not (read_only / "mlflow.db").exists()
    doctor = subprocess.run([*prefix, python, "-m", "synalinks_obs", "doctor", "--tracking-uri", uri],
                            capture_output=True, text=True, env=app_env(), cwd=tmp_path, timeout=600)
    assert doctor.returncode == 1, doctor.stdout
    store = [line for line in doctor.stdout.splitlines() if " tracking store: " in line]
    assert store and store[0].startswith("[FAIL] tracking store: ") and "cannot be opened" in store[0], doctor.stdout


def test_server_that_refuses_does_not_hold_the_exit(wheel_python, app, app_env, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there
    python = wheel_python
    plain, traced, launched = _run_all([
        ([python, app], app_env(), tmp_path),
        ([python, app], app_env(SYNALINKS_OBSERVABILITY="1", MLFLOW_TRACKING_URI=uri), tmp_path),
        ([python, "-m", "synalinks_obs.run", "--tracking-uri", uri, app], app_env(), tmp_path),
    ])
    assert plain.returncode == 0 and plain.stderr == "", plain
    for run in (traced, launched):
        assert run.returncode == 0 and run.app_output == plain.app_output, run
        line = _only_line(run, "synalinks-obs: ")
        assert " span(s) were not written to MLflow (" in line
        assert f"tracking store {uri} unreachable (ConnectionRefusedError)" in line, line
        assert run.exit_after_last_line <= plain.exit_after_last_line + EXIT_TOLERANCE, (run, plain)


# -- item 5: `traces` only reads -------------------------------------------------------------
def test_traces_command_never_creates_a_store(run_py, tmp_path):
    missing = run_py("-m", "synalinks_obs", "traces", cwd=tmp_path)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.splitlines() == [
        f"No tracking store at sqlite:///{tmp_path / 'mlflow.db'} (the file does not exist): "
        "run a traced app first, or pass --tracking-uri."
    ]
    file_store = run_py("-m", "synalinks_obs", "traces", "--tracking-uri", "mlruns", cwd=tmp_path)
    assert file_store.returncode == 1
    assert file_store.stderr.startswith(
        f"synalinks-obs: --tracking-uri={(tmp_path / 'mlruns').as_uri()} is an MLflow file store"
    ), file_store.stderr
    assert not {"mlflow.db", "mlruns"} & set(os.listdir(tmp_path))


# -- item 6: the doctor, plainly and for a launcher set-up -----------------------------------
def test_doctor_plain_passes_and_require_tracing_checks_a_launcher_set_up(wheel_python, app_env, tmp_path):
    python = wheel_python
    env = app_env()
    specs = [
        ([python, "-m", "synalinks_obs", "doctor"], env, tmp_path),
        ([python, "-m", "synalinks_obs", "doctor", "--require-tracing"], env, tmp_path),
        ([python, "-m", "synalinks_obs.run", "-m", "synalinks_obs", "doctor", "--require-tracing"], env, tmp_path),
    ]
    plain, required, launched = _run_all(specs)
    assert plain.returncode == 0, plain.stdout
    assert plain.stdout.splitlines()[-1] == "all checks passed"
    tracing = next(line for line in plain.stdout.splitlines() if " tracing: " in line)
    assert tracing.startswith("[ ok ] tracing: off in this doctor (SYNALINKS_OBSERVABILITY is unset)")
    assert "the checks below use the configuration it would use" in tracing
    assert required.returncode == 1
    tracing = next(line for line in required.stdout.splitlines() if " tracing: " in line)
    assert tracing.startswith("[FAIL] tracing: off in this process (--require-tracing)")
    assert "python -m synalinks_obs.run -m synalinks_obs doctor --require-tracing" in tracing
    assert launched.returncode == 0, launched.stdout
    tracing = next(line for line in launched.stdout.splitlines() if " tracing: " in line)
    assert tracing.startswith("[ ok ] tracing: on, activated by python -m synalinks_obs.run (the launcher)")
    assert not (tmp_path / "mlflow.db").exists()  # the doctor never creates a local store


# -- item 10: a bad value says what is used instead ------------------------------------------
BAD_VALUES = {
    "SYNALINKS_OBS_SAMPLE_RATE": ("2", "(unset: MLflow's MLFLOW_TRACE_SAMPLING_RATIO, else 1.0)"),
    "SYNALINKS_OBS_MAX_QUEUE_SPANS": ("0", "100000"),
    "SYNALINKS_OBS_EXPORT_INTERVAL": ("-1", "0.5"),
    "SYNALINKS_OBS_CAPTURE_PAYLOADS": ("maybe", "True"),
    "SYNALINKS_OBS_LOG_LEVEL": ("loud", "'WARNING'"),
}


def test_every_bad_value_says_what_is_used_instead(run_py, tmp_path):
    (tmp_path / "hello.py").write_text("print('hello')\n")
    env = {name: value for name, (value, _) in BAD_VALUES.items()}
    out = run_py("-m", "synalinks_obs.run", "--tracking-uri", "http://", "hello.py", env=env)
    assert out.returncode == 0 and out.stdout == "hello\n", out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == len(BAD_VALUES) + 1, lines
    for name, (value, default) in BAD_VALUES.items():
        [line] = [line for line in lines if line.startswith(f"synalinks-obs: {name}={value!r} is not valid: ")]
        assert line.endswith(f"; using the default {default}"), line
    [flag] = [line for line in lines if line.startswith("synalinks-obs: --tracking-uri='http://'")]
    assert flag.endswith(f"; using the default sqlite:///{tmp_path / 'mlflow.db'}"), flag


# -- item 7: tracebacks ----------------------------------------------------------------------
def test_a_traced_traceback_is_the_untraced_one(wheel_python, app, app_env, tmp_path):
    """program -> Generator -> LM raising: the same traceback, frame for frame, with
    tracing on (both activations) as without."""
    python = wheel_python
    env_db, run_db = (f"sqlite:///{tmp_path / name}" for name in ("env.db", "run.db"))
    plain, traced, launched = _run_all([
        ([python, app], app_env(FAIL="1"), tmp_path),
        ([python, app], app_env(FAIL="1", SYNALINKS_OBSERVABILITY="1", MLFLOW_TRACKING_URI=env_db), tmp_path),
        ([python, "-m", "synalinks_obs.run", "--tracking-uri", run_db, app], app_env(FAIL="1"), tmp_path),
    ])
    assert plain.returncode == 1 and plain.stderr.endswith("RuntimeError: the provider is down\n"), plain
    frames = plain.stderr.count('\n  File "')
    assert frames >= 10  # through the program, both modules' __call__ and the LM
    assert traced.stderr == plain.stderr
    assert launched.stderr == plain.stderr
    assert "synalinks_obs" not in traced.stderr

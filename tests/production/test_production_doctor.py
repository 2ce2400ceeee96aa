"""``python -m synalinks_obs doctor`` (SPEC section 7).

The passing case against correctly started servers is in test_production_deploy.py
(every set-up of examples/deploy/ must pass it), and the command exiting 0 on a good
set-up in tests/integration/test_real_apps.py. Here: a server started with
``--no-serve-artifacts`` fails the artifact check naming the flag (the real command, in a
subprocess, text and ``--json``), a server that is not there fails fast, and a local
store that does not exist is reported without being created.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest


def _doctor(*args, env=None, timeout=600):
    environment = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "synalinks_obs", "doctor", *args],
        capture_output=True, text=True, timeout=timeout, env=environment,
    )


@pytest.mark.server
def test_doctor_fails_a_server_without_artifact_proxy(mlflow_server_factory, tmp_path):
    server = mlflow_server_factory("--no-serve-artifacts")
    assert "--serve-artifacts" not in server.args
    result = _doctor(
        "--tracking-uri", server.uri, "--experiment", "doctor_check", "--json",
        env={"SYNALINKS_OBSERVABILITY": "1", "SYNALINKS_HOME": str(tmp_path / "home")},
    )
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is False
    assert report["tracking_uri"] == server.uri
    proxy = checks["artifact proxy"]
    assert not proxy["ok"]
    assert "--no-serve-artifacts" in proxy["detail"] and "--serve-artifacts" in proxy["fix"]
    assert "mlflow-artifacts:/" in proxy["fix"]
    # Everything else about this server is fine, and said so.
    for name in ("tracking store", "server health", "trace write", "synalinks", "mlflow",
                 "modules built early", "settings"):
        assert checks[name]["ok"], checks[name]
    assert "none are missed" in checks["modules built early"]["detail"]
    # SYNALINKS_OBSERVABILITY=1 works where the wheel's .pth is installed (scripts/run-tests
    # installs the wheel; found here from the interpreter's own site directory, not with
    # the doctor's code); in an editable install both checks say why it does not.
    import sysconfig

    pth = os.path.join(sysconfig.get_path("purelib"), "synalinks_obs.pth")
    installed = os.path.isfile(pth)
    tracing = checks["tracing"]
    assert checks["start-up hook"]["ok"] == installed == tracing["ok"], checks
    if installed:
        assert checks["start-up hook"]["detail"] == f"{pth} present"
        assert "SYNALINKS_OBSERVABILITY=1" in tracing["detail"]
    # Nothing traced by the doctor itself, and its scratch run is gone.
    import mlflow

    client = mlflow.MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("doctor_check")
    assert experiment is not None
    assert not client.search_runs([experiment.experiment_id])
    assert not client.search_traces(locations=[experiment.experiment_id])


def test_doctor_text_output_one_line_per_check_and_unreachable_server(tmp_path, capsys):
    """Text mode: a header, one line per check (with the fix when failing), a summary;
    a server that is down fails health fast and the network checks are not tried."""
    import synalinks  # noqa: F401  (imported by the doctor anyway: not part of the bound)

    from synalinks_obs.cli import doctor

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there
    status = doctor.main(["--tracking-uri", f"http://127.0.0.1:{port}", "--timeout", "3"])
    lines = capsys.readouterr().out.splitlines()
    assert status == 1
    assert lines[0] == f"synalinks-obs doctor: http://127.0.0.1:{port}, experiment 'synalinks_traces'"
    body = lines[1:-1]
    assert all(line.startswith(("[ ok ] ", "[FAIL] ")) for line in body), lines
    names = [line[7:].split(":", 1)[0] for line in body]
    assert names == ["tracing", "modules built early", "synalinks", "mlflow", "start-up hook",
                     "settings", "tracking store", "server health", "trace write",
                     "artifact proxy", "compatibility", "patches"]
    health = next(line for line in body if " server health:" in line)
    assert health.startswith("[FAIL]") and "-> fix: start the server" in health
    assert f"http://127.0.0.1:{port} (from --tracking-uri)" in body[6]
    for line in (body[6], body[8], body[9]):
        assert line.startswith("[FAIL]") and "not tried: the server is not usable" in line
    assert lines[-1].endswith("check(s) failed")  # its duration: benchmarks/faults.py


def test_doctor_on_a_local_store_that_does_not_exist(tmp_path, monkeypatch, capsys):
    from synalinks_obs.cli import doctor

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    checks = {c.name: c for c in doctor.run_checks()}
    store = checks["tracking store"]
    assert store.ok and "does not exist yet" in store.detail
    assert str(tmp_path / "mlflow.db") in store.detail  # MLflow's default, made absolute
    assert checks["server health"].ok and "local store" in checks["server health"].detail
    assert not (tmp_path / "mlflow.db").exists()  # the doctor did not create it

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


def test_the_modules_built_early_check_can_fail(monkeypatch):
    """The check calls a module built before the patch: a patch that records nothing
    fails it (it used to look only for our marker on ``Module.__call__``)."""
    import synalinks  # noqa: F401

    import synalinks_obs
    from synalinks_obs.cli import checks
    from synalinks_obs.patching import module_call

    synalinks_obs.uninstrument()  # the check patches (and un-patches) by itself
    assert checks.check_early_modules().ok
    monkeypatch.setattr(module_call, "wrap", lambda original: original)  # patched, traces nothing
    check = checks.check_early_modules()
    assert not check.ok, check
    assert "not traced: BuiltBefore:doctor_built_before, DefinedAfter:doctor_defined_after" in check.detail


@pytest.mark.server
def test_doctor_says_deleted_only_when_deleting_worked(sqlite_uri, mlflow_server, monkeypatch):
    """The trace-write check deletes its span, the artifact check its scratch run and file:
    each line says "deleted" when that worked, and what stays when it did not."""
    from mlflow.store.artifact import artifact_repository_registry
    from mlflow.tracking import MlflowClient

    from synalinks_obs.cli import store_checks

    def checked(uri):
        store = store_checks.StoreSession(store_checks.resolve_target(uri, "doctor_cleanup"))
        return store_checks.check_trace_write(store), store_checks.check_artifacts(store, 10)

    write, artifacts = checked(mlflow_server.uri)
    assert write.ok and write.detail.endswith("read back and deleted"), write
    assert artifacts.ok and artifacts.detail.endswith("; scratch file deleted; scratch run deleted"), artifacts

    def refuse(*args, **kwargs):
        raise PermissionError("no deleting here")

    class Undeletable:
        def __init__(self, real):
            self.real = real

        def __getattr__(self, name):
            return getattr(self.real, name)

        def delete_artifacts(self, *args, **kwargs):
            refuse()

    real_repository = artifact_repository_registry.get_artifact_repository
    monkeypatch.setattr(MlflowClient, "delete_traces", refuse)
    monkeypatch.setattr(MlflowClient, "delete_run", refuse)
    monkeypatch.setattr(artifact_repository_registry, "get_artifact_repository",
                        lambda *a, **k: Undeletable(real_repository(*a, **k)))
    for uri in (sqlite_uri, mlflow_server.uri):
        write, _ = checked(uri)
        assert write.ok and "deleted" not in write.detail.replace("deleting it failed", ""), write
        assert "(deleting it failed: PermissionError; trace tr-" in write.detail and "stays)" in write.detail
    _, artifacts = checked(mlflow_server.uri)
    assert artifacts.ok and "scratch file deleted" not in artifacts.detail, artifacts
    assert "deleting the scratch file failed (PermissionError)" in artifacts.detail
    assert "deleting scratch run" in artifacts.detail and "failed (PermissionError)" in artifacts.detail

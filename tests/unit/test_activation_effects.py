"""What turning synalinks-obs on changes, and what it must not (defects 5, 6, 9).

- ``synalinks.enable_observability`` routed with every argument any version documents,
  never a ``TypeError``, the ignored ones named once;
- ``enable()`` leaves MLflow's tracking URI alone; a bad ``MLFLOW_TRACKING_URI`` is reported
  and *not* used; the doctor leaves MLflow's retry settings and logger level as it found
  them;
- one resolver: the launcher, the tracer, the Monitor hook, the training Monitor and the
  doctor turn the same relative location into the same store.
"""

import logging
import os

import pytest


def test_routed_enable_observability_takes_every_documented_argument(sqlite_uri, caplog):
    import synalinks

    import synalinks_obs

    synalinks_obs.enable(tracking_uri=sqlite_uri)  # routes Synalinks' API
    synalinks_obs.disable()
    try:
        with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
            synalinks.enable_observability(
                tracking_uri=sqlite_uri, experiment_name="routed_args", run_name="r1",
                registered_model_name="m", log_program_model=False, register_prompts=True,
                log_inputs=True, something_new=1,
            )
            from synalinks_obs.runtime import RUNTIME

            assert RUNTIME.training_options["run_name"] == "r1"
            synalinks.enable_observability(sqlite_uri, "routed_args", something_new=2)
        assert synalinks_obs.is_enabled() and synalinks_obs.activation_source() == "synalinks"
        lines = [r.getMessage() for r in caplog.records if r.name.startswith("synalinks_obs")]
        ignored = [line for line in lines if "(something_new) is routed" in line and "ignores" in line]
        assert len(ignored) == 1, lines
        assert RUNTIME.tracer.destination.experiment_name == "routed_args"
        assert RUNTIME.training_options == {}  # the latest call's options
    finally:
        synalinks_obs.disable()


def test_enable_leaves_mlflows_tracking_uri_alone(sqlite_uri, monkeypatch, tmp_path):
    import mlflow
    import synalinks  # noqa: F401

    import synalinks_obs

    monkeypatch.chdir(tmp_path)
    before = mlflow.get_tracking_uri()
    synalinks_obs.enable(tracking_uri=sqlite_uri, experiment_name="alone")
    try:
        assert mlflow.get_tracking_uri() == before
        assert "MLFLOW_TRACKING_URI" not in os.environ
    finally:
        synalinks_obs.disable()


def test_a_bad_environment_uri_is_reported_and_not_used(monkeypatch, tmp_path, capfd):
    import synalinks  # noqa: F401

    import synalinks_obs
    from synalinks_obs.runtime import RUNTIME

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://")
    synalinks_obs.enable()
    try:
        err = capfd.readouterr().err
        assert "MLFLOW_TRACKING_URI='http://' is not valid" in err and "using the default" in err
        assert RUNTIME.tracer.destination.tracking_uri == f"sqlite:///{tmp_path}/mlflow.db"
    finally:
        synalinks_obs.disable()


def test_the_doctor_puts_mlflows_settings_back(tmp_path, monkeypatch):
    from synalinks_obs.cli import doctor

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", raising=False)
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT", raising=False)
    logger = logging.getLogger("mlflow")
    level = logger.level
    doctor.run_checks(f"sqlite:///{tmp_path}/none.db", "x", timeout=3)
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ
    assert "MLFLOW_HTTP_REQUEST_TIMEOUT" not in os.environ
    assert logger.level == level


@pytest.mark.parametrize("given", ["sqlite:///rel/store.db", "rel/store.db"])
def test_one_resolver_for_every_component(given, tmp_path, monkeypatch):
    """The same relative location names one store everywhere (a file store is refused
    everywhere the same way)."""
    import synalinks  # noqa: F401

    from synalinks_obs import uris
    from synalinks_obs.cli import store_checks
    from synalinks_obs.cli.run import export_environment
    from synalinks_obs.hooks import Monitor as HookMonitor
    from synalinks_obs.settings import load_settings

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    expected = uris.absolute(given, str(tmp_path))
    monkeypatch.setattr(os, "environ", dict(os.environ))  # the launcher exports into it
    export_environment(uris.resolve(load_settings(tracking_uri=given).tracking_uri, environment=False).uri, None)
    assert os.environ["MLFLOW_TRACKING_URI"] == expected
    try:
        assert HookMonitor(tracking_uri=given).tracking_uri == expected
    finally:
        import synalinks_obs

        synalinks_obs.uninstrument()
    assert store_checks.resolve_target(given).tracking_uri == expected
    assert uris.resolve(given).uri == expected  # what the tracer and training Monitor use


def test_the_doctor_lists_what_is_patched(sqlite_uri):
    import synalinks  # noqa: F401

    import synalinks_obs
    from synalinks_obs.cli import checks

    synalinks_obs.uninstrument()
    assert checks.check_patches().detail.startswith("nothing patched in this process")
    synalinks_obs.enable(tracking_uri=sqlite_uri, experiment_name="patched")
    try:
        detail = checks.check_patches().detail
        assert "module calls (" in detail and "synalinks API (" in detail and "mlflow (" in detail
    finally:
        synalinks_obs.uninstrument()

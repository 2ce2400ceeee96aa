"""The doctor's checks of the tracking store: where, healthy, writable, artifact proxy.

The store is resolved exactly as tracing resolves it (``uris.resolve``), every request
goes through MLflow's own client and REST helper (its credentials and TLS settings), and
nothing printed carries credentials (``uris.display``). Scratch objects (a trace, a run
and its artifact) are deleted, and the line says so only when the deletion worked.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from synalinks_obs import reporting, uris
from synalinks_obs.cli.checks import Check
from synalinks_obs.settings import DEFAULT_EXPERIMENT
from synalinks_obs.store import health

SCRATCH_ARTIFACT = "synalinks_obs_doctor.txt"
PROXY_FIX = (
    "restart the server with --serve-artifacts --default-artifact-root mlflow-artifacts:/ "
    "--artifacts-destination DIR (see examples/deploy/)"
)


@dataclass
class Target:
    tracking_uri: str
    uri_source: str
    experiment_name: str
    experiment_source: str

    @property
    def is_server(self) -> bool:
        return uris.is_http(self.tracking_uri)

    def where(self) -> str:
        return (f"{uris.display(self.tracking_uri)} (from {self.uri_source}), experiment "
                f"'{self.experiment_name}' (from {self.experiment_source})")


def resolve_target(tracking_uri=None, experiment_name=None) -> Target:
    """Tracking URI and experiment as tracing would resolve them, and where from."""
    resolution = uris.resolve(tracking_uri)
    uri_source = {"explicit": "--tracking-uri", "default": "the default"}.get(
        resolution.source, resolution.source
    )
    if experiment_name:
        name, name_source = experiment_name, "--experiment-name"
    elif os.environ.get("MLFLOW_EXPERIMENT_NAME", "").strip():
        name, name_source = os.environ["MLFLOW_EXPERIMENT_NAME"].strip(), "MLFLOW_EXPERIMENT_NAME"
    else:
        name, name_source = DEFAULT_EXPERIMENT, "default"
    return Target(resolution.uri, uri_source, name, name_source)


def identity(uri: str) -> str:
    """Which credentials MLflow's client sends to ``uri`` and how TLS is checked (never a
    secret itself)."""
    try:
        from synalinks_obs.compat import mlflow as mlflow_compat

        creds = mlflow_compat.host_creds(uri)
    except Exception:
        return "credentials unknown"
    from urllib.parse import urlsplit

    username = getattr(creds, "username", None)
    if username and getattr(creds, "password", None):
        who = f"as user {username!r} (MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD)"
    elif getattr(creds, "token", None):
        who = "with a bearer token (MLFLOW_TRACKING_TOKEN)"
    elif getattr(creds, "auth", None):
        who = f"with the {creds.auth!r} request-auth plugin (MLFLOW_TRACKING_AUTH)"
    elif urlsplit(uri).username:
        who = f"as user {urlsplit(uri).username!r} (from the URI)"
    elif username:
        who = (f"without credentials (MLFLOW_TRACKING_USERNAME={username!r} is set but "
               "MLFLOW_TRACKING_PASSWORD is not)")
    else:
        who = "without credentials"
    if getattr(creds, "client_cert_path", None):
        who += ", with a client certificate (MLFLOW_TRACKING_CLIENT_CERT_PATH)"
    if uris.scheme(uri) == "https":
        if getattr(creds, "ignore_tls_verification", False):
            who += "; TLS certificate NOT verified (MLFLOW_TRACKING_INSECURE_TLS=true)"
        elif getattr(creds, "server_cert_path", None):
            who += f"; TLS verified with {creds.server_cert_path} (MLFLOW_TRACKING_SERVER_CERT_PATH)"
        else:
            who += "; TLS verified with the system's CA certificates"
    return who


def check_health(target: Target, timeout: float) -> Check:
    if not target.is_server:
        return Check("server health", True,
                     f"no server to check: {uris.display(target.tracking_uri)} is a local store")
    sent = identity(target.tracking_uri)
    try:
        health.probe(target.tracking_uri, timeout)
    except health.StoreRejected as exc:
        fix = ("set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN "
               "to an account the server accepts" if "HTTP 401" in str(exc) else
               "ask the server's admin for permission (EDIT on the experiment), or use another account")
        return Check("server health", False, f"{exc}; sent {sent}", fix)
    except health.StoreUnavailable as exc:
        fix = ("set MLFLOW_TRACKING_SERVER_CERT_PATH (or MLFLOW_TRACKING_INSECURE_TLS=true)"
               if "TLS" in str(exc) else
               "start the server (examples/deploy/) and check the URI, host and port; from a "
               "container use the service name, not localhost")
        return Check("server health", False, f"{exc}; sent {sent}", fix)
    return Check("server health", True,
                 f"GET {uris.display(target.tracking_uri)}/health -> 200, authenticated read -> "
                 f"200, sent {sent}")


class StoreSession:
    """What the store checks share: the client and the experiment (created if missing)."""

    def __init__(self, target: Target):
        from mlflow.tracking import MlflowClient

        self.target = target
        self.client = MlflowClient(target.tracking_uri)
        self._experiment_id = None

    def experiment(self):
        return self.client.get_experiment_by_name(self.target.experiment_name)

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            from synalinks_obs.store.experiments import resolve_experiment

            self._experiment_id = resolve_experiment(self.target.tracking_uri, self.target.experiment_name)
        return self._experiment_id


def check_store(target: Target, store: StoreSession | None) -> Check:
    where = target.where()
    if store is None:
        return Check("tracking store", True, f"{where}; the sqlite file "
                     f"{uris.sqlite_path(target.tracking_uri)} does not exist yet: the first "
                     "trace creates it")
    try:
        experiment = store.experiment()
    except Exception as exc:
        return Check("tracking store", False, f"{where}; the store does not answer "
                     f"({type(exc).__name__}: {reporting.first_line(exc)})",
                     "check MLFLOW_TRACKING_URI / --tracking-uri (scheme, host, port, database)")
    if experiment is None:
        state = "does not exist yet (the first trace creates it)"
    elif experiment.lifecycle_stage == "deleted":
        state = f"id {experiment.experiment_id}, deleted (tracing restores it)"
    else:
        state = f"id {experiment.experiment_id}, artifact location {experiment.artifact_location}"
    return Check("tracking store", True, f"{where}: experiment {state}")


def _refused(target: Target, exc: BaseException, name: str = "trace write") -> Check | None:
    """The check's line when the server refused the request (401/403), else None."""
    refused = health.rejection(target.tracking_uri, exc) if target.is_server else None
    if refused is None:
        return None
    fix = ("ask the server's admin for EDIT permission on the experiment, or use another "
           "experiment (--experiment-name) or account" if "HTTP 403" in str(refused) else
           "set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN "
           "to an account the server accepts")
    return Check(name, False, f"{refused}; sent {identity(target.tracking_uri)}", fix)


def _scratch_wire():
    """One span, as the exporter would hand it to the store."""
    import random

    from synalinks_obs.export.wire import Wire

    rng = random.Random(os.urandom(16))
    otel_trace_id = rng.getrandbits(128) or 1
    now = time.time_ns()
    return Wire(
        otel_trace_id, f"tr-{otel_trace_id:032x}", rng.getrandbits(64) or 1, None,
        "synalinks-obs doctor", now, now + 1_000_000, "CHAIN", rng.getrandbits(128), None,
        "Doctor", "doctor", "", False, 0.0, None, None, None, None, None, None, True, False,
    )


def check_trace_write(store: StoreSession) -> Check:
    """Write one span exactly as the exporter does (``log_spans``), read it back, delete it."""
    name = "trace write"
    try:
        from synalinks_obs.compat import mlflow as mlflow_compat
        from synalinks_obs.store import server_support
        from synalinks_obs.store.mlflow_spans import wire_to_span

        experiment_id = store.experiment_id()
        wire = _scratch_wire()
        client = mlflow_compat.tracing_client(store.target.tracking_uri)
        try:
            server_support.check_server_version(store.target.tracking_uri, client)
        except server_support.ServerTooOld as exc:
            return Check(name, False, str(exc).split("; ")[0],
                         f"upgrade the tracking server to MLflow >= {server_support.OLDEST_SERVER} "
                         "(README, Compatibility)")
        client.log_spans(experiment_id, [wire_to_span(wire)])
        trace = None
        deadline = time.monotonic() + 10
        while trace is None and time.monotonic() < deadline:
            try:
                trace = store.client.get_trace(wire.trace_id, display=False)
            except Exception:
                time.sleep(0.2)
        if trace is None or not trace.data.spans:
            return Check(name, False, f"trace {wire.trace_id} written but not readable back",
                         "check the server's log; the backend store may be read-only or full")
    except Exception as exc:
        refused = _refused(store.target, exc)
        if refused is not None:
            return refused
        return Check(name, False, f"writing a span failed ({type(exc).__name__}: {reporting.first_line(exc)})",
                     "check the server's log and version: a server must accept log_spans "
                     "(README, Compatibility)")
    try:
        store.client.delete_traces(experiment_id, trace_ids=[wire.trace_id])
        cleanup = "and deleted"
    except Exception as exc:
        cleanup = f"(deleting it failed: {type(exc).__name__}; trace {wire.trace_id} stays)"
    return Check(name, True, f"a test span was written to experiment {experiment_id}, read back {cleanup}")


def _proxy_refusal(uri: str, timeout: float) -> str | None:
    """The server's own words when its artifact proxy is off, else None."""
    try:
        from synalinks_obs.compat import mlflow as mlflow_compat

        response = mlflow_compat.http_get(uri, "/api/2.0/mlflow-artifacts/artifacts", timeout)
    except Exception:
        return None
    body = (response.text or "")[:500]
    if response.status_code == 503 and "serve-artifacts" in body:
        return body.strip()
    return None


def check_artifacts(store: StoreSession, timeout: float) -> Check:
    name = "artifact proxy"
    target = store.target
    server = target.is_server
    if server and _proxy_refusal(target.tracking_uri, timeout):
        return Check(
            name, False,
            "the server does not proxy artifacts: it runs with --no-serve-artifacts (or "
            "without --serve-artifacts), so remote clients write to a path on the server's "
            "disk and fail with PermissionError (e.g. '/mlflow')",
            PROXY_FIX,
        )
    run_id = None
    cleanup = ""
    try:
        experiment_id = store.experiment_id()
        run = store.client.create_run(
            experiment_id, run_name="synalinks-obs-doctor", tags={"synalinks_obs.doctor": "scratch"}
        )
        run_id = run.info.run_id
        artifact_uri = run.info.artifact_uri or ""
        if server and not artifact_uri.startswith(("mlflow-artifacts:", "http://", "https://")):
            experiment = store.client.get_experiment(experiment_id)
            return Check(
                name, False,
                f"experiment '{target.experiment_name}' stores artifacts at {experiment.artifact_location}, "
                "a path on the server's disk, not through the proxy: the server runs without "
                "--serve-artifacts / --default-artifact-root mlflow-artifacts:/, or the "
                "experiment was created before they were set (an experiment keeps its location)",
                PROXY_FIX + "; then use a new experiment name",
            )
        store.client.log_text(run_id, "synalinks-obs doctor: artifact upload check\n", SCRATCH_ARTIFACT)
        listed = [info.path for info in store.client.list_artifacts(run_id)]
        if SCRATCH_ARTIFACT not in listed:
            return Check(name, False, f"uploaded {SCRATCH_ARTIFACT} to {artifact_uri} but it is not "
                         "listed back", "check --artifacts-destination (writable by the server)")
        cleanup = _delete_artifacts(artifact_uri, target.tracking_uri)
    except PermissionError as exc:
        return Check(name, False, f"upload failed: PermissionError: {exc} (the client tried to write "
                     "to the server's disk itself: no artifact proxy)", PROXY_FIX)
    except Exception as exc:
        refused = _refused(target, exc, name)
        if refused is not None:
            return refused
        return Check(name, False, f"upload to a scratch run failed ({type(exc).__name__}: "
                     f"{reporting.first_line(exc)})",
                     PROXY_FIX + "; and check the server can write to --artifacts-destination")
    finally:
        if run_id is not None:
            try:
                store.client.delete_run(run_id)
                cleanup += "; scratch run deleted"
            except Exception as exc:
                cleanup += f"; deleting scratch run {run_id} failed ({type(exc).__name__})"
    via = "through the server's artifact proxy" if artifact_uri.startswith("mlflow-artifacts:") else "directly"
    return Check(name, True, f"uploaded a file {via} ({artifact_uri}), listed it back{cleanup}")


def _delete_artifacts(artifact_uri: str, tracking_uri: str) -> str:
    try:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        # mlflow-artifacts: URIs resolve against a tracking URI: the server's, not MLflow's
        # global one (the scratch file was never deleted through a proxy).
        get_artifact_repository(artifact_uri, tracking_uri=tracking_uri).delete_artifacts()
    except Exception as exc:
        return f"; deleting the scratch file failed ({type(exc).__name__})"
    return "; scratch file deleted"

"""``python -m synalinks_obs doctor``: the seed's troubleshooting checklist, automated.

Run it the way the app runs, so it sees the same environment::

    SYNALINKS_OBSERVABILITY=1 MLFLOW_TRACKING_URI=http://mlflow:5000 python -m synalinks_obs doctor
    python -m synalinks_obs.run --tracking-uri http://mlflow:5000 -m synalinks_obs doctor
    python -m synalinks_obs doctor --tracking-uri http://mlflow:5000 --json

One line per check, with the fix when it fails; exit status 0 only when every check
passes (1 otherwise, 2 for bad arguments). ``--json`` prints the same as one JSON object.

Checks, in the order of the seed's troubleshooting section:

- ``tracing``: on or off in this process, and how it was turned on
  (``SYNALINKS_OBSERVABILITY=1`` through the ``.pth`` start-up hook, the launcher
  ``python -m synalinks_obs.run``, or ``synalinks_obs.enable()`` when called in-process);
- ``modules built early``: the seed's "enable before creating modules" rule no longer
  applies: ``Module.__call__`` is patched at class level, proven on the installed
  Synalinks with a module built *before* the patch and a class defined after it;
- ``synalinks``, ``mlflow``: installed versions and whether they are supported;
- ``start-up hook``: ``synalinks_obs.pth`` present in a site directory (without it,
  ``SYNALINKS_OBSERVABILITY=1`` does nothing: an editable install, ``--target``...);
- ``settings``: the ``SYNALINKS_OBS_*`` variables are valid;
- ``tracking store``: the resolved tracking URI and experiment, and where each came from;
  the store answers (experiment found, or to be created by the first trace);
- ``server health``: ``GET <server>/health`` (servers only);
- ``trace write``: one span written with the same MLflow call the exporter uses
  (``log_spans``), read back, then deleted;
- ``artifact proxy``: whether the server proxies artifact uploads: a small file uploaded
  to a scratch run, listed back, then deleted with the run. A server started with
  ``--no-serve-artifacts`` (or without ``--serve-artifacts``) hands clients a path on its
  own disk; this check fails and names the flag (the seed's
  ``PermissionError: [Errno 13] Permission denied: '/mlflow'``).

Side effects: the experiment is created when missing (as the first trace would create
it); the scratch trace, artifact and run are deleted (MLflow soft-deletes runs; ``mlflow
gc`` purges them). A local sqlite store that does not exist yet is not created. The
command itself never traces: an activation by ``SYNALINKS_OBSERVABILITY=1`` is noted
and then cancelled in the doctor's own process.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass

from synalinks_obs._writer import sqlite_path

DEFAULT_EXPERIMENT = "synalinks_traces"
MIN_MLFLOW = (3, 5)
SCRATCH_ARTIFACT = "synalinks_obs_doctor.txt"
PROXY_FIX = (
    "restart the server with --serve-artifacts --default-artifact-root mlflow-artifacts:/ "
    "--artifacts-destination DIR (see examples/deploy/)"
)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = "[ ok ]" if self.ok else "[FAIL]"
        text = f"{mark} {self.name}: {self.detail}"
        if not self.ok and self.fix:
            text += f" -> fix: {self.fix}"
        return text


@dataclass
class Target:
    tracking_uri: str
    uri_source: str
    experiment_name: str
    experiment_source: str

    @property
    def is_server(self) -> bool:
        return self.tracking_uri.startswith(("http://", "https://"))


# -- resolution ----------------------------------------------------------------------

def resolve_target(tracking_uri=None, experiment_name=None) -> Target:
    """Tracking URI and experiment as tracing would resolve them, and where from."""
    if tracking_uri:
        uri, uri_source = tracking_uri, "--tracking-uri"
    elif os.environ.get("MLFLOW_TRACKING_URI", "").strip():
        uri, uri_source = os.environ["MLFLOW_TRACKING_URI"].strip(), "MLFLOW_TRACKING_URI"
    else:
        from mlflow.tracking._tracking_service.utils import get_tracking_uri

        uri, uri_source = get_tracking_uri(), "MLflow's default"
    uri = _absolute_local(uri)
    if experiment_name:
        name, name_source = experiment_name, "--experiment-name"
    elif os.environ.get("MLFLOW_EXPERIMENT_NAME", "").strip():
        name, name_source = os.environ["MLFLOW_EXPERIMENT_NAME"].strip(), "MLFLOW_EXPERIMENT_NAME"
    else:
        name, name_source = DEFAULT_EXPERIMENT, "default"
    return Target(uri, uri_source, name, name_source)


def _absolute_local(uri: str) -> str:
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + os.path.abspath(uri[len("sqlite:///"):])
    if "://" not in uri and not uri.startswith(("databricks", "file:")):
        return "file://" + os.path.abspath(uri)
    return uri


# -- individual checks ---------------------------------------------------------------

def check_tracing(state: dict) -> Check:
    source = state.get("source")
    if not state.get("enabled"):
        return Check(
            "tracing", False, "off in this process",
            "run the app with SYNALINKS_OBSERVABILITY=1, or python -m synalinks_obs.run app.py, "
            "or call synalinks_obs.enable(); run this doctor the same way to check that setup",
        )
    how = {
        "env": "SYNALINKS_OBSERVABILITY=1 (the synalinks_obs.pth start-up hook)",
        "run": "python -m synalinks_obs.run (the launcher)",
        "enable()": "synalinks_obs.enable()",
        "synalinks": "synalinks.enable_observability(), routed to synalinks-obs",
    }.get(source, str(source))
    return Check(
        "tracing", True,
        f"on, activated by {how}; synalinks.enable_observability() calls are routed to "
        "synalinks-obs (one span per module call)",
    )


def check_early_modules() -> Check:
    """Prove on the installed Synalinks that a module built before activation is traced."""
    name = "modules built early"
    try:
        with _quiet():
            import synalinks  # noqa: F401
            from synalinks.src.modules.module import Module
        from synalinks_obs import instrument
    except Exception as exc:
        return Check(name, False, f"cannot import synalinks ({type(exc).__name__}: {exc})",
                     "pip install 'synalinks>=0.9'")
    patched_here = not instrument.is_instrumented()
    try:
        class _BuiltBefore(Module):
            async def call(self, inputs, training=False):
                return inputs

        early = _BuiltBefore(name="doctor_early")  # built before the patch below
        instrument.instrument(Module)

        class _DefinedAfter(Module):
            async def __call__(self, *args, **kwargs):
                return await super().__call__(*args, **kwargs)

        mark = instrument._MARK
        wrapped = (
            getattr(type(early).__call__, mark, False)
            and getattr(Module.__dict__["__call__"], mark, False)
            and getattr(_DefinedAfter.__dict__["__call__"], mark, False)
        )
    except Exception as exc:
        wrapped, error = False, exc
    else:
        error = None
    finally:
        if patched_here:
            instrument.uninstrument()
    if not wrapped:
        reason = f" ({type(error).__name__}: {error})" if error else ""
        return Check(name, False, f"Module.__call__ could not be patched{reason}",
                     "use a supported Synalinks version (>= 0.9) and report this")
    return Check(
        name, True,
        "none are missed any more: Module.__call__ is patched at class level (checked on a "
        "module built before the patch and a subclass defined after it), so enabling "
        "before or after building modules makes no difference",
    )


def check_synalinks() -> Check:
    from synalinks_obs import compat

    version = compat.synalinks_version()
    if version is None:
        return Check("synalinks", False, "not installed", "pip install 'synalinks>=0.9'")
    if not compat.is_supported(version):
        return Check("synalinks", False, f"{version} is not supported (needs {compat.SUPPORTED})",
                     "pip install -U 'synalinks>=0.9'")
    return Check("synalinks", True, f"{version} (supported: {compat.SUPPORTED})")


def check_mlflow() -> Check:
    from importlib.metadata import PackageNotFoundError, version

    try:
        text = version("mlflow")
    except PackageNotFoundError:
        try:
            text = version("mlflow-skinny")
        except PackageNotFoundError:
            return Check("mlflow", False, "not installed", "pip install mlflow")
    try:
        parsed = tuple(int(p) for p in text.split(".")[:2])
    except ValueError:
        parsed = (0, 0)
    wanted = ".".join(map(str, MIN_MLFLOW))
    if parsed < MIN_MLFLOW:
        return Check("mlflow", False, f"{text} is too old (needs >= {wanted})",
                     f"pip install -U 'mlflow>={wanted}'")
    return Check("mlflow", True, f"{text} (supported: >= {wanted})")


def find_pth() -> list[str]:
    import site

    directories = list(site.getsitepackages()) if hasattr(site, "getsitepackages") else []
    user = site.getusersitepackages() if hasattr(site, "getusersitepackages") else None
    if user:
        directories.append(user)
    directories += [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    seen, found = set(), []
    for directory in directories:
        path = os.path.join(directory, "synalinks_obs.pth")
        if path not in seen and os.path.isfile(path):
            seen.add(path)
            found.append(path)
    return found


def check_pth() -> Check:
    found = find_pth()
    if not found:
        return Check(
            "start-up hook", False,
            "no synalinks_obs.pth in any site directory: SYNALINKS_OBSERVABILITY=1 does nothing "
            "here (an editable install, pip install --target, or a PYTHONPATH copy)",
            "install synalinks-obs from a wheel into the app's environment (pip install "
            "synalinks-obs, not -e), or start the app with python -m synalinks_obs.run",
        )
    path = found[0]
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    if "synalinks_obs._bootstrap" not in text:
        return Check("start-up hook", False, f"{path} does not call synalinks_obs._bootstrap",
                     "reinstall synalinks-obs (pip install --force-reinstall synalinks-obs)")
    return Check("start-up hook", True, f"{path} present")


def check_settings() -> Check:
    from synalinks_obs import settings as settings_module

    buffer = io.StringIO()
    try:
        with contextlib.redirect_stderr(buffer):
            settings_module._reported.clear()
            settings_module.load_settings()
    except Exception as exc:
        return Check("settings", False, str(exc), "fix the variable named above")
    problems = [line.removeprefix("synalinks-obs: ") for line in buffer.getvalue().splitlines() if line]
    if problems:
        return Check("settings", False, "; ".join(problems),
                     "fix or unset the variables named (their defaults are used meanwhile)")
    names = sorted(k for k in os.environ if k.startswith(settings_module.ENV_PREFIX))
    return Check("settings", True, f"valid ({', '.join(names) if names else 'all defaults'})")


def _health(uri: str, timeout: float) -> tuple[bool, str]:
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            body = reply.read(200).decode("utf-8", "replace").strip()
            return reply.status == 200, f"GET {url} -> {reply.status} {body}"
    except urllib.error.HTTPError as exc:
        return False, f"GET {url} -> HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"GET {url} failed: {reason}"


def check_health(target: Target, timeout: float) -> Check:
    if not target.is_server:
        return Check("server health", True, f"no server to check: {target.tracking_uri} is a local store")
    ok, detail = _health(target.tracking_uri, timeout)
    if ok:
        return Check("server health", True, detail)
    return Check(
        "server health", False, detail,
        "start the server (examples/deploy/) and check the URI, host and port; "
        "from a container use the service name, not localhost",
    )


class _Store:
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
            from synalinks_obs.export import resolve_experiment

            self._experiment_id = resolve_experiment(self.target.tracking_uri, self.target.experiment_name)
        return self._experiment_id


def _where(target: Target) -> str:
    return (f"{target.tracking_uri} (from {target.uri_source}), experiment "
            f"'{target.experiment_name}' (from {target.experiment_source})")


def check_store(target: Target, store: _Store | None) -> Check:
    where = _where(target)
    sqlite = sqlite_path(target.tracking_uri)
    if store is None:
        return Check("tracking store", True, f"{where}; the sqlite file {sqlite} does not exist yet: "
                     "the first trace creates it")
    try:
        experiment = store.experiment()
    except Exception as exc:
        return Check("tracking store", False, f"{where}; the store does not answer "
                     f"({type(exc).__name__}: {_first_line(exc)})",
                     "check MLFLOW_TRACKING_URI / --tracking-uri (scheme, host, port, database)")
    if experiment is None:
        state = "does not exist yet (the first trace creates it)"
    elif experiment.lifecycle_stage == "deleted":
        state = f"id {experiment.experiment_id}, deleted (tracing restores it)"
    else:
        state = f"id {experiment.experiment_id}, artifact location {experiment.artifact_location}"
    return Check("tracking store", True, f"{where}: experiment {state}")


def check_trace_write(store: _Store) -> Check:
    """Write one span exactly as the exporter does, read it back, delete it."""
    name = "trace write"
    try:
        from mlflow.tracing.client import TracingClient

        experiment_id = store.experiment_id()
        span, trace_id = _scratch_span()
        TracingClient(store.target.tracking_uri).log_spans(experiment_id, [span])
        trace = None
        deadline = time.monotonic() + 10
        while trace is None and time.monotonic() < deadline:
            try:
                trace = store.client.get_trace(trace_id, display=False)
            except Exception:
                time.sleep(0.2)
        if trace is None or not trace.data.spans:
            return Check(name, False, f"trace {trace_id} written but not readable back",
                         "check the server's log; the backend store may be read-only or full")
        try:
            store.client.delete_traces(experiment_id, trace_ids=[trace_id])
        except Exception:
            pass
    except Exception as exc:
        return Check(name, False, f"writing a span failed ({type(exc).__name__}: {_first_line(exc)})",
                     "check the server's log; an MLflow server older than 3.4 cannot take spans "
                     "(log_spans): upgrade it, ideally to the client's mlflow version")
    return Check(name, True, f"a test span was written to experiment {experiment_id}, read back "
                 "and deleted")


def _scratch_span():
    import random

    from mlflow.entities import Span
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags

    rng = random.Random(os.urandom(16))
    otel_trace_id = rng.getrandbits(128) or 1
    trace_id = f"tr-{otel_trace_id:032x}"
    now = time.time_ns()
    context = SpanContext(otel_trace_id, rng.getrandbits(64) or 1, False, TraceFlags(TraceFlags.SAMPLED))
    readable = ReadableSpan(
        name="synalinks-obs doctor",
        context=context,
        parent=None,
        attributes={
            "mlflow.traceRequestId": json.dumps(trace_id),
            "mlflow.spanType": json.dumps("CHAIN"),
        },
        status=Status(StatusCode.OK),
        start_time=now,
        end_time=now + 1_000_000,
    )
    return Span(readable), trace_id


def _proxy_disabled(uri: str, timeout: float) -> str | None:
    """The server's own words when its artifact proxy is off, else None."""
    url = uri.rstrip("/") + "/api/2.0/mlflow-artifacts/artifacts"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return None
    except urllib.error.HTTPError as exc:
        body = exc.read(500).decode("utf-8", "replace")
        if exc.code == 503 and "serve-artifacts" in body:
            return body.strip()
        return None
    except (urllib.error.URLError, OSError):
        return None


def check_artifacts(store: _Store, timeout: float) -> Check:
    name = "artifact proxy"
    target = store.target
    server = target.is_server
    if server:
        refusal = _proxy_disabled(target.tracking_uri, timeout)
        if refusal:
            return Check(
                name, False,
                "the server does not proxy artifacts: it runs with --no-serve-artifacts (or "
                "without --serve-artifacts), so remote clients write to a path on the server's "
                "disk and fail with PermissionError (e.g. '/mlflow')",
                PROXY_FIX,
            )
    run_id = None
    try:
        experiment_id = store.experiment_id()
        run = store.client.create_run(
            experiment_id, run_name="synalinks-obs-doctor", tags={"synalinks_obs.doctor": "scratch"}
        )
        run_id = run.info.run_id
        artifact_uri = run.info.artifact_uri or ""
        if server and not artifact_uri.startswith(("mlflow-artifacts:", "http://", "https://")):
            if artifact_uri.startswith("file:") or artifact_uri.startswith("/") or "://" not in artifact_uri:
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
        _delete_artifacts(artifact_uri)
    except PermissionError as exc:
        return Check(name, False, f"upload failed: PermissionError: {exc} (the client tried to write "
                     "to the server's disk itself: no artifact proxy)", PROXY_FIX)
    except Exception as exc:
        return Check(name, False, f"upload to a scratch run failed ({type(exc).__name__}: "
                     f"{_first_line(exc)})",
                     PROXY_FIX + "; and check the server can write to --artifacts-destination")
    finally:
        if run_id is not None:
            try:
                store.client.delete_run(run_id)
            except Exception:
                pass
    via = "through the server's artifact proxy" if artifact_uri.startswith("mlflow-artifacts:") else "directly"
    return Check(name, True, f"uploaded a file {via} ({artifact_uri}), listed it back; scratch "
                 "run and file deleted")


def _delete_artifacts(artifact_uri: str) -> None:
    try:
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        get_artifact_repository(artifact_uri).delete_artifacts()
    except Exception:
        pass  # best effort: the run is deleted anyway


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else ""


@contextlib.contextmanager
def _quiet():
    """Keep MLflow's/litellm's own chatter out of the one-line-per-check output."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


# -- the whole run -------------------------------------------------------------------

def run_checks(tracking_uri=None, experiment_name=None, timeout: float = 10.0,
               activation: tuple | None = None) -> list[Check]:
    """Run every check (in process); a list of ``Check``. Use from an app to see its setup.

    ``activation``: ``(enabled, source)`` to report instead of this process' current state.
    """
    import synalinks_obs

    if activation is None:
        activation = (synalinks_obs.is_enabled(), synalinks_obs.activation_source())
    state = {"enabled": activation[0], "source": activation[1]}
    # Fail fast against an unreachable server instead of MLflow's minutes of retries.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(timeout, 1))))
    import logging

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    checks = [check_tracing(state), check_early_modules(), check_synalinks(), check_mlflow(),
              check_pth(), check_settings()]
    target = resolve_target(tracking_uri, experiment_name)
    health = check_health(target, timeout)
    sqlite = sqlite_path(target.tracking_uri)
    store = None
    if not (sqlite and not os.path.exists(sqlite)):
        try:
            store = _Store(target)
        except Exception as exc:
            fix = "check MLFLOW_TRACKING_URI / --tracking-uri"
            checks.append(Check("tracking store", False, f"{_where(target)}; cannot open it "
                                f"({type(exc).__name__}: {_first_line(exc)})", fix))
            checks.append(health)
            checks.append(Check("trace write", False, "not tried: the store cannot be opened", fix))
            checks.append(Check("artifact proxy", False, "not tried: the store cannot be opened", fix))
            return checks
    if target.is_server and not health.ok:
        reason = "not tried: the server is not reachable"
        checks.append(Check("tracking store", False, f"{_where(target)}; {reason}", health.fix))
        checks.append(health)
        checks.append(Check("trace write", False, reason, health.fix))
        checks.append(Check("artifact proxy", False, reason, health.fix))
        return checks
    checks.append(check_store(target, store))
    checks.append(health)
    if store is None:
        checks.append(Check("trace write", True, "not tried: the local store does not exist yet"))
    else:
        checks.append(check_trace_write(store))
    if target.is_server:
        checks.append(check_artifacts(store, timeout))
    else:
        checks.append(Check("artifact proxy", True, "no server: the app writes artifacts to the "
                            "experiment's artifact location on this machine itself"))
    return checks


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m synalinks_obs doctor",
        description="Check a synalinks-obs set-up: tracing, versions, tracking store, server "
        "health, trace write, artifact proxy. Run it the way the app runs (same environment).",
    )
    parser.add_argument("--tracking-uri", default=None,
                        help="tracking URI to check (default: $MLFLOW_TRACKING_URI, else MLflow's default)")
    parser.add_argument("--experiment-name", "--experiment", dest="experiment_name", default=None,
                        help=f"experiment (default: $MLFLOW_EXPERIMENT_NAME, else {DEFAULT_EXPERIMENT})")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--timeout", type=float, default=10.0, help="network timeout in seconds")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    import synalinks_obs

    # The doctor observes; it never traces itself. Note the activation, then cancel a
    # start-up one (an explicit in-process enable() is left alone by run_checks()).
    activation = (synalinks_obs.is_enabled(), synalinks_obs.activation_source())
    if activation[1] in ("env", "run") and not _tracer_running():
        synalinks_obs.disable()
    checks = run_checks(args.tracking_uri, args.experiment_name, args.timeout, activation)
    target = resolve_target(args.tracking_uri, args.experiment_name)
    ok = all(check.ok for check in checks)
    if args.json:
        print(json.dumps({
            "ok": ok,
            "tracking_uri": target.tracking_uri,
            "experiment_name": target.experiment_name,
            "checks": [asdict(check) for check in checks],
        }, indent=2))
    else:
        print(f"synalinks-obs doctor: {target.tracking_uri}, experiment '{target.experiment_name}'")
        for check in checks:
            print(check.line())
        failed = sum(not check.ok for check in checks)
        print("all checks passed" if ok else f"{failed} check(s) failed")
    return 0 if ok else 1


def _tracer_running() -> bool:
    instrument = sys.modules.get("synalinks_obs.instrument")
    return instrument is not None and instrument.STATE.tracer is not None


if __name__ == "__main__":
    sys.exit(main())

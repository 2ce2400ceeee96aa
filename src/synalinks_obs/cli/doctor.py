"""``python -m synalinks_obs doctor``: the seed's troubleshooting checklist, automated.

Run it as the app runs (same environment), or through the launcher to check a launcher
set-up::

    python -m synalinks_obs doctor [--tracking-uri URI] [--experiment-name NAME] [--json]
    python -m synalinks_obs.run -m synalinks_obs doctor --require-tracing

One line per check, with the fix when it fails; exit status 0 only when every check
passes (1 otherwise, 2 for bad arguments). Checks: tracing (on, or what the app's start
would do; ``--require-tracing`` makes "off" a failure), modules built before activation
(a real call, traced in memory), Synalinks and MLflow versions, the ``.pth`` start-up
hook, the ``SYNALINKS_OBS_*`` settings, the resolved store and experiment, server health
(with the identity used), a span written with the exporter's own call and read back, the
artifact proxy, compatibility fallbacks in use, and what is patched in this process
(``--json`` lists every patched attribute).

Side effects: the experiment is created when missing (as the first trace would); scratch
objects are deleted. A local sqlite store that does not exist is not created. MLflow's
retry settings and logger level are changed only while the checks run, then restored.
The command itself never traces.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
from dataclasses import asdict

from synalinks_obs import uris
from synalinks_obs.cli import checks, store_checks
from synalinks_obs.cli.checks import Check
from synalinks_obs.settings import DEFAULT_EXPERIMENT
from synalinks_obs.store.local_access import sqlite_store_problem

_FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}


@contextlib.contextmanager
def _for_the_checks(timeout: float):
    """MLflow fails fast and quietly while the checks run; everything is put back after."""
    overrides = dict(_FAIL_FAST, MLFLOW_HTTP_REQUEST_TIMEOUT=str(int(max(timeout, 1))))
    saved_env = {name: os.environ.get(name) for name in overrides}
    mlflow_logger = logging.getLogger("mlflow")
    saved_level = mlflow_logger.level
    for name, value in overrides.items():
        os.environ.setdefault(name, value)
    mlflow_logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # MLflow's/litellm's own chatter
            yield
    finally:
        mlflow_logger.setLevel(saved_level)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_checks(tracking_uri=None, experiment_name=None, timeout: float = 10.0,
               activation: tuple | None = None, require_tracing: bool = False) -> list[Check]:
    """Run every check in process; a list of ``Check``. Usable from an app to see its set-up.

    ``activation``: ``(enabled, source)`` to report instead of this process' current state.
    """
    import synalinks_obs

    if activation is None:
        activation = (synalinks_obs.is_enabled(), synalinks_obs.activation_source())
    with _for_the_checks(timeout):
        found = [
            checks.check_tracing(activation[0], activation[1], require_tracing),
            checks.check_early_modules(),
            checks.check_version("synalinks"),
            checks.check_version("mlflow"),
            checks.check_pth(),
            checks.check_settings(),
        ]
        found += _store_checks(store_checks.resolve_target(tracking_uri, experiment_name), timeout)
        found.append(checks.check_fallbacks())
        found.append(checks.check_patches())
    return found


def _store_checks(target, timeout: float) -> list[Check]:
    problem = uris.file_store_problem(target.tracking_uri) or sqlite_store_problem(target.tracking_uri)
    if problem is not None:
        fix = "use sqlite:///DIR/mlflow.db in a directory this user can write, or an MLflow server"
        return [Check("tracking store", False, problem.removeprefix("synalinks-obs: "), fix)]
    health = store_checks.check_health(target, timeout)
    sqlite = uris.sqlite_path(target.tracking_uri)
    store = None
    if not (sqlite and not os.path.exists(sqlite)):
        try:
            store = store_checks.StoreSession(target)
        except Exception as exc:
            fix = "check MLFLOW_TRACKING_URI / --tracking-uri"
            reason = "not tried: the store cannot be opened"
            from synalinks_obs import reporting

            return [
                Check("tracking store", False, f"{target.where()}; cannot open it "
                      f"({type(exc).__name__}: {reporting.first_line(exc)})", fix),
                health, Check("trace write", False, reason, fix),
                Check("artifact proxy", False, reason, fix),
            ]
    if target.is_server and not health.ok:
        reason = "not tried: the server is not usable"
        return [
            Check("tracking store", False, f"{target.where()}; {reason}", health.fix), health,
            Check("trace write", False, reason, health.fix),
            Check("artifact proxy", False, reason, health.fix),
        ]
    found = [store_checks.check_store(target, store), health]
    if store is None:
        found.append(Check("trace write", True, "not tried: the local store does not exist yet"))
    else:
        found.append(store_checks.check_trace_write(store))
    if target.is_server:
        found.append(store_checks.check_artifacts(store, timeout))
    else:
        found.append(Check("artifact proxy", True, "no server: the app writes artifacts to the "
                           "experiment's artifact location on this machine itself"))
    return found


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m synalinks_obs doctor",
        description="Check a synalinks-obs set-up: tracing, versions, tracking store, server "
        "health, trace write, artifact proxy. Run it the way the app runs (same environment).",
    )
    parser.add_argument("--tracking-uri", default=None,
                        help="tracking URI to check (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)")
    parser.add_argument("--experiment-name", "--experiment", dest="experiment_name", default=None,
                        help=f"experiment (default: $MLFLOW_EXPERIMENT_NAME, else {DEFAULT_EXPERIMENT})")
    parser.add_argument("--require-tracing", action="store_true",
                        help="fail unless tracing is on in this process (check a launcher set-up)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--timeout", type=float, default=10.0, help="network timeout in seconds")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    import synalinks_obs
    from synalinks_obs.runtime import RUNTIME

    # The doctor observes; it never traces itself. Note the activation, then cancel a
    # start-up one (an explicit in-process enable() is left alone by run_checks()).
    activation = (synalinks_obs.is_enabled(), synalinks_obs.activation_source())
    if activation[1] in ("env", "run") and RUNTIME.tracer is None:
        synalinks_obs.disable()
    found = run_checks(args.tracking_uri, args.experiment_name, args.timeout, activation,
                       args.require_tracing)
    target = store_checks.resolve_target(args.tracking_uri, args.experiment_name)
    ok = all(check.ok for check in found)
    shown_uri = uris.display(target.tracking_uri)
    if args.json:
        print(json.dumps({
            "ok": ok,
            "tracking_uri": shown_uri,
            "experiment_name": target.experiment_name,
            "checks": [asdict(check) for check in found],
            "patches": RUNTIME.patches.describe(),
        }, indent=2))
    else:
        print(f"synalinks-obs doctor: {shown_uri}, experiment '{target.experiment_name}'")
        for check in found:
            print(check.line())
        failed = sum(not check.ok for check in found)
        print("all checks passed" if ok else f"{failed} check(s) failed")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""The MLflow run a training ``Monitor`` logs to: opened, routed, and failures told.

``create_run`` opens it (experiment, name, masked tags, the app's active run as parent);
``route_traces``/``unroute_traces`` send the traces of the calls made while it runs to
it (this task's, and the tasks, threads and pool work it starts); ``TrainingRun`` holds what one ``fit()`` or standalone ``evaluate()`` needs of its MLflow
run (client, ids, artifact location, the routing of its traces, how its values are
masked, whether the store already failed); ``why`` and ``artifact_failure_message`` turn
a failed store call into the one line the user reads (a refusal or a probe's own line,
the missing ``--serve-artifacts`` flag).
"""

from __future__ import annotations

import time
from urllib.parse import urlparse

from synalinks_obs import reporting, uris
from synalinks_obs.store import health
from synalinks_obs.store.experiments import resolve_experiment
from synalinks_obs.tracing import context
from synalinks_obs.tracing.records import Destination
from synalinks_obs.training import privacy
from synalinks_obs.training.program import program_description, program_name, synalinks_version


class TrainingRun:
    """The MLflow run a Monitor is logging to (one fit() or one evaluate())."""

    def __init__(self, client, run, tracking_uri, experiment_name, kind):
        self.client = client
        self.run_id = run.info.run_id
        self.experiment_id = run.info.experiment_id
        self.artifact_uri = run.info.artifact_uri
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.kind = kind
        self.destination = None
        self.token = None
        self.t0 = time.perf_counter()
        self.artifacts_failed = False
        self.broken = False  # the store failed a call: nothing more is sent for this run
        self.last_step = 0
        self.policy = privacy.current_policy()  # how params, tags and artifacts are masked


def artifact_failure_message(run: TrainingRun, exc: BaseException) -> str:
    error = f"{type(exc).__name__}: {reporting.first_line(exc)}"
    remote = urlparse(run.tracking_uri or "").scheme in ("http", "https")
    artifact_scheme = urlparse(run.artifact_uri or "").scheme
    if remote and artifact_scheme in ("", "file"):
        return (
            f"synalinks-obs: cannot upload the artifacts of run {run.run_id} ({error}). "
            f"The MLflow server at {uris.display(run.tracking_uri)} gave this run the artifact location "
            f"{run.artifact_uri!r}, a path on the server's disk, because it does not proxy "
            "artifacts: restart it with `--serve-artifacts --default-artifact-root "
            "mlflow-artifacts:/ --artifacts-destination DIR`. Training goes on; this run "
            "gets no artifacts."
        )
    return (
        f"synalinks-obs: cannot upload the artifacts of run {run.run_id} to "
        f"{run.artifact_uri} ({error}); training goes on, this run gets no artifacts"
    )


def why(tracking_uri, exc: BaseException) -> str:
    """Why a store call failed, in words: a refusal (401/403) or a probe's own line says
    what to fix; anything else is the error's first line."""
    known = exc if isinstance(exc, health.StoreUnavailable) else None
    if known is None and uris.is_http(tracking_uri):
        known = health.rejection(tracking_uri, exc)
    if known is not None:
        return str(known)
    return f"{type(exc).__name__}: {reporting.first_line(exc)}"


def create_run(program, kind, tracking_uri, experiment_name, run_name, user_tags, autolog) -> TrainingRun:
    """Open the MLflow run of one ``fit()`` (``kind`` ``train``) or ``evaluate()``: its
    experiment (default: the program's name), name, tags (masked), and the app's active
    run of the same experiment and store as its parent."""
    import mlflow
    from mlflow.tracking import MlflowClient
    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    name = program_name(program)
    if uris.is_http(tracking_uri):
        health.probe(tracking_uri)  # fail fast: MLflow's own client retries for minutes
    experiment_name = experiment_name or name
    experiment_id = resolve_experiment(tracking_uri, experiment_name)
    run_name = run_name or f"{name}-{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    tags = {
        "synalinks.program": name,
        "synalinks.program_class": type(program).__name__ if program is not None else "",
        "synalinks.run_type": kind,
        "synalinks_obs.autolog": str(autolog).lower(),
    }
    version = synalinks_version()
    if version:
        tags["synalinks.version"] = version
    description = program_description(program)
    if description:
        tags["synalinks.program_description"] = description[:5000]
    tags.update({str(k): str(v) for k, v in (user_tags or {}).items()})
    tags = privacy.params(privacy.current_policy(), tags)
    active = mlflow.active_run()
    if active is not None and active.info.experiment_id == experiment_id and (
        uris.same_store(mlflow.get_tracking_uri(), tracking_uri)
    ):
        tags.setdefault(MLFLOW_PARENT_RUN_ID, active.info.run_id)
    client = MlflowClient(tracking_uri)
    run = client.create_run(experiment_id, run_name=run_name, tags=resolve_tags(tags))
    return TrainingRun(client, run, tracking_uri, experiment_name, kind)


def route_traces(run: TrainingRun) -> None:
    """Send the traces of calls made from now on to the run: this task's, and those of
    the tasks, threads and thread-pool work it starts (``tracing.threads``)."""
    run.destination = Destination(
        run.tracking_uri, run.experiment_name, run.experiment_id, run.run_id,
        trace_kind="training" if run.kind == "train" else "evaluation",
    )
    run.token = context.DESTINATION_OVERRIDE.set(run.destination)
    context.push_run_destination(run.destination)


def unroute_traces(run: TrainingRun) -> None:
    """Calls made from now on trace where they did before the run."""
    if run.destination is None:
        return
    context.pop_run_destination(run.destination)
    if run.token is not None:
        try:
            context.DESTINATION_OVERRIDE.reset(run.token)
        except ValueError:  # ended from another context than the one it started in
            if context.DESTINATION_OVERRIDE.get() == run.destination:
                context.DESTINATION_OVERRIDE.set(None)
    run.token = None

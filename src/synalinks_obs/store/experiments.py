"""Experiments by name: resolved, and created when missing, race-safe.

Several processes (app replicas, the exporter process) may ask for the same new
experiment at once: a creation that fails because another process won is read back.
A deleted experiment is restored (it would refuse traces otherwise).
"""

from __future__ import annotations


def resolve_experiment(tracking_uri, experiment_name) -> str:
    """Id of the named experiment in the store, created when missing (race-safe)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from synalinks_obs.store.schema_lock import guard_schema_setup

    guard_schema_setup()
    client = MlflowClient(tracking_uri)  # opens (creates, migrates) the store
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    try:
        return client.create_experiment(experiment_name)
    except MlflowException:  # another process created it first
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            raise
        return experiment.experiment_id

"""MLflow's default experiment while synalinks-obs traces: the tracing experiment.

When the app's own MLflow code names no experiment (no ``mlflow.set_experiment``, no
``MLFLOW_EXPERIMENT_ID``), MLflow asks the default-experiment providers registered under
the ``mlflow.default_experiment_provider`` entry point group. Ours answers while tracing
is on and MLflow's tracking URI is the one we trace into: the tracing experiment. So a
user's ``@mlflow.trace`` around a program call (whose root span is MLflow's) lands with
the rest of the traces, as the seed's built-in observability did by calling
``mlflow.set_experiment``, without changing MLflow's active experiment or environment.

The experiment is resolved when MLflow asks, on the thread that asks: never at start-up
(creating a sqlite store costs seconds of CPU) and never in a background race that could
decide where the first trace goes. If the store cannot tell (down, failing), MLflow's own
default is used, one line is logged, and the store is asked again 30 s later at most.

This module is imported by MLflow itself (entry point), in every process that imports
MLflow with synalinks-obs installed: it imports nothing of ours until tracing is on.
"""

from __future__ import annotations

import sys

from mlflow.tracking.default_experiment import DEFAULT_EXPERIMENT_ID
from mlflow.tracking.default_experiment.abstract_context import DefaultExperimentProvider


def _tracer():
    runtime = sys.modules.get("synalinks_obs.runtime")
    return getattr(getattr(runtime, "RUNTIME", None), "tracer", None)


class TracingExperimentProvider(DefaultExperimentProvider):
    """The tracing experiment, while synalinks-obs traces into MLflow's tracking URI."""

    def in_context(self) -> bool:
        tracer = _tracer()
        if tracer is None:
            return False
        import mlflow

        from synalinks_obs import uris

        return uris.same_store(mlflow.get_tracking_uri(), tracer.destination.tracking_uri)

    def get_experiment_id(self) -> str:
        tracer = _tracer()
        if tracer is None:  # disabled in between
            return DEFAULT_EXPERIMENT_ID
        try:
            return tracer.exporter.experiment_id_now(tracer.destination)
        except Exception:  # the exporter said why, once
            return DEFAULT_EXPERIMENT_ID

"""Whether a tracking store takes spans of many traces in one ``log_spans`` call, and the
oldest MLflow server that can hold our spans.

The writer sends many traces per call (``store.writer``). MLflow's SQL store refused a
batch mixing traces ("All spans must belong to the same trace") until MLflow 3.12, so a
local store (sqlite, PostgreSQL) opened by an app with MLflow 3.11.x (what Synalinks 0.9
accepts) gets one trace per call instead: ``batches_for`` groups the spans per trace
there. An MLflow server splits an OTLP request per trace itself from 3.6; 3.4 and 3.5
keep spans written with ``log_spans`` in their database but read only trace artifacts
back (client and UI show traces without spans), and before 3.10 a server answers 500
when a training run's link is merged into a trace whose spans (LM token usage) gave it
metadata (measured on 3.6.0 and 3.7.0; 3.10 keeps that metadata). So a server older than
3.10 is refused with one line saying so (``ServerTooOld``), from the REST store's own
cached ``/version`` lookup (the one its ``log_spans`` makes anyway).
"""

from __future__ import annotations

from synalinks_obs import uris
from synalinks_obs.compat import mlflow as mlflow_compat

MIXED_LOCAL = "3.12"  # MLflow's SqlAlchemyStore.log_spans groups per trace from this version
OLDEST_SERVER = "3.10"  # shows log_spans' spans and takes a training run's link to them


class ServerTooOld(Exception):
    """The tracking server's MLflow cannot hold (or show) spans written with log_spans."""


def accepts_mixed_traces(tracking_uri: str, client) -> bool:
    """Whether the store behind ``client`` (a ``TracingClient``) takes many traces per call.

    Raises ``ServerTooOld`` for an MLflow server older than ``OLDEST_SERVER``."""
    from packaging.version import Version

    if uris.is_http(tracking_uri):
        version = mlflow_compat.server_version(client)
        if version is not None and Version(str(version)) < Version(OLDEST_SERVER):
            raise ServerTooOld(
                f"the tracking server runs MLflow {version}, older than {OLDEST_SERVER}: it cannot "
                "show our spans or link them to training runs; upgrade the server to MLflow "
                f">= {OLDEST_SERVER}"
            )
        return True  # unknown: MLflow's own log_spans says why it cannot write
    import mlflow

    return Version(mlflow.__version__) >= Version(MIXED_LOCAL)


def batches_for(spans: list, mixed: bool) -> list[list]:
    """``[spans]`` for a store taking mixed batches, else one list per trace (in order)."""
    if mixed:
        return [spans]
    groups: dict = {}
    for span in spans:
        groups.setdefault(span.trace_id, []).append(span)
    return list(groups.values())

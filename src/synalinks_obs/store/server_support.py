"""The oldest MLflow tracking server that can hold our spans, checked once per store.

An MLflow server 3.4 or 3.5 keeps spans written with ``log_spans`` in its database but
reads only trace artifacts back (its client API and UI show traces without spans) and
refuses a batch mixing traces; 3.6 to 3.9 answer 500 when a training run's link is
merged into a trace whose spans (LM token usage) gave it metadata (measured on 3.6.0 and
3.7.0). So ``check_server_version`` refuses a server older than 3.10 with one line
saying which version it runs and to upgrade it (``ServerTooOld``), from the REST store's
own cached ``/version`` lookup (the one its ``log_spans`` makes anyway); the writer and
``doctor``'s trace-write check call it. (3.10 to 3.12 hold spans and links but ignore the
trace tags we send as span attributes: trace names, ``synalinks.program`` and
``synalinks.trace_kind`` are missing there; the README supports servers >= 3.13.)
"""

from __future__ import annotations

from synalinks_obs import uris
from synalinks_obs.compat import mlflow as mlflow_compat

OLDEST_SERVER = "3.10"  # shows log_spans' spans and takes a training run's link to them


class ServerTooOld(Exception):
    """The tracking server's MLflow cannot hold (or show) spans written with log_spans."""


def check_server_version(tracking_uri: str, client) -> None:
    """Raise ``ServerTooOld`` when ``client`` (a ``TracingClient``) talks to an MLflow
    server older than ``OLDEST_SERVER``; local stores and unknown versions pass (MLflow's
    own ``log_spans`` says why it cannot write when it cannot)."""
    if not uris.is_http(tracking_uri):
        return
    from packaging.version import Version

    version = mlflow_compat.server_version(client)
    if version is not None and Version(str(version)) < Version(OLDEST_SERVER):
        raise ServerTooOld(
            f"the tracking server runs MLflow {version}, older than {OLDEST_SERVER}: it cannot "
            "show our spans or link them to training runs; upgrade the server to MLflow "
            f">= {OLDEST_SERVER}"
        )

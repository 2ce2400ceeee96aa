"""The exporter process's wire protocol: frames of a 4-byte big-endian length and a pickle.

The app sends ``("warm", tracking_uri, experiment_name)`` (open the store now, before
any span: start-up activation), ``("spans", destination, count, pickled_wires,
batch_id)``, before them ``("credentials", {name: value})`` when its
``MLFLOW_TRACKING_*`` variables or MLflow's OTLP settings changed since the last batch
(``tracking_environment``: a token or password the app rotates reaches the writes, as it
reaches MLflow's own client in the app; an OTLP endpoint set or changed is where the next
batches go, ``store.otlp``), and, at exit, ``("close", seconds)`` (how long the last writes may take);
EOF on the process's stdin means "finish and exit". The process answers on the file
descriptor given as its first argument with ``("hello", pid)`` once MLflow is imported,
``("done", exported, {reason: dropped}, held, [batch_id, ...], {reason: spooled})``
after every write (``held``: spans waiting for a store that is failing; the ids: batches
now written, dropped and counted, or spooled, which the app no longer keeps for a resend;
``spooled``: kept in the spool directory at exit), ``("experiment", key,
experiment_id)`` when it resolved one, ``("problem", text)`` when the store starts
failing, ``("rejected", text)`` when it refuses the credentials, ``("warning", text)``,
and ``("bye", ...)`` (as "done") as its last word.
"""

from __future__ import annotations

import os
import pickle
import struct

HEADER = struct.Struct(">I")
TRACKING_PREFIX = "MLFLOW_TRACKING_"
# MLflow's OTLP export settings (mlflow.tracing.utils.otlp): where spans go besides MLflow.
OTLP_PREFIXES = ("OTEL_EXPORTER_OTLP_", "MLFLOW_TRACE_ENABLE_OTLP_DUAL_EXPORT", "MLFLOW_ENABLE_OTLP_EXPORTER")
_PREFIXES = (TRACKING_PREFIX, *OTLP_PREFIXES)


def tracking_environment() -> dict:
    """The ``MLFLOW_TRACKING_*`` variables of this process (credentials, TLS, auth) and
    MLflow's OTLP settings."""
    return {k: v for k, v in os.environ.items() if k.startswith(_PREFIXES)}


def otlp_environment() -> tuple:
    """MLflow's OTLP settings in this process, comparable (``store.otlp``)."""
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(OTLP_PREFIXES)))


def apply_tracking_environment(values: dict) -> None:
    """Make this process's variables of ``tracking_environment`` exactly ``values``."""
    for name in [k for k in os.environ if k.startswith(_PREFIXES) and k not in values]:
        del os.environ[name]
    os.environ.update(values)


def read_frame(stream):
    """One pickled frame from a binary stream; None at EOF."""
    header = stream.read(HEADER.size)
    if not header or len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    data = stream.read(size)
    if data is None or len(data) < size:
        return None
    return pickle.loads(data)


def frame(message) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]

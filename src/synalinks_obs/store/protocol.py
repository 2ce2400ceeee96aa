"""The exporter process's wire protocol: frames of a 4-byte big-endian length and a pickle.

The app sends ``("spans", destination, count, pickled_wires, batch_id)`` and, at exit,
``("close", seconds)`` (how long the last writes may take); EOF on the process's stdin
means "finish and exit". The process answers on the file descriptor given as its first
argument with ``("hello", pid)`` once MLflow is imported, ``("done", exported,
{reason: dropped}, held, [batch_id, ...])`` after every write (``held``: spans waiting
for a store that is failing; the ids: batches now written or dropped and counted, which
the app no longer keeps for a resend), ``("experiment", key, experiment_id)`` when it
resolved one, ``("problem", text)`` when the store starts failing, ``("warning",
text)``, and ``("bye", ...)`` (as "done") as its last word.
"""

from __future__ import annotations

import os
import pickle
import struct

HEADER = struct.Struct(">I")


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

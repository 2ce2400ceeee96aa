"""The life of the exporter thread, one ``State`` at a time.

``IDLE`` (none yet, or it stepped aside for a fork: the next span or flush starts it
again), ``RUNNING``, ``PARKING`` (a fork is coming: it finishes what it does and exits,
so no lock of ours or MLflow's is copied mid-operation), ``STOPPING`` (exit: write what
is queued, close the sinks) and ``STOPPED``.
"""

import enum


class State(enum.Enum):
    IDLE = "idle"
    RUNNING = "running"
    PARKING = "parking"
    STOPPING = "stopping"
    STOPPED = "stopped"

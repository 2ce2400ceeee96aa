"""Ending a training run: only once its traces are written, and always (never left RUNNING).

``Monitor`` marks a run ``FINISHED`` (or ``FAILED``) after the traces of the calls made
during it are written: it first flushes the exporter (``flush_traces``, bounded by
``FLUSH_BUDGET``). When that flush fails (an error of ours: ``reporting.internal_error``,
logged once) or does not finish in time (one warning), the run stays ``RUNNING`` and is
ended as soon as a later flush succeeds (a background thread retries, and so does any
``synalinks_obs.flush()``), or at exit once the exit flush is over
(``RUNTIME.after_flush``): never reported finished before its traces. A flush that only
ran out of time is said at INFO level (a slow store, not a failure).

``terminate`` always tries: an earlier failed call to the store (the rest of the run's
logging skipped) does not skip the end, and a local store is tried again a moment later.
A server is probed first (``GET /health``, short timeout) so a store that is down costs
seconds, not MLflow's minutes of retries; only then is the run left ``RUNNING``, with one
warning saying so.
"""

from __future__ import annotations

import threading
import time

from synalinks_obs import reporting, uris
from synalinks_obs.runtime import RUNTIME
from synalinks_obs.store import health

FLUSH_BUDGET = 5.0  # seconds the end of a run waits for its traces before deferring
RETRY_AFTER = 1.0  # seconds between two flushes of the background ender
END_ATTEMPTS = 3  # a local store may be locked by a write of the exporter process for a moment
_LOCK = threading.Lock()  # RUNTIME.runs_to_end
_ENDING = threading.Lock()  # held while waiting runs are ended: a second caller waits for them
_log = reporting.logger(__name__)


class _Ender:
    thread: threading.Thread | None = None


_ENDER = _Ender()


def flush_traces(run) -> bool | None:
    """Write the traces of the calls made so far (bounded): True when all are written,
    False when not in time, None when the flush failed (reported once)."""
    exporter = RUNTIME.exporter
    if exporter is None:
        return True
    try:
        return bool(exporter.flush(min(exporter.settings.flush_timeout, FLUSH_BUDGET)))
    except Exception as exc:
        reporting.internal_error(f"writing the traces of training run {run.run_id} before ending it", exc)
        return None


def terminate(run, status: str, warn) -> bool:
    """Mark ``run`` ``status`` in its store; False (after one warning) if it cannot be.
    A local store is tried again a moment later (the exporter process may hold its lock);
    a server that does not pass the probe is not (MLflow would retry for minutes)."""
    error = None
    for attempt in range(1, END_ATTEMPTS + 1):
        try:
            if uris.is_http(run.tracking_uri):
                health.probe(run.tracking_uri)
            run.client.set_terminated(run.run_id, status)
            return True
        except health.StoreUnavailable as exc:
            error = exc
            break
        except Exception as exc:
            error = exc
            if attempt < END_ATTEMPTS:
                time.sleep(0.5 * attempt)
    warn(
        "end",
        f"synalinks-obs: cannot mark run {run.run_id} {status} in "
        f"{uris.display(run.tracking_uri)} ({type(error).__name__}: "
        f"{reporting.first_line(error)}); it stays RUNNING there",
    )
    return False


def end_when_written(monitor, run, status: str, warned: bool) -> None:
    """End ``run`` once its traces are written (a background thread), at exit at the
    latest. ``warned``: the reason was already reported (else one INFO line says why)."""
    if not warned:
        _log.info(
            "synalinks-obs: the traces of run %s are not all written yet; the run is marked %s "
            "once they are (at exit at the latest)", run.run_id, status,
        )
    with _LOCK:
        RUNTIME.runs_to_end.append((monitor, run, status))
        if end_pending not in RUNTIME.after_flush:
            RUNTIME.after_flush.append(end_pending)
        if _ENDER.thread is None or not _ENDER.thread.is_alive():
            _ENDER.thread = threading.Thread(target=_end_later, name="synalinks-obs-run-end", daemon=True)
            _ENDER.thread.start()


def end_pending() -> None:
    """End every run still waiting (after a successful flush, or the exit flush); a
    caller returns once the ends in progress elsewhere are done too."""
    with _ENDING:
        with _LOCK:
            pending, RUNTIME.runs_to_end = RUNTIME.runs_to_end, []
        for monitor, run, status in pending:
            terminate(run, status, monitor._warn)


def _end_later() -> None:
    while True:
        with _LOCK:
            if not RUNTIME.runs_to_end:
                return
        exporter = RUNTIME.exporter
        try:
            written = exporter is None or exporter.flush()
        except Exception as exc:  # reported once already, by the Monitor's own flush
            _log.debug("synalinks-obs: the flush before ending a run failed again: %r", exc)
            written = False
        if written:
            end_pending()
            return
        time.sleep(RETRY_AFTER)

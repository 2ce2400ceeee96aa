"""Threads and thread-pool work that a training run's own work starts join that run.

A ``fit()`` sends its traces to its run through a ContextVar (``context``'s
``DESTINATION_OVERRIDE``), which the tasks it starts inherit but threads do not. Two
patches carry the run over, and nothing else does:

- ``threading.Thread.start`` called by the run's work (a callback starting a thread)
  records the new thread in ``RUNTIME.run_threads``: its calls belong to the run while the
  run is active;
- ``concurrent.futures.ThreadPoolExecutor.submit`` called by the run's work (Synalinks'
  callback dispatcher, ``loop.run_in_executor``) runs that work item under the run; the
  pool's worker threads themselves are never recorded, so a pool shared with the rest of
  the app serves every other item for no run.

Code on any other thread (a web server answering requests while a job trains) works for
no run: its calls stay on the tracing side. Both patches go through the patch registry
(``uninstrument()`` restores them) and never change what the patched call does: the
thread starts, the item runs, exactly once, with its own arguments and exceptions.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
import threading

from synalinks_obs import reporting
from synalinks_obs.runtime import RUNTIME
from synalinks_obs.tracing import context

GROUP = "training"
# True while ThreadPoolExecutor.submit runs: a thread it starts is a pool worker.
_SUBMITTING: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "synalinks_obs_submitting", default=False
)


def _run_of_caller():
    """The active run the calling code works for, or None (never raises)."""
    if not RUNTIME.active_runs:
        return None
    try:
        return context.run_destination()
    except Exception as exc:
        reporting.internal_error("finding the training run of a new thread", exc)
        return None


def _wrap_start(original):
    @functools.wraps(original)
    def start(self, *args, **kwargs):
        if not _SUBMITTING.get():
            destination = _run_of_caller()
            if destination is not None:
                try:
                    RUNTIME.run_threads[self] = destination
                except Exception as exc:  # an unhashable Thread subclass: not followed
                    reporting.internal_error("following a thread of a training run", exc)
        return original(self, *args, **kwargs)

    return start


def _in_run(fn, destination):
    """``fn`` run under ``destination`` (the run's ContextVar set, then reset)."""

    def work(*args, **kwargs):
        token = context.DESTINATION_OVERRIDE.set(destination)
        try:
            return fn(*args, **kwargs)
        finally:
            context.DESTINATION_OVERRIDE.reset(token)

    return work


def _wrap_submit(original):
    @functools.wraps(original)
    def submit(self, fn, /, *args, **kwargs):
        destination = _run_of_caller()
        if destination is not None:
            fn = _in_run(fn, destination)
        token = _SUBMITTING.set(True)
        try:
            return original(self, fn, *args, **kwargs)
        finally:
            _SUBMITTING.reset(token)

    return submit


def install(registry) -> None:
    """Patch ``Thread.start`` and ``ThreadPoolExecutor.submit`` (idempotent)."""
    with RUNTIME.lock:
        if registry.is_patched(threading.Thread, "start"):
            return
        registry.apply(threading.Thread, "start", _wrap_start(threading.Thread.start), GROUP)
        pool = concurrent.futures.ThreadPoolExecutor
        registry.apply(pool, "submit", _wrap_submit(pool.submit), GROUP)

"""The process-wide exporter as a service: made once, flushed at exit, safe across fork.

- ``exporter_for(settings)``: the one ``Exporter`` of the process (``RUNTIME.exporter``),
  created or reconfigured, with the exit flush installed.
- Exit: the main flush runs *before* Python joins non-daemon threads
  (``compat.stdlib.register_before_thread_join``: the exporter thread is still alive and
  no thread could be started later); a last pass at ``atexit`` writes spans finished by
  threads that were still running (``concurrent.futures`` workers...), within what is
  left of ``flush_timeout``, then prints the one exit line; then ``RUNTIME.after_flush``
  (training runs whose end waited for their traces), also run after a ``flush()`` that
  wrote everything.
- Fork (as dd-trace-py's ``forksafe``): before a fork the exporter thread is asked to
  step aside and waited for at most ``FORK_PARK_TIMEOUT`` (a fork never waits long for
  us; if the thread is still inside an MLflow call, it goes on in the parent and the
  child leaves MLflow to its own exporter process); the child forgets the parent's
  queue, thread, process and database connections; ids are reseeded
  (``tracing.records``). Each hook runs under a guard: a fork never fails because of us.
"""

from __future__ import annotations

import os
import sys

from synalinks_obs import reporting
from synalinks_obs.compat import mlflow as mlflow_compat
from synalinks_obs.compat import stdlib as stdlib_compat
from synalinks_obs.export.exporter import Exporter
from synalinks_obs.runtime import RUNTIME

FORK_PARK_TIMEOUT = 0.5  # seconds a fork waits for the exporter thread to step aside


def exporter_for(settings) -> Exporter:
    """The process-wide exporter, configured with the settings now in force."""
    exporter = RUNTIME.exporter
    if exporter is None:
        exporter = RUNTIME.exporter = Exporter(settings)
    else:
        exporter.configure(settings)
    install_exit_flush()
    return exporter


def flush(timeout: float | None = None) -> bool:
    """Write every finished span now (ours and MLflow's own); True when none is left."""
    exporter = RUNTIME.exporter
    done = True if exporter is None else exporter.flush(timeout)
    if RUNTIME.registered_traces:  # MLflow spans were opened in our traces: write them too
        from synalinks_obs.tracing import mlflow_view

        mlflow_view.release_ended()
    if "mlflow" in sys.modules:
        try:
            budget = 10.0 if timeout is None else timeout
            mlflow_compat.flush_mlflow_span_processors(budget)
            mlflow_compat.wait_for_mlflow_async_logging(budget)  # and what its exporter queued
        except Exception as exc:  # MLflow's spans still go out on its own schedule
            reporting.internal_error("flushing MLflow's span processors", exc)
    if done:
        _after_flush()
    return done


def _after_flush() -> None:
    """What waited for the spans to be written (``RUNTIME.after_flush``), e.g. the end of
    training runs."""
    for callback in list(RUNTIME.after_flush):
        try:
            callback()
        except Exception as exc:
            reporting.internal_error("finishing what waited for the flush", exc)


def install_exit_flush() -> None:
    if RUNTIME.exit_flush_installed:
        return
    RUNTIME.exit_flush_installed = True
    import atexit

    if stdlib_compat.register_before_thread_join(_flush_at_exit):
        atexit.register(_write_late_spans)
    else:
        atexit.register(_flush_and_report)


def _flush_at_exit() -> None:
    exporter = RUNTIME.exporter
    if exporter is not None:
        try:
            exporter.shutdown(report=False)
        except Exception as exc:  # last-chance guard: never fail the interpreter's exit
            reporting.logger(__name__).warning("synalinks-obs: exit flush failed: %r", exc)


def _write_late_spans() -> None:
    exporter = RUNTIME.exporter
    if exporter is not None:
        try:
            exporter.write_late_spans()
        except Exception as exc:
            reporting.logger(__name__).warning("synalinks-obs: exit flush failed: %r", exc)
    try:
        _after_flush()  # e.g. training runs that waited for their traces
    except Exception as exc:  # strict mode raises: never fail the interpreter's exit
        reporting.logger(__name__).warning("synalinks-obs: after the exit flush: %r", exc)


def _flush_and_report() -> None:
    _flush_at_exit()
    _write_late_spans()


def _before_fork() -> None:
    exporter = RUNTIME.exporter
    if exporter is not None:
        try:
            exporter.parked = exporter.before_fork(FORK_PARK_TIMEOUT)
        except Exception:
            exporter.parked = False


def _after_fork_in_parent() -> None:
    exporter = RUNTIME.exporter
    if exporter is not None:
        try:
            exporter.after_fork_in_parent()
        except Exception:
            pass


def _after_fork_in_child() -> None:
    exporter = RUNTIME.exporter
    if exporter is None:
        return
    try:
        exporter.after_fork_in_child(getattr(exporter, "parked", True))
        mlflow_compat.forget_inherited_connections()
    except Exception:
        pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )

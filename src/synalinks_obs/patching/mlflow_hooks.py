"""The MLflow internals synalinks-obs replaces, each through the patch registry.

- ``InMemoryTraceManager.get_mlflow_trace_id_from_otel_id``: MLflow's span processor
  accepts a span started inside one of our calls (a user's ``mlflow.start_span`` /
  ``@mlflow.trace``) only if it finds the span's trace in its in-memory manager. Instead
  of registering every trace up front (~80 us each), the lookup registers ours
  (``RUNTIME.live_traces``) the first time it misses.
- ``TracingClient.log_assessment`` / ``TracingClient.get_trace``: ``mlflow.log_feedback``,
  ``log_expectation`` and ``mlflow.get_trace`` on a trace of ours that has just ended
  (``mlflow.get_last_active_trace_id()``) read or write it in the store: they first wait
  (at most ``flush_timeout``) until our queued spans are written, so the trace is there.
  Not on a thread of ours that waits for the trace itself (the feedback writer): forcing
  a flush there would only cut the exporter's batches short.
- ``_IsolatedRandomIdGenerator.__del__``: we turn MLflow's isolated id generator on, and
  its ``__del__`` fails during interpreter teardown ("Exception ignored in ..." on the
  app's stderr): guarded.
- ``mlflow.store.db.utils._initialize_tables`` / ``_verify_schema``: a new database's
  schema set up one process at a time (``store.schema_lock``, which applies it when that
  module is imported, in the exporter process too).

All are reverted by ``uninstrument()``.
"""

from __future__ import annotations

import threading

from synalinks_obs import reporting
from synalinks_obs.compat import mlflow as mlflow_compat
from synalinks_obs.runtime import RUNTIME

GROUP = "mlflow"


def install(registry) -> None:
    _lazy_trace_registration(registry)
    _written_before_read(registry)
    _quiet_id_generator_teardown(registry)
    from synalinks_obs.store.schema_lock import guard_schema_setup

    guard_schema_setup()


def _lazy_trace_registration(registry) -> None:
    manager_class = mlflow_compat.trace_manager_class()
    name = mlflow_compat.TRACE_MANAGER_LOOKUP
    if manager_class is None or registry.is_patched(manager_class, name):
        return
    original = getattr(manager_class, name)

    def get_mlflow_trace_id_from_otel_id(self, otel_trace_id):
        found = original(self, otel_trace_id)
        if found is None:
            live = RUNTIME.live_traces.get(otel_trace_id)
            if live is not None and not live[0].registered:
                trace, tracer = live
                found = tracer.register_with_mlflow(trace, self)
        return found

    get_mlflow_trace_id_from_otel_id.__wrapped__ = original
    registry.apply(manager_class, name, get_mlflow_trace_id_from_otel_id, GROUP)


def _written_before_read(registry) -> None:
    try:
        client_class = mlflow_compat.tracing_client_class()
    except Exception:  # no tracing client: nothing reads traces this way
        return
    for name in ("log_assessment", "get_trace"):
        original = getattr(client_class, name, None)
        if original is None or registry.is_patched(client_class, name):
            continue
        registry.apply(client_class, name, _after_our_spans(original), GROUP)


def _after_our_spans(original):
    """``original(client, trace_id, ...)``, after our spans of ``trace_id`` are written if it
    is a trace of ours that ended moments ago."""

    def wrapper(self, trace_id, *args, **kwargs):
        if (
            threading.get_ident() not in RUNTIME.self_waiting_threads
            and RUNTIME.recent_roots.pop(trace_id, None) is not None
        ):
            exporter = RUNTIME.exporter
            if exporter is not None:
                try:
                    exporter.flush()
                except Exception as exc:
                    reporting.internal_error("writing a trace before MLflow reads it", exc)
        return original(self, trace_id, *args, **kwargs)

    wrapper.__name__ = original.__name__
    wrapper.__qualname__ = original.__qualname__
    wrapper.__doc__ = original.__doc__
    wrapper.__wrapped__ = original
    return wrapper


def _quiet_id_generator_teardown(registry) -> None:
    generator = mlflow_compat.isolated_id_generator_class()
    original = getattr(generator, "__del__", None)
    if original is None or registry.is_patched(generator, "__del__"):
        return

    def __del__(self):
        try:
            original(self)
        except Exception:
            pass

    registry.apply(generator, "__del__", __del__, GROUP)

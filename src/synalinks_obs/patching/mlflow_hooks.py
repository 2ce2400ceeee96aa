"""The MLflow internals synalinks-obs replaces, each through the patch registry.

- ``InMemoryTraceManager.get_mlflow_trace_id_from_otel_id``: MLflow's span processor
  accepts a span started inside one of our calls (a user's ``mlflow.start_span`` /
  ``@mlflow.trace``) only if it finds the span's trace in its in-memory manager. Instead
  of registering every trace up front (~80 us each), the lookup registers ours
  (``RUNTIME.live_traces``) the first time it misses.
- ``_IsolatedRandomIdGenerator.__del__``: we turn MLflow's isolated id generator on, and
  its ``__del__`` fails during interpreter teardown ("Exception ignored in ..." on the
  app's stderr): guarded.
- ``mlflow.store.db.utils._initialize_tables`` / ``_verify_schema``: a new database's
  schema set up one process at a time (``store.schema_lock``, which applies it when that
  module is imported, in the exporter process too).

All are reverted by ``uninstrument()``.
"""

from __future__ import annotations

from synalinks_obs.compat import mlflow as mlflow_compat
from synalinks_obs.runtime import RUNTIME

GROUP = "mlflow"


def install(registry) -> None:
    _lazy_trace_registration(registry)
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

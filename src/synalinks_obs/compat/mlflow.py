"""MLflow's internal names synalinks-obs reads or replaces, each with a guarded fallback.

Public MLflow API (``mlflow.MlflowClient``, ``mlflow.entities``...) is used directly
elsewhere; what is *not* public lives here:

- the tracing runtime: the OpenTelemetry context MLflow keeps its current span in
  (``mlflow.tracing.provider``), its in-memory trace manager (and the spans of a trace it
  holds), its batch span processors, the isolated id generator's ``__del__``, the "last
  active trace" it remembers, the tags/metadata ``mlflow.tracing.context`` configures,
  and an OpenTelemetry SDK span built with ids we choose (MLflow's view of our calls);
- its OTLP export settings (``mlflow.tracing.utils.otlp``): whether spans go to an
  OpenTelemetry collector, and MLflow's exporter for it;
- the store: ``TracingClient`` (store-level ``log_spans`` / ``start_trace``), the
  database schema set-up functions of ``mlflow.store.db.utils``, the REST store's cached
  server version, and the locks/engines a forked child must not share;
- MLflow's own credential and TLS resolution for a tracking URI
  (``mlflow.utils.credentials.get_default_host_creds``) and its REST helper
  (``mlflow.utils.rest_utils.http_request``), so every request we send goes the way
  MLflow's client goes.

A missing name is reported once through ``compat.note_fallback`` with what is lost.
"""

from __future__ import annotations

import contextvars
import sys
import threading
import time

from synalinks_obs.compat import note_fallback

TRACE_MANAGER_LOOKUP = "get_mlflow_trace_id_from_otel_id"
# The ContextVar of OpenTelemetry's ContextVarsRuntimeContext (MLflow's runtime context).
RUNTIME_CONTEXT_VAR = "_current_context"
DB_UTILS_MODULE = "mlflow.store.db.utils"
FLUENT_MODULE = "mlflow.tracing.fluent"
TRACE_CONTEXT_MODULE = "mlflow.tracing.context"
OTLP_MODULE = "mlflow.tracing.utils.otlp"
TRACE_MANAGER_MODULE = "mlflow.tracing.trace_manager"
# MLflow's standard trace metadata keys for a conversation and its user (what the UI's
# session view groups by), as mlflow.tracing.constant.TraceMetadataKey names them.
TRACE_SESSION_KEY = "mlflow.trace.session"
TRACE_USER_KEY = "mlflow.trace.user"


# -- the tracing runtime -------------------------------------------------------------------

def runtime_context():
    """``(get_current, attach, detach)`` of the OpenTelemetry context MLflow reads its
    current span from: its own context (the default) or OpenTelemetry's global one."""
    try:
        from mlflow.tracing import provider

        if provider.MLFLOW_USE_DEFAULT_TRACER_PROVIDER.get():
            runtime = provider.mlflow_runtime_context
            # the class's get_current: what is attached, even once ours shows calls in it
            get_current = _context_var_get(runtime) or type(runtime).get_current.__get__(runtime)
            return get_current, runtime.attach, runtime.detach
    except Exception as exc:
        note_fallback(
            "mlflow.tracing.provider.mlflow_runtime_context",
            "OpenTelemetry's global context is used: MLflow spans may not nest with ours",
            exc,
        )
    from opentelemetry import context as otel_context

    return otel_context.get_current, otel_context.attach, otel_context.detach


def _context_var_get(runtime):
    """The ``get`` of the ContextVar an OpenTelemetry ``ContextVarsRuntimeContext`` keeps
    its context in (what its ``get_current`` returns, read on every traced call without a
    Python frame), or None (its ``get_current`` is called then)."""
    from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

    var = getattr(runtime, RUNTIME_CONTEXT_VAR, None)
    if (
        type(runtime).get_current is ContextVarsRuntimeContext.get_current
        and isinstance(var, contextvars.ContextVar)
    ):
        return var.get
    note_fallback(
        f"ContextVarsRuntimeContext.{RUNTIME_CONTEXT_VAR}",
        "each traced call reads MLflow's context through get_current (a little slower)",
    )
    return None


def show_in_mlflow_context(registry, get_current, shown) -> bool:
    """Make MLflow's own runtime context answer ``shown(get_current())`` when read (its
    ``get_current``, patched on the instance), so a call of ours is MLflow's current span
    without being attached to it; False (each call then attaches its span) when MLflow
    uses OpenTelemetry's global context or has no context object of its own."""
    try:
        from mlflow.tracing import provider

        if not provider.MLFLOW_USE_DEFAULT_TRACER_PROVIDER.get():
            return False
        runtime = provider.mlflow_runtime_context
    except Exception:  # runtime_context() noted the fallback
        return False
    if not callable(getattr(type(runtime), "get_current", None)):
        return False
    if registry.is_patched(runtime, "get_current"):
        return True

    def get_current_shown():
        return shown(get_current())

    registry.apply(runtime, "get_current", get_current_shown, "mlflow")
    return True


def trace_manager_class():
    """MLflow's ``InMemoryTraceManager`` (None if missing)."""
    try:
        from mlflow.tracing.trace_manager import InMemoryTraceManager
    except Exception as exc:
        note_fallback(
            "mlflow.tracing.trace_manager.InMemoryTraceManager",
            "MLflow spans opened inside module calls are not joined to our traces", exc,
        )
        return None
    if not hasattr(InMemoryTraceManager, TRACE_MANAGER_LOOKUP):
        note_fallback(
            f"InMemoryTraceManager.{TRACE_MANAGER_LOOKUP}",
            "MLflow spans opened inside module calls are not joined to our traces",
        )
        return None
    return InMemoryTraceManager


_FLUSH_LOCK = threading.Lock()  # one MLflow flush of ours at a time (see below)


def flush_mlflow_span_processors(timeout_seconds: float) -> None:
    """Write the spans MLflow's own batch processors hold (best effort). One call at a
    time: before MLflow 3.17 its asynchronous queue's ``flush`` stops and restarts the
    queue's thread unguarded, and two at once (``synalinks_obs.flush()`` on the app's
    thread, the exporter thread writing MLflow's spans of a trace) could leave one
    joining a restarted thread forever."""
    try:
        from mlflow.tracing.processor.base_mlflow import flush_all_batch_processors
    except Exception as exc:
        note_fallback(
            "mlflow.tracing.processor.base_mlflow.flush_all_batch_processors",
            "spans opened with MLflow's own API are written on MLflow's schedule", exc,
        )
        return
    if not _FLUSH_LOCK.acquire(timeout=timeout_seconds):
        return  # another thread's flush still runs: it writes these spans too
    try:
        flush_all_batch_processors(timeout_millis=timeout_seconds * 1000)
    finally:
        _FLUSH_LOCK.release()


def wait_for_mlflow_async_logging(timeout_seconds: float) -> None:
    """Wait (at most ``timeout_seconds``) until MLflow's asynchronous trace-logging queue
    has written what it holds, without stopping it: MLflow's own
    ``flush_trace_async_logging`` stops the queue meanwhile, and a span another thread
    hands it then is dropped."""
    try:
        from mlflow.tracing.provider import _get_trace_exporter

        exporter = _get_trace_exporter()
    except Exception as exc:
        note_fallback(
            "mlflow.tracing.provider._get_trace_exporter",
            "MLflow's spans inside module calls may be written after the trace's root "
            "(the trace's token and cost totals then leave them out)", exc,
        )
        return
    pending = getattr(getattr(exporter, "_async_queue", None), "_queue", None)
    if pending is None:  # MLflow writes synchronously: nothing is queued
        return
    deadline = time.monotonic() + timeout_seconds
    while pending.unfinished_tasks and time.monotonic() < deadline:
        time.sleep(0.01)


def isolated_id_generator_class():
    """MLflow's ``_IsolatedRandomIdGenerator`` (None if missing: nothing to guard)."""
    try:
        from mlflow.tracing import provider
    except Exception:
        return None
    return getattr(provider, "_IsolatedRandomIdGenerator", None)


class _Detached:
    """A tracer of our own (no processor: ending its spans exports nothing) whose id
    generator hands out the ids we give it: spans with our calls' ids."""

    def __init__(self):
        self.lock = threading.Lock()
        self.tracer = None
        self.ids = None

    def start(self, name: str, otel_trace_id: int, span_id: int, parent_span_id, start_ns: int):
        from opentelemetry.context import Context
        from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

        with self.lock:
            if self.tracer is None:
                self.tracer, self.ids = _detached_tracer()
            self.ids.ids = (otel_trace_id, span_id)
            context = Context()
            if parent_span_id:
                parent = SpanContext(otel_trace_id, parent_span_id, False, TraceFlags(TraceFlags.SAMPLED))
                context = set_span_in_context(NonRecordingSpan(parent), context)
            return self.tracer.start_span(name, context=context, start_time=start_ns)


def _detached_tracer():
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.id_generator import IdGenerator

    class GivenIds(IdGenerator):
        ids = (0, 0)

        def generate_trace_id(self) -> int:
            return self.ids[0]

        def generate_span_id(self) -> int:
            return self.ids[1]

    ids = GivenIds()
    provider = TracerProvider(resource=Resource.get_empty(), id_generator=ids, shutdown_on_exit=False)
    return provider.get_tracer("synalinks_obs"), ids


_DETACHED = _Detached()


def detached_otel_span(name: str, otel_trace_id: int, span_id: int, parent_span_id, start_ns: int):
    """A started OpenTelemetry SDK span with our ids, attached to no processor (ending it
    exports nothing): what MLflow's ``LiveSpan`` of one of our calls wraps. None if the
    SDK cannot make one."""
    try:
        return _DETACHED.start(name, otel_trace_id, span_id, parent_span_id, start_ns)
    except Exception as exc:
        note_fallback(
            "opentelemetry.sdk.trace.TracerProvider(id_generator=...)",
            "mlflow.get_current_active_span() and update_current_trace() see no span inside module calls",
            exc,
        )
        return None


def trace_spans(manager, trace_id: str) -> list:
    """The ``LiveSpan``s MLflow's trace manager holds for a trace (empty if none)."""
    with manager.get_trace(trace_id) as held:
        return held_spans(held)


def otel_span_of(live_span):
    """The OpenTelemetry span inside MLflow's ``LiveSpan`` (``LiveSpan._span``), or None."""
    otel_span = getattr(live_span, "_span", None)
    if otel_span is None:
        note_fallback(
            "mlflow.entities.LiveSpan._span",
            "mlflow.get_current_active_span() and update_current_trace() see no span inside module calls",
        )
    return otel_span


def held_spans(held) -> list:
    """The ``LiveSpan``s of a trace MLflow's trace manager holds (``_Trace.span_dict``)."""
    spans = getattr(held, "span_dict", None) if held is not None else None
    if spans is None and held is not None:
        note_fallback(
            "mlflow.tracing.trace_manager._Trace.span_dict",
            "spans MLflow records inside module calls may be counted twice in a trace's roll-up",
        )
    return list(spans.values()) if spans else []


def register_live_span(manager, trace_id: str, live_span) -> bool:
    """Put one of our ``LiveSpan``s into MLflow's trace manager unless it is there
    (``get_span_from_id``/``register_span``); False when the manager has neither."""
    find = getattr(manager, "get_span_from_id", None)
    register = getattr(manager, "register_span", None)
    if find is None or register is None:
        note_fallback(
            f"{TRACE_MANAGER_MODULE}.InMemoryTraceManager.register_span",
            "MLflow's current-span APIs and autologgers do not see module calls as parents",
        )
        return False
    if find(trace_id, live_span.span_id) is None:
        register(live_span)
    return True


def drop_trace(manager, otel_trace_id: int) -> None:
    """Take a trace out of MLflow's trace manager (``pop_trace``; best effort)."""
    pop = getattr(manager, "pop_trace", None)
    if pop is None:
        note_fallback(
            f"{TRACE_MANAGER_MODULE}.InMemoryTraceManager.pop_trace",
            "traces of module calls stay in MLflow's in-memory registry until it evicts them",
        )
        return
    pop(otel_trace_id)


def forget_span(manager, trace_id: str, span_id: str) -> None:
    """Take one span out of a trace MLflow's trace manager holds (best effort)."""
    with manager.get_trace(trace_id) as held:
        spans = getattr(held, "span_dict", None) if held is not None else None
        if spans is not None:
            spans.pop(span_id, None)


def set_last_active_trace_id(trace_id: str) -> None:
    """What ``mlflow.get_last_active_trace_id()`` returns next (MLflow sets it when one of
    its own traces ends)."""
    fluent = sys.modules.get(FLUENT_MODULE)
    setter = getattr(fluent, "_set_last_active_trace_id", None) if fluent is not None else None
    if setter is None:
        if fluent is not None or "mlflow" in sys.modules:
            note_fallback(
                f"{FLUENT_MODULE}._set_last_active_trace_id",
                "mlflow.get_last_active_trace_id() does not return the traces of module calls",
            )
        return
    setter(trace_id)


def configured_trace_context():
    """A function returning what ``mlflow.tracing.context(...)`` configures for the current
    context, ``(tags, metadata, enabled)`` (None outside one); None if this MLflow has no
    such scope (nothing to read then)."""
    try:
        import importlib

        var = importlib.import_module(TRACE_CONTEXT_MODULE)._USER_TRACE_CONTEXT
    except Exception as exc:
        note_fallback(
            f"{TRACE_CONTEXT_MODULE}._USER_TRACE_CONTEXT",
            "tags and metadata of mlflow.tracing.context(...) are not put on module-call traces",
            exc,
        )
        return None

    def read():
        found = var.get()
        if found is None:
            return None
        return found.tags or None, found.metadata or None, found.enabled

    return read


def mlflow_trace_context():
    """MLflow's own ``mlflow.tracing.context`` scope (a context manager factory), or None
    when this MLflow has none (older than 3.6)."""
    try:
        import mlflow.tracing

        return getattr(mlflow.tracing, "context", None)
    except Exception:
        return None


def otlp_exporter():
    """``(span exporter, dual)`` when MLflow's OTLP settings send traces to an
    OpenTelemetry collector (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or
    ``OTEL_EXPORTER_OTLP_ENDPOINT``, ``MLFLOW_ENABLE_OTLP_EXPORTER``), built by MLflow
    (protocol ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``); ``dual`` is
    ``MLFLOW_TRACE_ENABLE_OTLP_DUAL_EXPORT`` (write to MLflow as well). ``(None, True)``
    when no collector is configured."""
    try:
        from mlflow.environment_variables import MLFLOW_TRACE_ENABLE_OTLP_DUAL_EXPORT
        from mlflow.tracing.utils import otlp
    except Exception as exc:
        note_fallback(OTLP_MODULE, "spans are not sent to an OpenTelemetry collector", exc)
        return None, True
    if not otlp.should_use_otlp_exporter():
        return None, True
    return otlp.get_otlp_exporter(), bool(MLFLOW_TRACE_ENABLE_OTLP_DUAL_EXPORT.get())


def otlp_only() -> bool:
    """MLflow's settings send traces to an OpenTelemetry collector instead of MLflow (no
    dual export): no experiment is needed for them."""
    try:
        from mlflow.environment_variables import MLFLOW_TRACE_ENABLE_OTLP_DUAL_EXPORT
        from mlflow.tracing.utils import otlp

        return otlp.should_use_otlp_exporter() and not MLFLOW_TRACE_ENABLE_OTLP_DUAL_EXPORT.get()
    except Exception:
        return False


def tracing_client_class():
    """MLflow's ``TracingClient`` (what ``mlflow.log_feedback`` and ``mlflow.get_trace`` use)."""
    from mlflow.tracing.client import TracingClient

    return TracingClient


# -- the store ----------------------------------------------------------------------------

def tracing_client(tracking_uri):
    """MLflow's ``TracingClient`` for a tracking URI (store-level ``log_spans``)."""
    from mlflow.tracing.client import TracingClient

    return TracingClient(tracking_uri)


def db_utils_schema_functions(db_utils) -> tuple | None:
    """``(_initialize_tables, _verify_schema, _all_tables_exist)`` of MLflow's db utils."""
    try:
        return db_utils._initialize_tables, db_utils._verify_schema, db_utils._all_tables_exist
    except AttributeError as exc:
        note_fallback(
            f"{DB_UTILS_MODULE}._initialize_tables",
            "a new database store's schema is not set up one process at a time", exc,
        )
        return None


def clear_server_version_cache() -> None:
    """MLflow caches a failed ``/version`` lookup as None (lru_cache): a store that was
    down once would be 'not supporting log_spans' for ever."""
    try:
        from mlflow.store.tracking.rest_store import RestStore

        RestStore._get_server_version.cache_clear()
    except Exception as exc:
        note_fallback(
            "RestStore._get_server_version.cache_clear",
            "a server that was down may be taken for an old one until the app restarts", exc,
        )


def server_version(client):
    """The MLflow version (``packaging`` ``Version``) of the server behind a
    ``TracingClient`` on an http(s) URI, from the REST store's own cached ``/version``
    lookup (the one its ``log_spans`` makes anyway), or None when unknown."""
    try:
        store = client.store
        return store._get_server_version(store.get_host_creds())
    except AttributeError as exc:
        note_fallback(
            "RestStore._get_server_version",
            "the server's version is unknown: a server older than MLflow 3.10 (which "
            "cannot show the spans written) is not named as the cause", exc,
        )
        return None


def forget_inherited_connections() -> None:
    """In a forked child: new locks for MLflow's store registry and SQLAlchemy engine map,
    and the inherited database connections dropped without closing the parent's."""
    registry = sys.modules.get("mlflow.tracking._tracking_service.registry")
    if registry is not None and hasattr(registry, "_building_store_lock"):
        registry._building_store_lock = threading.Lock()
    store_module = sys.modules.get("mlflow.store.tracking.sqlalchemy_store")
    store = getattr(store_module, "SqlAlchemyStore", None)
    if store is None:
        return
    try:
        store._engine_map_lock = threading.Lock()
        for engine in list(getattr(store, "_engine_map", {}).values()):
            engine.dispose(close=False)
    except Exception as exc:
        note_fallback(
            "SqlAlchemyStore._engine_map",
            "a forked worker may reuse its parent's database connections", exc,
        )


# -- requests the way MLflow's client sends them -----------------------------------------

def host_creds(tracking_uri):
    """MLflow's ``MlflowHostCreds`` for a server URI: its credentials (username/password,
    token, client certificate) and TLS settings, as MLflow's client resolves them."""
    from mlflow.utils.credentials import get_default_host_creds

    return get_default_host_creds(tracking_uri)


def http_get_function():
    """``http_get`` once MLflow's REST helper is importable (raises ImportError if not)."""
    from mlflow.utils.credentials import get_default_host_creds  # noqa: F401
    from mlflow.utils.rest_utils import http_request  # noqa: F401

    return http_get


def http_get(tracking_uri, endpoint: str, timeout: float):
    """``GET endpoint`` on a tracking server through MLflow's own REST helper (its session,
    credentials, TLS and request-header plugins), without retries; the response."""
    from mlflow.utils.rest_utils import http_request

    return http_request(
        host_creds(tracking_uri), endpoint, "GET", max_retries=0, backoff_factor=0,
        timeout=timeout, raise_on_status=False,
    )


# -- the prompt registry ------------------------------------------------------------------

def link_prompt_to_experiment(client, prompt_version, experiment_id: str) -> None:
    """List a prompt under an experiment (MLflow's ``MlflowClient._link_prompt_to_experiment``,
    which ``register_prompt`` only does for the fluent API's current experiment)."""
    link = getattr(client, "_link_prompt_to_experiment", None)
    if link is None:
        note_fallback(
            "MlflowClient._link_prompt_to_experiment",
            "learned prompts are not listed in the training run's experiment",
        )
        return
    link(prompt_version, experiment_id)

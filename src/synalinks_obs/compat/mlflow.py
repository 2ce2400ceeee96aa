"""MLflow's internal names synalinks-obs reads or replaces, each with a guarded fallback.

Public MLflow API (``mlflow.MlflowClient``, ``mlflow.entities``...) is used directly
elsewhere; what is *not* public lives here:

- the tracing runtime: the OpenTelemetry context MLflow keeps its current span in
  (``mlflow.tracing.provider``), its in-memory trace manager, its batch span processors,
  the isolated id generator's ``__del__``;
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

import sys
import threading

from synalinks_obs.compat import note_fallback

TRACE_MANAGER_LOOKUP = "get_mlflow_trace_id_from_otel_id"
DB_UTILS_MODULE = "mlflow.store.db.utils"


# -- the tracing runtime -------------------------------------------------------------------

def runtime_context():
    """``(get_current, attach, detach)`` of the OpenTelemetry context MLflow reads its
    current span from: its own context (the default) or OpenTelemetry's global one."""
    try:
        from mlflow.tracing import provider

        if provider.MLFLOW_USE_DEFAULT_TRACER_PROVIDER.get():
            runtime = provider.mlflow_runtime_context
            return runtime.get_current, runtime.attach, runtime.detach
    except Exception as exc:
        note_fallback(
            "mlflow.tracing.provider.mlflow_runtime_context",
            "OpenTelemetry's global context is used: MLflow spans may not nest with ours",
            exc,
        )
    from opentelemetry import context as otel_context

    return otel_context.get_current, otel_context.attach, otel_context.detach


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


def flush_mlflow_span_processors(timeout_seconds: float) -> None:
    """Write the spans MLflow's own batch processors hold (best effort)."""
    try:
        from mlflow.tracing.processor.base_mlflow import flush_all_batch_processors
    except Exception as exc:
        note_fallback(
            "mlflow.tracing.processor.base_mlflow.flush_all_batch_processors",
            "spans opened with MLflow's own API are written on MLflow's schedule", exc,
        )
        return
    flush_all_batch_processors(timeout_millis=timeout_seconds * 1000)


def isolated_id_generator_class():
    """MLflow's ``_IsolatedRandomIdGenerator`` (None if missing: nothing to guard)."""
    try:
        from mlflow.tracing import provider
    except Exception:
        return None
    return getattr(provider, "_IsolatedRandomIdGenerator", None)


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

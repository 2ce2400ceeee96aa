"""The private names issue 15 touches (MLflow's trace context, last active trace, OTLP
settings module; the OpenTelemetry SDK's id generator; Synalinks' stream wrapper), broken
on purpose: the app still runs and is traced, one warning names what is missing and what
that costs, and ``doctor``'s compatibility check lists it."""

from __future__ import annotations

import asyncio
import logging

import pytest
from traces import load_traces


@pytest.fixture(autouse=True)
def fresh_compat(monkeypatch):
    from synalinks_obs import compat
    from synalinks_obs.tracing import capture, context, streams

    monkeypatch.setattr(compat, "_FALLBACKS", {})
    monkeypatch.setattr(capture.CLASSES, "symbolic", None)
    monkeypatch.setattr(capture.CLASSES, "kinds", {})
    monkeypatch.setattr(context.CONTEXTS, "mlflow", None)
    monkeypatch.setattr(streams._classes, "streaming", None)
    yield


def _noted(name):
    from synalinks_obs.cli.checks import check_fallbacks
    from synalinks_obs.compat import fallbacks_in_use

    check = check_fallbacks()
    return name in fallbacks_in_use() and not check.ok and name in check.detail


def _warnings(caplog, name):
    return [r for r in caplog.records if r.name.startswith("synalinks_obs") and name in r.getMessage()]


def _traced(sqlite_uri, experiment, body):
    """Enable, run ``body()`` (a coroutine function), read what landed."""
    import synalinks_obs

    synalinks_obs.enable(tracking_uri=sqlite_uri, experiment_name=experiment)
    try:
        result = asyncio.run(body())
        assert synalinks_obs.flush(30)
    finally:
        synalinks_obs.uninstrument()
    return result, load_traces(sqlite_uri, experiment)


def _echo_class():
    import synalinks

    class Q(synalinks.DataModel):
        question: str

    class Echo(synalinks.Module):
        seen = []

        async def call(self, inputs, training=False):
            import mlflow

            Echo.seen.append((mlflow.get_current_active_span(), mlflow.get_active_trace_id()))
            return inputs.clone()

    return Q, Echo


def test_mlflow_trace_context_var_missing(sqlite_uri, monkeypatch, caplog):
    import sys

    import mlflow.tracing

    import synalinks_obs

    # An MLflow without mlflow.tracing.context (older than 3.6): neither the scope nor its
    # variable (the package attribute is the function, the module is in sys.modules).
    monkeypatch.delattr(sys.modules["mlflow.tracing.context"], "_USER_TRACE_CONTEXT")
    monkeypatch.setattr(mlflow.tracing, "context", None)
    Q, Echo = _echo_class()

    async def body():
        with synalinks_obs.trace_context(session_id="s-1"):
            return await Echo(name="echo")(Q(question="q"))

    name = "mlflow.tracing.context._USER_TRACE_CONTEXT"
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        result, traces = _traced(sqlite_uri, "no_trace_context", body)
    assert result.get("question") == "q" and len(traces) == 1
    # our own scope still stamps our traces
    assert traces[0].info.trace_metadata["mlflow.trace.session"] == "s-1"
    assert len(_warnings(caplog, name)) == 1
    assert _noted(name)


def test_mlflow_last_active_trace_setter_missing(sqlite_uri, monkeypatch, caplog):
    import mlflow.tracing.fluent as fluent
    import mlflow.tracing.processor.base_mlflow  # noqa: F401  (MLflow's own import of it done)

    monkeypatch.delattr(fluent, "_set_last_active_trace_id")
    Q, Echo = _echo_class()

    async def body():
        return await Echo(name="echo")(Q(question="q"))

    name = "mlflow.tracing.fluent._set_last_active_trace_id"
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        result, traces = _traced(sqlite_uri, "no_last_active", body)
    assert result.get("question") == "q" and len(traces) == 1
    assert len(_warnings(caplog, name)) == 1
    assert _noted(name)


def test_otel_sdk_spans_with_our_ids_unavailable(sqlite_uri, monkeypatch, caplog):
    import mlflow.tracing.provider  # noqa: F401  (MLflow's own generator class made)
    from opentelemetry.sdk.trace import id_generator

    from synalinks_obs.compat import mlflow as mlflow_compat

    monkeypatch.setattr(mlflow_compat, "_DETACHED", mlflow_compat._Detached())
    monkeypatch.setattr(id_generator, "IdGenerator", None)  # no id generator to subclass
    Q, Echo = _echo_class()
    Echo.seen.clear()

    async def body():
        return await Echo(name="echo")(Q(question="q"))

    name = "opentelemetry.sdk.trace.TracerProvider(id_generator=...)"
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        result, traces = _traced(sqlite_uri, "no_detached", body)
    assert result.get("question") == "q" and len(traces) == 1
    # MLflow's current-span API sees no span then (nothing wrong is shown)
    assert Echo.seen[0][0] is None
    assert len(_warnings(caplog, name)) == 1
    assert _noted(name)


def test_mlflow_otlp_module_missing(monkeypatch, caplog):
    import sys

    import mlflow.tracing.utils

    from synalinks_obs.compat import mlflow as mlflow_compat

    monkeypatch.delattr(mlflow.tracing.utils, "otlp", raising=False)
    monkeypatch.setitem(sys.modules, "mlflow.tracing.utils.otlp", None)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:9/v1/traces")
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        assert mlflow_compat.otlp_exporter() == (None, True)
    assert len(_warnings(caplog, "mlflow.tracing.utils.otlp")) == 1
    assert _noted("mlflow.tracing.utils.otlp")


def test_stream_chunks_missing_means_no_usage(sqlite_uri, monkeypatch, caplog, lm):
    """Synalinks' stream wraps something else than LiteLLM's wrapper (no ``chunks``)."""
    import synalinks

    from synalinks_obs.compat import synalinks as synalinks_compat

    cls = synalinks_compat.streaming_iterator_class()
    original_init = cls.__init__

    class Proxy:
        def __init__(self, inner):
            self._inner = inner

        def __aiter__(self):
            return self

        async def __anext__(self):
            return await self._inner.__anext__()

    def init(self, iterator, **kwargs):
        original_init(self, Proxy(iterator), **kwargs)

    monkeypatch.setattr(cls, "__init__", init)

    async def body():
        messages = synalinks.ChatMessages(messages=[synalinks.ChatMessage(role="user", content="hi")])
        stream = await lm(messages, streaming=True)
        return "".join([chunk.get("content") or "" async for chunk in stream])

    name = "StreamingIterator._iterator.chunks"
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        text, traces = _traced(sqlite_uri, "no_chunks", body)
    assert text
    (span,) = traces[0].data.spans
    assert span.outputs["choices"][0]["message"]["content"] == text
    assert "mlflow.chat.tokenUsage" not in span.attributes
    assert len(_warnings(caplog, name)) == 1
    assert _noted(name)


def test_mlflow_trace_exporter_lookup_missing(monkeypatch, caplog):
    import mlflow.tracing.fluent  # noqa: F401  (MLflow's own import of it done)
    import mlflow.tracing.provider as provider

    from synalinks_obs.compat import mlflow as mlflow_compat

    monkeypatch.delattr(provider, "_get_trace_exporter")
    name = "mlflow.tracing.provider._get_trace_exporter"
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        mlflow_compat.wait_for_mlflow_async_logging(1.0)  # returns at once, says so once
        mlflow_compat.wait_for_mlflow_async_logging(1.0)
    assert len(_warnings(caplog, name)) == 1
    assert _noted(name)


class _NoPrivates:
    """An MLflow object of a release without the private names we use."""


def test_live_span_without_its_otel_span(caplog):
    from synalinks_obs.compat import mlflow as mlflow_compat

    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        assert mlflow_compat.otel_span_of(_NoPrivates()) is None
    name = "mlflow.entities.LiveSpan._span"
    assert len(_warnings(caplog, name)) == 1 and _noted(name)


def test_held_trace_without_its_span_dict(caplog):
    from synalinks_obs.compat import mlflow as mlflow_compat

    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        assert mlflow_compat.held_spans(_NoPrivates()) == []
    name = "mlflow.tracing.trace_manager._Trace.span_dict"
    assert len(_warnings(caplog, name)) == 1 and _noted(name)


def test_trace_manager_without_register_span_or_pop_trace(caplog):
    from synalinks_obs.compat import mlflow as mlflow_compat

    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        assert mlflow_compat.register_live_span(_NoPrivates(), "tr-1", _NoPrivates()) is False
        mlflow_compat.drop_trace(_NoPrivates(), 1)  # nothing to drop, no error
    for name in ("mlflow.tracing.trace_manager.InMemoryTraceManager.register_span",
                 "mlflow.tracing.trace_manager.InMemoryTraceManager.pop_trace"):
        assert len(_warnings(caplog, name)) == 1 and _noted(name)


def test_current_span_api_without_register_span_keeps_the_app_traced(sqlite_uri, monkeypatch, caplog):
    """MLflow's trace manager of a release without ``register_span``: the module call runs
    and is traced; MLflow's current-span API sees no span (nothing wrong is shown)."""
    from synalinks_obs.compat import mlflow as mlflow_compat

    manager_class = mlflow_compat.trace_manager_class()
    monkeypatch.delattr(manager_class, "register_span")
    Q, Echo = _echo_class()
    Echo.seen.clear()

    async def body():
        return await Echo(name="echo")(Q(question="q"))

    name = "mlflow.tracing.trace_manager.InMemoryTraceManager.register_span"
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        result, traces = _traced(sqlite_uri, "no_register_span", body)
    assert result.get("question") == "q" and len(traces) == 1
    assert Echo.seen[0][0] is None
    assert len(_warnings(caplog, name)) == 1 and _noted(name)

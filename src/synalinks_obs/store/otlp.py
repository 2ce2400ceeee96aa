"""Our spans to the OpenTelemetry collector that MLflow's own OTLP settings name.

MLflow sends its traces to an OTLP endpoint when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
(or ``OTEL_EXPORTER_OTLP_ENDPOINT``) is set, over ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``
(``grpc`` by default, or ``http/protobuf``), and then no longer to its tracking store
unless ``MLFLOW_TRACE_ENABLE_OTLP_DUAL_EXPORT=true``. ``Forwarder`` applies the same
settings to our spans: the ``Writer`` hands it the OpenTelemetry spans it built
(``store.mlflow_spans.wire_to_otel_span``: the spans MLflow gets, same ids, parents and
``synalinks.*`` attributes),
MLflow's own exporter for that endpoint (``compat.mlflow.otlp_exporter``) sends them, and
``dual`` says whether the tracking store is written too. Each batch is sent once (a
store retry does not send it again); a collector that fails is reported in one line.
"""

from __future__ import annotations

from synalinks_obs.compat import mlflow as mlflow_compat


class Forwarder:
    """Sends our spans to the configured OTLP endpoint with MLflow's exporter."""

    def __init__(self, exporter, dual: bool):
        self.exporter = exporter
        self.dual = dual  # write the tracking store as well
        self.sent = 0
        self.failed = 0

    @classmethod
    def from_environment(cls) -> Forwarder | None:
        """The forwarder MLflow's settings ask for, or None (no OTLP endpoint)."""
        exporter, dual = mlflow_compat.otlp_exporter()
        return None if exporter is None else cls(exporter, dual)

    def send(self, spans) -> str | None:
        """Export ``spans`` (OpenTelemetry ``ReadableSpan``s); None when sent, else why not."""
        if not spans:
            return None
        from opentelemetry.sdk.trace.export import SpanExportResult

        try:
            result = self.exporter.export(list(spans))
        except Exception as exc:  # the exporter raised instead of reporting
            self.failed += len(spans)
            return f"{type(exc).__name__}: {exc}"
        if result is not SpanExportResult.SUCCESS:
            self.failed += len(spans)
            return "the OTLP endpoint did not accept them"
        self.sent += len(spans)
        return None

    def shutdown(self) -> None:
        try:
            self.exporter.shutdown()
        except Exception:  # already shut down, or its channel is gone at exit
            pass

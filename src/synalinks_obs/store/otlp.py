"""Our spans to the OpenTelemetry collector that MLflow's own OTLP settings name.

MLflow sends its traces to an OTLP endpoint when ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
(or ``OTEL_EXPORTER_OTLP_ENDPOINT``) is set, over ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``
(``grpc`` by default, or ``http/protobuf``), and then no longer to its tracking store
unless ``MLFLOW_TRACE_ENABLE_OTLP_DUAL_EXPORT=true``. ``Forwarder`` applies the same
settings to our spans: the ``Writer`` hands it the OpenTelemetry spans it built
(``store.mlflow_spans.wire_to_otel_span``: the spans MLflow gets, same ids, parents and
``synalinks.*`` attributes),
MLflow's own exporter for that endpoint (``compat.mlflow.otlp_exporter``) sends them, and
``dual`` says whether the tracking store is written too. ``OtlpRoute`` (one per
``Writer``) builds the forwarder from the settings, again when the app changed them, and
sends each chunk once (a store retry does not send it again); a collector that fails is
reported in one line per chunk.
"""

from __future__ import annotations

from synalinks_obs import reporting
from synalinks_obs.compat import mlflow as mlflow_compat
from synalinks_obs.store.mlflow_spans import wire_to_otel_span
from synalinks_obs.store.protocol import otlp_environment

_UNSET = object()


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


class OtlpRoute:
    """The ``Writer``'s way to the OTLP endpoint: the forwarder of the current settings."""

    def __init__(self, notify):
        self._notify = notify
        self._forwarder = _UNSET
        self._settings = ()

    def forwarder(self) -> Forwarder | None:
        """Where MLflow's OTLP settings send our spans besides (or instead of) the
        tracking store; read again when the app changed them."""
        settings = otlp_environment()
        if self._forwarder is _UNSET or settings != self._settings:
            if self._forwarder not in (_UNSET, None):
                self._forwarder.shutdown()
            self._settings = settings
            self._forwarder = None
            if not settings:
                return None
            try:
                self._forwarder = Forwarder.from_environment()
            except Exception as exc:
                self._notify(
                    "warning",
                    f"cannot send spans to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT ({type(exc).__name__}: "
                    f"{reporting.first_line(exc)}); fix the OTLP settings (endpoint, "
                    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL); spans go to MLflow only",
                )
        return self._forwarder

    def forward(self, forwarder, batch) -> tuple[list, list]:
        """Send the chunks of ``batch`` not sent yet; the batch's wires and OpenTelemetry
        spans (what the store gets too)."""
        wires, spans = [], []
        for chunk in batch:
            chunk_wires = chunk.wires()
            chunk_spans = [wire_to_otel_span(wire) for wire in chunk_wires]
            if forwarder is not None and not chunk.forwarded:
                chunk.forwarded = True
                problem = forwarder.send(chunk_spans)
                if problem is not None:
                    self._notify(
                        "warning",
                        f"{len(chunk_spans)} spans not sent to the OTLP endpoint ({problem}); "
                        "check OTEL_EXPORTER_OTLP_TRACES_ENDPOINT and the collector",
                    )
            wires.extend(chunk_wires)
            spans.extend(chunk_spans)
        return wires, spans

"""A real OTLP traces receiver on 127.0.0.1 that keeps the spans it is sent.

Import with ``tests/support`` on ``sys.path`` (``import otlp``). ``OtlpReceiver()`` (a
context manager; or ``.start()`` / ``.stop()``) serves OTLP/HTTP on a free port: ``POST
/v1/traces`` with a protobuf ``ExportTraceServiceRequest`` body (``Content-Type:
application/x-protobuf``, optionally ``Content-Encoding: gzip``), answered 200 with an empty
``ExportTraceServiceResponse``; ``.url`` is the base (``OTEL_EXPORTER_OTLP_ENDPOINT``),
``.traces_url`` the full path (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``). With ``grpc=True``
it also serves OTLP/gRPC's ``TraceService/Export`` on ``.grpc_endpoint`` (``127.0.0.1:PORT``;
needs ``grpcio``: ``grpc_unavailable()`` says so, `ServiceUnavailable` otherwise, switch
``TEST_REQUIRE_OTLP_GRPC``). Every span received is kept as a `ReceivedSpan` (name, hex
ids, parent id '' for a root, attributes as Python values, kind, status, times, events,
resource attributes, scope name, transport) in a thread-safe list: ``.spans`` (a copy),
``wait_for_spans(count, timeout)``, ``clear()``; ``.requests`` records each export's
transport, path and headers (lower-case names). ``inject_errors(count, status)`` makes the
next `count` HTTP exports answer `status` (503 by default) instead, to test exporters'
retries. Built on ``opentelemetry-proto`` (a dependency of MLflow's tracing) and the
standard library's HTTP server.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from support_base import ServiceUnavailable

REQUIRE_GRPC_ENV = "TEST_REQUIRE_OTLP_GRPC"


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as received (ids as lowercase hex; parent_span_id '' for a root)."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict
    kind: int = 0
    status_code: int = 0
    status_message: str = ""
    start_time_unix_nano: int = 0
    end_time_unix_nano: int = 0
    resource: dict = field(default_factory=dict)
    scope: str = ""
    events: tuple = ()
    transport: str = "http"


def any_value(value):
    """An OTLP ``AnyValue`` as a Python value (arrays -> list, key-value lists -> dict)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, kind)


def attributes(key_values) -> dict:
    """Repeated OTLP ``KeyValue`` -> dict."""
    return {item.key: any_value(item.value) for item in key_values}


def spans_of(request, transport: str = "http") -> list[ReceivedSpan]:
    """The spans of an ``ExportTraceServiceRequest``, flattened."""
    found = []
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                found.append(ReceivedSpan(
                    name=span.name,
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex(),
                    attributes=attributes(span.attributes),
                    kind=span.kind,
                    status_code=span.status.code,
                    status_message=span.status.message,
                    start_time_unix_nano=span.start_time_unix_nano,
                    end_time_unix_nano=span.end_time_unix_nano,
                    resource=resource,
                    scope=scope_spans.scope.name,
                    events=tuple((event.name, attributes(event.attributes))
                                 for event in span.events),
                    transport=transport,
                ))
    return found


def grpc_unavailable() -> str | None:
    try:
        import grpc  # noqa: F401
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc  # noqa: F401
    except ImportError as exc:
        return f"OTLP/gRPC needs grpcio (pip install grpcio): {exc}"
    return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    receiver: OtlpReceiver

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def _reply(self, status, body=b"", content_type="application/x-protobuf"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.split("?")[0] != "/v1/traces":
            return self._reply(404, b"only /v1/traces\n", "text/plain")
        status = self.receiver._take_injected_error()
        if status:
            return self._reply(status, b"injected error\n", "text/plain")
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if content_type != "application/x-protobuf":
            return self._reply(415, b"only application/x-protobuf\n", "text/plain")
        encoding = (self.headers.get("Content-Encoding") or "identity").lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            elif encoding != "identity":
                return self._reply(415, b"unknown Content-Encoding\n", "text/plain")
            request = ExportTraceServiceRequest.FromString(body)
        except Exception as exc:  # a broken body is the sender's fault: 400, and say why
            return self._reply(400, f"undecodable body: {exc}\n".encode(), "text/plain")
        self.receiver._record("http", self.path, dict(self.headers.items()), request)
        self._reply(200, ExportTraceServiceResponse().SerializeToString())


class OtlpReceiver:
    """OTLP/HTTP (and optionally gRPC) traces receiver; see the module."""

    def __init__(self, *, grpc: bool = False):
        self.grpc = grpc
        self._lock = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self._requests: list[dict] = []
        self._errors: list[int] = []
        self._http = None
        self._thread = None
        self._grpc_server = None
        self.port = None
        self.grpc_port = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def traces_url(self) -> str:
        return f"{self.url}/v1/traces"

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def start(self) -> OtlpReceiver:
        """Serve (a no-op when already serving)."""
        if self._http is not None:
            return self
        if self.grpc:
            reason = grpc_unavailable()
            if reason:
                raise ServiceUnavailable(reason, REQUIRE_GRPC_ENV)
        handler = type("Handler", (_Handler,), {"receiver": self})
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._http.daemon_threads = True
        self.port = self._http.server_address[1]
        self._thread = threading.Thread(target=self._http.serve_forever,
                                        name="otlp-receiver", daemon=True)
        self._thread.start()
        if self.grpc:
            self._start_grpc()
        return self

    def _start_grpc(self):
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        receiver = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):
                receiver._record("grpc", "TraceService/Export",
                                 dict(context.invocation_metadata()), request)
                return trace_service_pb2.ExportTraceServiceResponse()

        self._grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self._grpc_server)
        self.grpc_port = self._grpc_server.add_insecure_port("127.0.0.1:0")
        self._grpc_server.start()

    def stop(self) -> None:
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None)
            self._grpc_server = None
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._thread.join(10)
            self._http = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _record(self, transport, path, headers, request):
        spans = spans_of(request, transport)
        headers = {name.lower(): value for name, value in headers.items()}
        with self._lock:
            self._requests.append({"transport": transport, "path": path,
                                   "headers": headers, "span_count": len(spans)})
            self._spans.extend(spans)
            self._lock.notify_all()

    def _take_injected_error(self):
        with self._lock:
            return self._errors.pop(0) if self._errors else None

    def inject_errors(self, count: int = 1, status: int = 503) -> None:
        """Answer the next `count` HTTP exports with `status` (nothing is recorded)."""
        with self._lock:
            self._errors.extend([status] * count)

    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            return list(self._spans)

    @property
    def requests(self) -> list[dict]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()
            self._requests.clear()
            self._errors.clear()

    def wait_for_spans(self, count: int, timeout: float = 30.0) -> list[ReceivedSpan]:
        """Wait until at least `count` spans arrived; return them all (TimeoutError
        naming what did arrive otherwise)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._spans) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    names = [span.name for span in self._spans]
                    raise TimeoutError(f"{len(names)} of {count} spans after {timeout}s: {names}")
                self._lock.wait(left)
            return list(self._spans)

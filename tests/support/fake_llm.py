"""A fake OpenAI-compatible chat-completions server for the test suite.

Owns `FakeLLM`, a stdlib HTTP server (run in a background thread on
127.0.0.1, free port) that speaks enough of the OpenAI wire format for
litellm, and therefore Synalinks' `LanguageModel`, to talk to it as if it
were `api.openai.com`:

- ``POST /v1/chat/completions`` answers deterministically:
  * with ``response_format`` of type ``json_schema``: the content is a JSON
    object generated from that schema (see `instance_from_schema`);
  * with ``tools`` and no ``role: "tool"`` message in the conversation yet
    (and ``tool_choice`` not ``"none"``): one ``tool_calls`` entry calling the
    first tool, its arguments generated from the tool's parameter schema;
  * otherwise a plain-text final answer.
  Every answer carries a ``usage`` block, so litellm prices it from its model
  table (the response echoes the requested model, e.g. ``gpt-4o-mini``).
- ``GET /v1/models`` lists the models seen so far (plus ``gpt-4o-mini``).

Faults are injected per server: `inject_latency(seconds)` delays every
answer, `inject_errors(count)` makes the next ``count`` completion requests
(or all of them, ``count=None``) answer HTTP 500. `reset()` clears faults and
the request log between tests. Streaming is not supported.
"""

import itertools
import json
import re
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_MODEL = "gpt-4o-mini"


def _words(name):
    """Split a field name (snake_case, camelCase, kebab-case) into words."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name or "")
    return [w.lower() for w in re.split(r"[^A-Za-z0-9]+", spaced) if w]


def _text_for(name, schema):
    """Deterministic, plausible text for a string field called `name`."""
    fmt = schema.get("format")
    if fmt == "date-time":
        return "2025-01-01T00:00:00Z"
    if fmt == "date":
        return "2025-01-01"
    if fmt == "time":
        return "00:00:00"
    if fmt == "email":
        return "user@example.com"
    if fmt in ("uri", "url"):
        return "https://example.com/"
    if fmt == "uuid":
        return "00000000-0000-4000-8000-000000000000"
    words = _words(name) or ["value"]
    text = "Example " + " ".join(words) + "."
    min_length = schema.get("minLength", 0)
    max_length = schema.get("maxLength")
    if len(text) < min_length:
        text = text + "x" * (min_length - len(text))
    if max_length is not None:
        text = text[:max_length]
    return text


def _number_for(schema, integer):
    """A number honouring ``minimum``/``maximum`` (and exclusive variants)."""
    low = schema.get("minimum")
    if low is None and "exclusiveMinimum" in schema:
        low = schema["exclusiveMinimum"] + (1 if integer else 0.5)
    high = schema.get("maximum")
    if high is None and "exclusiveMaximum" in schema:
        high = schema["exclusiveMaximum"] - (1 if integer else 0.5)
    value = 42 if integer else 0.5
    if low is not None and value < low:
        value = low
    if high is not None and value > high:
        value = high
    return int(value) if integer else float(value)


def _resolve_ref(ref, root):
    """Follow a local ``#/...`` JSON pointer inside the root schema."""
    if not ref.startswith("#"):
        raise ValueError(f"Only local $ref are supported, got {ref!r}")
    node = root
    for part in ref.lstrip("#").strip("/").split("/"):
        if part:
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def instance_from_schema(schema, name="value", root=None):
    """Generate a JSON value that validates against `schema`.

    Supports ``object`` (all declared ``properties`` are emitted, so
    ``required`` is always satisfied), ``string`` (text derived from the field
    `name`, common ``format``s, length bounds), ``integer``/``number``
    (bounds), ``boolean``, ``null``, ``array`` (``items``, ``prefixItems``,
    ``minItems``), ``enum``, ``const``, ``anyOf``/``oneOf`` (first non-null
    branch), ``allOf`` (objects merged), ``$ref`` into ``$defs`` or
    ``definitions``, and type lists such as ``["string", "null"]``. The output
    is a pure function of the schema, so tests can rely on it.
    """
    root = schema if root is None else root
    if schema is True or not schema:
        return _text_for(name, {})
    if "$ref" in schema:
        return instance_from_schema(_resolve_ref(schema["$ref"], root), name, root)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            branches = schema[key]
            non_null = [b for b in branches if b.get("type") != "null"]
            return instance_from_schema((non_null or branches)[0], name, root)
    if "allOf" in schema:
        parts = [instance_from_schema(s, name, root) for s in schema["allOf"]]
        if all(isinstance(p, dict) for p in parts):
            return {k: v for part in parts for k, v in part.items()}
        return parts[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((t for t in kind if t != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        return {
            prop: instance_from_schema(sub, prop, root)
            for prop, sub in schema.get("properties", {}).items()
        }
    if kind == "array":
        prefix = [
            instance_from_schema(sub, name, root)
            for sub in schema.get("prefixItems", [])
        ]
        count = max(schema.get("minItems", 1), 1) - len(prefix)
        items = schema.get("items", {})
        if items is False:
            return prefix
        return prefix + [instance_from_schema(items, name, root) for _ in range(count)]
    if kind == "string":
        return _text_for(name, schema)
    if kind == "integer":
        return _number_for(schema, integer=True)
    if kind == "number":
        return _number_for(schema, integer=False)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    raise ValueError(f"Unsupported JSON schema type {kind!r}")


def _count_tokens(value):
    """A deterministic stand-in for a tokenizer: ~4 characters per token."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return max(1, len(text) // 4)


def _schema_of(response_format):
    """The JSON schema carried by an OpenAI ``response_format``, or None."""
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") != "json_schema":
        return None
    return (response_format.get("json_schema") or {}).get("schema")


class FakeLLM:
    """An in-process OpenAI-compatible server. See the module docstring.

    Use as a context manager or call `start()`/`stop()`. `base_url` is the
    ``.../v1`` URL to pass as ``api_base``. `requests` holds the decoded body
    of every completion request received (including failed ones), in order.
    """

    def __init__(self, host="127.0.0.1"):
        self._host = host
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server = None
        self._thread = None
        self.reset()

    # -- lifecycle -------------------------------------------------------

    def start(self):
        if self._server is not None:
            return self
        self._server = ThreadingHTTPServer((self._host, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            name="fake-llm-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self):
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self._server = None
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    @property
    def port(self):
        return self._server.server_address[1]

    @property
    def base_url(self):
        return f"http://{self._host}:{self.port}/v1"

    # -- faults and bookkeeping -----------------------------------------

    def reset(self):
        """Clear injected faults and the request log."""
        with self._lock:
            self._latency = 0.0
            self._errors_left = 0
            self._error_status = HTTPStatus.INTERNAL_SERVER_ERROR
            self._requests = []

    def inject_latency(self, seconds):
        """Delay every following answer (errors included) by `seconds`."""
        with self._lock:
            self._latency = float(seconds)

    def inject_errors(self, count=None, status=HTTPStatus.INTERNAL_SERVER_ERROR):
        """Answer the next `count` completion requests (all when None) with
        an OpenAI-style error body and HTTP `status`."""
        with self._lock:
            self._errors_left = float("inf") if count is None else int(count)
            self._error_status = HTTPStatus(status)

    @property
    def request_count(self):
        """Number of completion requests received since the last reset."""
        with self._lock:
            return len(self._requests)

    @property
    def requests(self):
        with self._lock:
            return list(self._requests)

    def _admit(self, body):
        """Log a completion request; return (latency, error status or None)."""
        with self._lock:
            self._requests.append(body)
            status = None
            if self._errors_left > 0:
                self._errors_left -= 1
                status = self._error_status
            return self._latency, status

    # -- answers ---------------------------------------------------------

    def completion(self, body):
        """Build the chat completion answering the request `body`."""
        model = body.get("model") or DEFAULT_MODEL
        messages = body.get("messages") or []
        tools = body.get("tools") or []
        schema = _schema_of(body.get("response_format"))
        has_tool_result = any(m.get("role") == "tool" for m in messages)
        message = {"role": "assistant", "content": None}
        if schema is not None:
            message["content"] = json.dumps(instance_from_schema(schema))
            finish_reason = "stop"
        elif tools and not has_tool_result and body.get("tool_choice") != "none":
            function = tools[0]["function"]
            arguments = instance_from_schema(function.get("parameters") or {})
            message["tool_calls"] = [
                {
                    "id": f"call_{next(self._ids)}",
                    "type": "function",
                    "function": {
                        "name": function["name"],
                        "arguments": json.dumps(arguments),
                    },
                }
            ]
            finish_reason = "tool_calls"
        else:
            tool_results = sum(m.get("role") == "tool" for m in messages)
            message["content"] = (
                f"Final answer after {tool_results} tool result(s)."
            )
            finish_reason = "stop"
        prompt_tokens = _count_tokens(messages) + _count_tokens(tools)
        completion_tokens = _count_tokens(message)
        return {
            "id": f"chatcmpl-fake-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def _models(self):
        with self._lock:
            seen = {b.get("model") for b in self._requests if b.get("model")}
        return {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake-llm"}
                for m in sorted(seen | {DEFAULT_MODEL})
            ],
        }

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format, *args):
                pass

            def _send_json(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status, message, kind):
                self._send_json(
                    status,
                    {"error": {"message": message, "type": kind, "code": None}},
                )

            def do_GET(self):
                if self.path.rstrip("/") == "/v1/models":
                    self._send_json(HTTPStatus.OK, fake._models())
                else:
                    self._error(HTTPStatus.NOT_FOUND, self.path, "not_found")

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._error(HTTPStatus.NOT_FOUND, self.path, "not_found")
                    return
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    self._error(HTTPStatus.BAD_REQUEST, "invalid JSON", "invalid_request")
                    return
                latency, status = fake._admit(body)
                if latency:
                    time.sleep(latency)
                if status is not None:
                    self._error(status, "injected failure", "server_error")
                    return
                if body.get("stream"):
                    self._error(
                        HTTPStatus.BAD_REQUEST,
                        "streaming is not supported by the fake server",
                        "invalid_request",
                    )
                    return
                try:
                    answer = fake.completion(body)
                except (KeyError, TypeError, ValueError) as exc:
                    self._error(HTTPStatus.BAD_REQUEST, repr(exc), "invalid_request")
                    return
                self._send_json(HTTPStatus.OK, answer)

        return Handler

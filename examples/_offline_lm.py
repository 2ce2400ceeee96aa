"""The examples' language model and the offline OpenAI-compatible server behind it, which the tests use too.

`language_model()` returns the model named by ``SYNALINKS_EXAMPLE_MODEL`` (a litellm name
such as ``openai/gpt-4o-mini``; the provider's key in its usual variable; optionally
``SYNALINKS_EXAMPLE_API_BASE``), else ``openai/gpt-4o-mini`` on an `OfflineServer`: a
standard-library HTTP server on 127.0.0.1 (free port, daemon thread) that answers
``/v1/chat/completions`` at once and deterministically (an instance of the requested JSON
schema, a call of the first tool offered, or a short text) with token usage that litellm
prices as the real model's, as one JSON answer or, for ``"stream": true``, as OpenAI's
server-sent chunks (the usage in a last chunk when ``stream_options.include_usage`` asks,
as OpenAI does), lists ``/v1/models``, logs requests and injects latency and HTTP errors
for the tests (``tests/support/fake_llm.py``). Standard library only, so an
example needs nothing but synalinks, and nothing here is about tracing.
"""

import itertools
import json
import os
import re
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# litellm would otherwise download its model price table when it is imported.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

OFFLINE_MODEL = "openai/gpt-4o-mini"
DEFAULT_MODEL = OFFLINE_MODEL.split("/", 1)[1]


def language_model():
    """A ``synalinks.LanguageModel``: the configured provider, or the offline server."""
    import synalinks

    model = os.environ.get("SYNALINKS_EXAMPLE_MODEL")
    if model:
        options = {}
        if os.environ.get("SYNALINKS_EXAMPLE_API_BASE"):
            options["api_base"] = os.environ["SYNALINKS_EXAMPLE_API_BASE"]
        return synalinks.LanguageModel(model=model, **options)
    server = examples_server()
    return synalinks.LanguageModel(model=OFFLINE_MODEL, api_base=server.base_url, api_key="sk-offline", retry=1)


# -- what the examples' offline model says --------------------------------------------------
# Values for fields of these names (what the examples need for a sensible run); any other
# string field gets a short text made from its name.
CANNED = {
    "expression": "152648 + 485",
    "answer": "Paris.",
    "thinking": "The question asks for a capital city; recall it, then answer briefly.",
}
_RESULT = re.compile(r'"result"\s*:\s*(-?[0-9][0-9.e+-]*)')
_examples = {"server": None, "lock": threading.Lock()}


def example_fields(messages):
    """`CANNED`, with an ``answer`` that reports what a tool computed once one has answered."""
    values = dict(CANNED)
    computed = _RESULT.findall(json.dumps(messages).replace('\\"', '"'))
    if computed:
        values["answer"] = f"The result is {computed[-1]}."
    return values


def examples_server():
    """The process's one offline server for the examples (started on first use)."""
    with _examples["lock"]:
        if _examples["server"] is None:
            _examples["server"] = OfflineServer(fields=example_fields).start()
        return _examples["server"]


# -- JSON values for a schema ---------------------------------------------------------------
_FORMATS = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def _words(name):
    """Split a field name (snake_case, camelCase, kebab-case) into words."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name or "")
    return [w.lower() for w in re.split(r"[^A-Za-z0-9]+", spaced) if w]


def _text_for(name, schema, values):
    """The given value of field `name`, else a plausible text honouring format and length."""
    if name in values:
        return values[name]
    if schema.get("format") in _FORMATS:
        return _FORMATS[schema["format"]]
    text = "Example " + " ".join(_words(name) or ["value"]) + "."
    text += "x" * (schema.get("minLength", 0) - len(text))
    max_length = schema.get("maxLength")
    return text if max_length is None else text[:max_length]


def _number_for(schema, integer):
    """A number honouring ``minimum``/``maximum`` (and their exclusive variants)."""
    step = 1 if integer else 0.5
    low = schema.get("minimum")
    if low is None and "exclusiveMinimum" in schema:
        low = schema["exclusiveMinimum"] + step
    high = schema.get("maximum")
    if high is None and "exclusiveMaximum" in schema:
        high = schema["exclusiveMaximum"] - step
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


def instance_from_schema(schema, name="value", root=None, values=None):
    """A JSON value valid for `schema`, a pure function of it (and of `values`).

    Supports objects (every declared property, so ``required`` holds), strings (text from
    the field's name, common formats, length bounds; `values` maps field names to fixed
    values), integers and numbers (bounds), booleans, null, arrays (``items``,
    ``prefixItems``, ``minItems``), ``enum``, ``const``, ``anyOf``/``oneOf`` (first
    non-null branch), ``allOf`` (objects merged), ``$ref`` and type lists.
    """
    root = schema if root is None else root
    values = values or {}

    def sub(node, field=name):
        return instance_from_schema(node, field, root, values)

    if schema is True or not schema:
        return _text_for(name, {}, values)
    if "$ref" in schema:
        return sub(_resolve_ref(schema["$ref"], root))
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            branches = schema[key]
            return sub(([b for b in branches if b.get("type") != "null"] or branches)[0])
    if "allOf" in schema:
        parts = [sub(part) for part in schema["allOf"]]
        if all(isinstance(part, dict) for part in parts):
            return {k: v for part in parts for k, v in part.items()}
        return parts[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((t for t in kind if t != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        return {prop: sub(node, prop) for prop, node in schema.get("properties", {}).items()}
    if kind == "array":
        prefix = [sub(node) for node in schema.get("prefixItems", [])]
        items = schema.get("items", {})
        if items is False:
            return prefix
        return prefix + [sub(items) for _ in range(max(schema.get("minItems", 1), 1) - len(prefix))]
    if kind == "string":
        return _text_for(name, schema, values)
    if kind in ("integer", "number"):
        return _number_for(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    raise ValueError(f"Unsupported JSON schema type {kind!r}")


# -- the chat completion ---------------------------------------------------------------------
def _tokens(value):
    """A deterministic stand-in for a tokenizer: ~4 characters of JSON per token."""
    return max(1, len(json.dumps(value, sort_keys=True)) // 4)


def _schema_of(response_format):
    """The JSON schema carried by an OpenAI ``response_format``, or None."""
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    return (response_format.get("json_schema") or {}).get("schema")


def completion(body, ids, values=None):
    """The chat completion answering the request `body` (`ids` numbers calls and answers)."""
    messages = body.get("messages") or []
    tools = body.get("tools") or []
    schema = _schema_of(body.get("response_format"))
    tool_results = sum(m.get("role") == "tool" for m in messages)
    message = {"role": "assistant", "content": None}
    finish_reason = "stop"
    if schema is not None:
        message["content"] = json.dumps(instance_from_schema(schema, values=values))
    elif tools and not tool_results and body.get("tool_choice") != "none":
        function = tools[0]["function"]
        arguments = instance_from_schema(function.get("parameters") or {}, values=values)
        message["tool_calls"] = [{
            "id": f"call_{next(ids)}",
            "type": "function",
            "function": {"name": function["name"], "arguments": json.dumps(arguments)},
        }]
        finish_reason = "tool_calls"
    else:
        message["content"] = f"Done, after {tool_results} tool result(s)."
    prompt_tokens = _tokens(messages) + (_tokens(tools) if tools else 0)
    completion_tokens = _tokens(message)
    return {
        "id": f"chatcmpl-offline-{next(ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model") or DEFAULT_MODEL,
        "system_fingerprint": "fp_offline",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def stream_chunks(answer, include_usage=False):
    """The chat completion `answer` as OpenAI's streamed ``chat.completion.chunk`` objects:
    the role, the content in a few pieces (or the tool calls), the finish reason, then the
    usage alone when `include_usage` (``stream_options.include_usage``)."""
    choice = answer["choices"][0]
    message = choice["message"]
    base = {key: answer[key] for key in ("id", "created", "model", "system_fingerprint")}
    base["object"] = "chat.completion.chunk"

    def chunk(delta, finish_reason=None):
        return {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}

    chunks = [chunk({"role": "assistant", "content": ""})]
    content = message.get("content") or ""
    pieces = re.findall(r"\S+\s*", content) or ([content] if content else [])
    size = max(1, -(-len(pieces) // 4))  # about four content chunks
    for start in range(0, len(pieces), size):
        chunks.append(chunk({"content": "".join(pieces[start:start + size])}))
    if message.get("tool_calls"):
        calls = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
        chunks.append(chunk({"tool_calls": calls}))
    chunks.append(chunk({}, choice["finish_reason"]))
    if include_usage:
        chunks.append({**base, "choices": [], "usage": answer["usage"]})
    return chunks


# -- the server --------------------------------------------------------------------------------
class OfflineServer:
    """An OpenAI-compatible chat server on 127.0.0.1, with a request log and injected faults.

    A context manager, or `start()` / `stop()`; `base_url` is the ``.../v1`` URL to pass as
    ``api_base``. `fields(messages)`, when given, returns fixed values for fields of the
    names it holds. `requests` holds the decoded body of every completion request since the
    last `reset()` (failed ones included); `inject_latency` and `inject_errors` add faults.
    Streaming is not supported.
    """

    def __init__(self, host="127.0.0.1", fields=None):
        self._host = host
        self._fields = fields
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server = None
        self._thread = None
        self.reset()

    def start(self):
        """Serve on a free port from a daemon thread (idempotent)."""
        if self._server is None:
            self._server = ThreadingHTTPServer((self._host, 0), _handler_for(self))
            self._server.daemon_threads = True
            self._thread = threading.Thread(target=self._server.serve_forever, name="offline-lm", daemon=True)
            self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join()
            self._server = self._thread = None

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

    def reset(self):
        """Clear injected faults and the request log."""
        with self._lock:
            self._latency = 0.0
            self._errors_left = 0
            self._error_status = HTTPStatus.INTERNAL_SERVER_ERROR
            self._requests = []
            self.stream_interval = 0.0

    def inject_latency(self, seconds):
        """Delay every following answer (errors included) by `seconds`."""
        with self._lock:
            self._latency = float(seconds)

    def inject_errors(self, count=None, status=HTTPStatus.INTERNAL_SERVER_ERROR):
        """Answer the next `count` completion requests (all when None) with HTTP `status`."""
        with self._lock:
            self._errors_left = float("inf") if count is None else int(count)
            self._error_status = HTTPStatus(status)

    @property
    def request_count(self):
        """Completion requests received since the last reset."""
        with self._lock:
            return len(self._requests)

    @property
    def requests(self):
        with self._lock:
            return list(self._requests)

    def admit(self, body):
        """Log a completion request; return (latency, error status or None)."""
        with self._lock:
            self._requests.append(body)
            status = None
            if self._errors_left > 0:
                self._errors_left -= 1
                status = self._error_status
            return self._latency, status

    def completion(self, body):
        """The chat completion answering the request `body`."""
        values = self._fields(body.get("messages") or []) if self._fields else None
        return completion(body, self._ids, values)

    def models(self):
        """The ``GET /v1/models`` list: the models requested so far, and the default."""
        with self._lock:
            seen = {body.get("model") for body in self._requests if body.get("model")}
        return {
            "object": "list",
            "data": [{"id": m, "object": "model", "created": 0, "owned_by": "offline-lm"}
                     for m in sorted(seen | {DEFAULT_MODEL})],
        }


def _handler_for(server):
    """The request handler class serving `server`'s answers."""

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

        def _send_stream(self, chunks):
            """Server-sent events, one HTTP chunk each, then ``[DONE]``."""
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            events = [f"data: {json.dumps(chunk)}\n\n" for chunk in chunks] + ["data: [DONE]\n\n"]
            for number, event in enumerate(events):
                if number and server.stream_interval:
                    time.sleep(server.stream_interval)
                data = event.encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")

        def _error(self, status, message, kind):
            self._send_json(status, {"error": {"message": message, "type": kind, "code": None}})

        def do_GET(self):
            if self.path.rstrip("/") == "/v1/models":
                self._send_json(HTTPStatus.OK, server.models())
            else:
                self._error(HTTPStatus.NOT_FOUND, self.path, "not_found")

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._error(HTTPStatus.NOT_FOUND, self.path, "not_found")
                return
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                self._error(HTTPStatus.BAD_REQUEST, "invalid JSON", "invalid_request")
                return
            latency, status = server.admit(body)
            if latency:
                time.sleep(latency)
            if status is not None:
                self._error(status, "injected failure", "server_error")
            else:
                try:
                    answer = server.completion(body)
                except Exception as exc:  # a request this stand-in cannot answer
                    self._error(HTTPStatus.BAD_REQUEST, repr(exc), "invalid_request")
                    return
                if body.get("stream"):
                    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                    self._send_stream(stream_chunks(answer, include_usage))
                else:
                    self._send_json(HTTPStatus.OK, answer)

    return Handler

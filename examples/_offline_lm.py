"""The language model the examples use: a real provider if you configure one, else offline.

- ``SYNALINKS_EXAMPLE_MODEL`` set (a litellm model name such as ``openai/gpt-4o-mini``
  or ``anthropic/claude-sonnet-4-20250514``; the provider's key in its usual variable,
  e.g. ``OPENAI_API_KEY``; optionally ``SYNALINKS_EXAMPLE_API_BASE``): that model.
- Otherwise the examples run offline: a tiny OpenAI-compatible chat server is started on
  127.0.0.1 (a free port, a daemon thread of the example's own process) and answers every
  request at once and deterministically: an instance of the requested JSON schema, a call
  of the first tool when tools are offered, a short text otherwise. Each answer reports
  token usage under the model name ``gpt-4o-mini``, so litellm prices the calls as it
  would for the real model.

Nothing here is about tracing: the examples are plain Synalinks programs.
"""

import itertools
import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# litellm would otherwise download its model price table when it is imported.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

OFFLINE_MODEL = "openai/gpt-4o-mini"

# Values the offline server gives to fields of these names (what the examples need to
# produce a sensible run); any other string field gets a short text made from its name.
CANNED = {
    "expression": "152648 + 485",
    "answer": "Paris.",
    "thinking": "The question asks for a capital city; recall it, then answer briefly.",
}


def language_model():
    """A ``synalinks.LanguageModel``: the configured provider, or the offline server."""
    import synalinks

    model = os.environ.get("SYNALINKS_EXAMPLE_MODEL")
    if model:
        options = {}
        if os.environ.get("SYNALINKS_EXAMPLE_API_BASE"):
            options["api_base"] = os.environ["SYNALINKS_EXAMPLE_API_BASE"]
        return synalinks.LanguageModel(model=model, **options)
    server = OfflineServer.shared()
    return synalinks.LanguageModel(
        model=OFFLINE_MODEL, api_base=server.base_url, api_key="sk-offline", retry=1
    )


# -- the offline server -------------------------------------------------------------------
def _words(name):
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name or "")
    return [w.lower() for w in re.split(r"[^A-Za-z0-9]+", spaced) if w]


def _text(name, canned):
    return canned.get(name, "offline " + " ".join(_words(name) or ["value"]))


def instance_of(schema, name="value", root=None, canned=CANNED):
    """A JSON value valid for ``schema`` (objects, arrays, scalars, enums, $ref, anyOf)."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or not schema:
        return _text(name, canned)
    if "$ref" in schema:
        node = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        return instance_of(node, name, root, canned)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            branches = [b for b in schema[key] if b.get("type") != "null"] or schema[key]
            return instance_of(branches[0], name, root, canned)
    if "allOf" in schema:
        merged = {}
        for part in schema["allOf"]:
            value = instance_of(part, name, root, canned)
            if isinstance(value, dict):
                merged.update(value)
        return merged
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        return {key: instance_of(sub, key, root, canned) for key, sub in schema.get("properties", {}).items()}
    if kind == "array":
        count = max(schema.get("minItems", 1), 1)
        return [instance_of(schema.get("items", {}), name, root, canned) for _ in range(count)]
    if kind == "integer":
        return int(schema.get("minimum", 42))
    if kind == "number":
        return float(schema.get("minimum", 0.5))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _text(name, canned)


def _tokens(value):
    return max(1, len(json.dumps(value, sort_keys=True)) // 4)


def answer(body, ids):
    """The chat completion answering the request ``body``."""
    messages = body.get("messages") or []
    tools = body.get("tools") or []
    response_format = body.get("response_format") or {}
    schema = None
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
    tool_results = sum(m.get("role") == "tool" for m in messages)
    canned = dict(CANNED)
    computed = re.findall(r'"result"\s*:\s*(-?[0-9][0-9.e+-]*)', json.dumps(messages).replace('\\"', '"'))
    if computed:  # after a tool call: answer with what the tool computed
        canned["answer"] = f"The result is {computed[-1]}."
    message = {"role": "assistant", "content": None}
    finish_reason = "stop"
    if schema is not None:
        message["content"] = json.dumps(instance_of(schema, canned=canned))
    elif tools and not tool_results and body.get("tool_choice") != "none":
        function = tools[0]["function"]
        arguments = instance_of(function.get("parameters") or {})
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
        "model": OFFLINE_MODEL.split("/", 1)[1],
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class OfflineServer:
    """An OpenAI-compatible ``/v1/chat/completions`` endpoint on 127.0.0.1."""

    _shared = None
    _lock = threading.Lock()

    @classmethod
    def shared(cls):
        with cls._lock:
            if cls._shared is None:
                cls._shared = cls().start()
            return cls._shared

    def __init__(self):
        self._ids = itertools.count(1)
        self._server = None

    def start(self):
        ids = self._ids

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _reply(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._reply(404, {"error": {"message": self.path, "type": "not_found"}})
                    return
                try:
                    self._reply(200, answer(json.loads(raw or b"{}"), ids))
                except Exception as exc:  # a request this stand-in cannot answer
                    self._reply(400, {"error": {"message": repr(exc), "type": "invalid_request"}})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, name="offline-lm", daemon=True
        ).start()
        return self

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

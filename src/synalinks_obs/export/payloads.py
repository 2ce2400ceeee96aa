"""Captured payloads -> JSON text for span attributes, on the exporter thread.

``to_json`` turns the data models still held by reference (``tracing.capture``) into
their JSON, replaces values under secret-looking keys by ``[REDACTED]``
(``synalinks_obs.redaction``), serialises (orjson when it can) and truncates what exceeds
the size limit with a visible marker. Nothing here raises: a value that cannot be
serialised becomes a short placeholder.
"""

from __future__ import annotations

import json

from synalinks_obs.redaction import REDACTED, Redactor, redactor_for

TRUNCATION_MARKER = "...[truncated {n} chars]"
_PRIMITIVES = (str, int, float, bool, type(None))

try:  # synalinks depends on orjson; json is the fallback
    import orjson as _orjson
except Exception:  # pragma: no cover - orjson missing
    _orjson = None


def materialize(value, redactor: Redactor | None = None, _depth: int = 0):
    """Copy of a captured payload as plain JSON values: deferred data models turned
    into their JSON, values under secret-looking keys replaced by ``[REDACTED]``."""
    if value is None or isinstance(value, _PRIMITIVES):
        return value
    if _depth > 50:
        return "<too deep>"
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if redactor is not None and redactor.fragments and redactor.is_secret(key):
                out[key if isinstance(key, str) else str(key)] = REDACTED
            else:
                out[key if isinstance(key, str) else str(key)] = materialize(
                    item, redactor, _depth + 1
                )
        return out
    if isinstance(value, (list, tuple)):
        return [materialize(item, redactor, _depth + 1) for item in value]
    get_json = getattr(value, "get_json", None)
    if get_json is not None:
        try:
            return materialize(get_json(), redactor, _depth + 1)
        except Exception as exc:
            return f"<{type(value).__name__}: get_json failed: {type(exc).__name__}>"
    return _fallback(value)


def redact(value, fragments: tuple[str, ...]):
    """Copy of ``value`` with values under secret-looking keys replaced by ``[REDACTED]``."""
    return materialize(value, redactor_for(fragments))


def dumps(value) -> str:
    """JSON text of plain values (orjson when it can, json otherwise)."""
    if _orjson is not None:
        try:
            return _orjson.dumps(value, default=_fallback).decode()
        except Exception:
            pass
    return json.dumps(value, default=_fallback, ensure_ascii=False)


def truncate(text: str, max_chars: int) -> str:
    """``text`` itself, or a JSON string of its first ``max_chars`` characters and a
    ``...[truncated N chars]`` marker when it is longer (0: no limit)."""
    if max_chars and len(text) > max_chars:
        return json.dumps(
            text[:max_chars] + TRUNCATION_MARKER.format(n=len(text) - max_chars),
            ensure_ascii=False,
        )
    return text


def to_json(value, max_chars: int, fragments) -> str:
    """Serialise a captured payload for an MLflow span attribute (always valid JSON).

    ``fragments``: the secret key fragments (or a ``Redactor``). A payload longer than
    ``max_chars`` (0: no limit) is stored as a JSON string holding its first
    ``max_chars`` characters followed by ``...[truncated N chars]``.
    """
    redactor = fragments if isinstance(fragments, Redactor) else redactor_for(fragments)
    try:
        text = dumps(materialize(value, redactor))
    except Exception as exc:  # e.g. a dict mutated by the app while we read it
        return json.dumps(f"<not serialisable: {type(exc).__name__}>")
    return truncate(text, max_chars)


def _fallback(value):
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__}>"

"""Module inputs/outputs -> span payloads: capture on the calling thread, JSON later.

Two steps keep the calling thread cheap:

- ``capture_args`` / ``capture_kwargs`` / ``capture_value`` run inside the module call.
  They only take references: a data model's JSON dict (its schema for symbolic data
  models) and plain JSON values. No copying, no ``json.dumps``.
- ``to_json`` runs on the exporter thread. It redacts values under secret-looking keys,
  serialises, and truncates what exceeds the size limit with a visible marker.

Nothing here raises: a value that cannot be serialised becomes a short placeholder.
"""

from __future__ import annotations

import json

REDACTED = "[REDACTED]"
_PRIMITIVES = (str, int, float, bool, type(None))


def _symbolic_class():
    from synalinks.src.backend.common.symbolic_data_model import SymbolicDataModel

    return SymbolicDataModel


_SYMBOLIC = None


def capture_value(value):
    """Return ``(captured, is_symbolic)`` for one argument or output (no copies made)."""
    global _SYMBOLIC
    if _SYMBOLIC is None:
        _SYMBOLIC = _symbolic_class()
    if value is None or isinstance(value, _PRIMITIVES):
        return value, False
    if isinstance(value, _SYMBOLIC):
        return value.get_schema(), True
    get_json = getattr(value, "get_json", None)
    if get_json is not None:
        return get_json(), False
    if isinstance(value, (list, tuple)):
        items = []
        symbolic = False
        for item in value:
            captured, item_symbolic = capture_value(item)
            items.append(captured)
            symbolic = symbolic or item_symbolic
        return items, symbolic
    if isinstance(value, dict):
        return value, False
    return f"<{type(value).__name__}>", False


def capture_args(args) -> tuple[list, bool]:
    """Capture positional arguments; tell whether any was a symbolic data model."""
    items = []
    symbolic = False
    for arg in args:
        captured, arg_symbolic = capture_value(arg)
        items.append(captured)
        symbolic = symbolic or arg_symbolic
    return items, symbolic


def capture_kwargs(kwargs) -> dict:
    """Capture keyword arguments: data models as JSON, JSON values as is, others by type."""
    return {key: capture_value(value)[0] for key, value in kwargs.items()}


def redact(value, fragments: tuple[str, ...]):
    """Copy of ``value`` with values under secret-looking keys replaced by ``[REDACTED]``."""
    if not fragments:
        return value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            lowered = str(key).lower()
            if any(fragment in lowered for fragment in fragments):
                out[key] = REDACTED
            else:
                out[key] = redact(item, fragments)
        return out
    if isinstance(value, list):
        return [redact(item, fragments) for item in value]
    return value


def to_json(value, max_chars: int, fragments: tuple[str, ...]) -> str:
    """Serialise a captured payload for an MLflow span attribute (always valid JSON).

    A payload longer than ``max_chars`` (0: no limit) is stored as a JSON string holding
    its first ``max_chars`` characters followed by ``...[truncated N chars]``.
    """
    try:
        text = json.dumps(redact(value, fragments), default=_fallback, ensure_ascii=False)
    except Exception as exc:  # e.g. a dict mutated by the app while we read it
        return json.dumps(f"<not serialisable: {type(exc).__name__}>")
    if max_chars and len(text) > max_chars:
        return json.dumps(f"{text[:max_chars]}...[truncated {len(text) - max_chars} chars]")
    return text


def _fallback(value):
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__}>"

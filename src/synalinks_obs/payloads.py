"""Module inputs/outputs -> span payloads: capture on the calling thread, JSON later.

Two steps keep the calling thread cheap:

- ``capture_args`` / ``capture_kwargs`` / ``capture_value`` run inside the module call.
  They only take references: a pydantic data model itself (its ``get_json()`` is a
  ``model_dump``, done later), the JSON dict of other data models (a reference, or its
  schema for symbolic data models), plain JSON values. No copying, no ``json.dumps``.
- ``to_json`` runs on the exporter thread. It turns the data models still held into
  their JSON, redacts values under secret-looking keys, serialises, and truncates what
  exceeds the size limit with a visible marker.

Nothing here raises: a value that cannot be serialised becomes a short placeholder.
"""

from __future__ import annotations

import json
import re

REDACTED = "[REDACTED]"
TRUNCATION_MARKER = "...[truncated {n} chars]"
_PRIMITIVES = (str, int, float, bool, type(None))

try:  # synalinks depends on orjson; json is the fallback
    import orjson as _orjson
except Exception:  # pragma: no cover - orjson missing
    _orjson = None


class _Classes:
    symbolic = None  # synalinks' SymbolicDataModel
    deferred = ()  # data model classes whose get_json() is deferred to the exporter


_CLASSES = _Classes()


def _load_classes() -> None:
    from synalinks.src.backend.common.symbolic_data_model import SymbolicDataModel

    _CLASSES.symbolic = SymbolicDataModel
    try:
        from synalinks.src.backend.pydantic.core import DataModel

        _CLASSES.deferred = (DataModel,)
    except Exception:  # pragma: no cover - layout changed: capture eagerly
        _CLASSES.deferred = ()


def capture_value(value):
    """Return ``(captured, is_symbolic)`` for one argument or output (no copies made).

    A pydantic ``DataModel`` is kept as is (its JSON is computed on the exporter
    thread); other data models give their JSON dict (a reference), symbolic ones their
    schema; lists and tuples are captured item by item.
    """
    if value is None or isinstance(value, _PRIMITIVES):
        return value, False
    classes = _CLASSES
    if classes.symbolic is None:
        _load_classes()
    if isinstance(value, classes.deferred):
        return value, False
    if isinstance(value, classes.symbolic):
        return value.get_schema(), True
    get_json = getattr(value, "get_json", None)
    if get_json is not None:
        return get_json(), False  # JsonDataModel (a reference), Variable (scope-dependent)
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


# -- exporter thread ------------------------------------------------------------------

_WORD_BOUNDARY = re.compile(r"([a-z0-9])([A-Z])")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def _normalise_key(key) -> str:
    """``"X-Api-Key"``, ``"apiKey"``, ``"api key"`` -> ``"_x_api_key_"`` (word-delimited)."""
    text = _WORD_BOUNDARY.sub(r"\1_\2", str(key)).lower()
    return "_" + _NON_ALNUM.sub("_", text).strip("_") + "_"


class Redactor:
    """Decides which keys hold secrets: a fragment matches whole words of a key.

    ``token`` matches ``token``, ``access_token``, ``X-Auth-Token`` and ``authToken``
    but not ``max_tokens`` or ``tokenizer``; ``api_key`` matches ``openai_api_key`` and
    ``apiKey``. Decisions are cached per key.
    """

    def __init__(self, fragments):
        self.fragments = tuple(_normalise_key(f) for f in fragments if str(f).strip())
        self._cache: dict = {}

    def is_secret(self, key) -> bool:
        try:
            return self._cache[key]
        except KeyError:
            pass
        except TypeError:  # unhashable key
            return False
        norm = _normalise_key(key)
        secret = any(fragment in norm for fragment in self.fragments)
        if len(self._cache) < 10_000:
            self._cache[key] = secret
        return secret


_REDACTORS: dict = {}


def redactor_for(fragments) -> Redactor:
    fragments = tuple(fragments or ())
    found = _REDACTORS.get(fragments)
    if found is None:
        found = _REDACTORS[fragments] = Redactor(fragments)
    return found


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

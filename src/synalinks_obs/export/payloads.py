"""Captured payloads -> masked JSON text for span attributes, on the exporter thread.

``to_json`` turns the data models still held by reference (``tracing.capture``) into
their JSON, masks secrets (``synalinks_obs.redaction``: values under secret-looking keys,
``(name, value)`` pairs and ``{"name": ..., "value": ...}`` entries, known secret values,
credential patterns, the user's function: ``synalinks_obs.masking``), serialises (orjson when it can) and truncates
what exceeds the size limit with a visible marker. Nothing here raises: a value that
cannot be serialised becomes a short placeholder.

``masker_for(record, policy)`` gives a record the secret values already known in its
trace: those met under secret keys in its ancestors' inputs (a Generator's inputs are
rendered into its LM call's prompt) and in the records of the trace exported before it;
``remember`` adds what a record revealed to its trace.
"""

from __future__ import annotations

import json

from synalinks_obs.masking import Masker, Policy, is_secret_pair, mask_named_value
from synalinks_obs.redaction import REDACTED, Redactor, redactor_for, texts_in

TRUNCATION_MARKER = "...[truncated {n} chars]"
_PRIMITIVES = (str, int, float, bool, type(None))
_MAX_TRACE_SECRETS = 1_000

try:  # synalinks depends on orjson; json is the fallback
    import orjson as _orjson
except Exception:  # pragma: no cover - orjson missing
    _orjson = None


def _as_masker(masker) -> Masker | None:
    """A ``Masker`` from a masker, a ``Policy``, a ``Redactor`` or key fragments."""
    if masker is None or isinstance(masker, Masker):
        return masker
    if isinstance(masker, Policy):
        return masker.masker()
    if isinstance(masker, Redactor):
        return Policy(masker.fragments, ()).masker()
    return Policy(tuple(masker), ()).masker()


def materialize(value, masker=None, _depth: int = 0):
    """Copy of a captured payload as plain JSON values: deferred data models turned into
    their JSON, secrets masked (``masker``: a ``Masker``, ``Policy`` or ``Redactor``)."""
    masker = _as_masker(masker)
    return _materialize(value, masker, _depth)


def _materialize(value, masker, _depth: int):
    if value is None or isinstance(value, _PRIMITIVES):
        return masker.text(value) if masker is not None and isinstance(value, str) else value
    if _depth > 50:
        return "<too deep>"
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            name = key if isinstance(key, str) else str(key)
            if masker is not None and masker.fragments and masker.redactor.kind(key):
                plain = _materialize(item, None, _depth + 1)
                if masker.is_secret(key, plain):
                    masker.collect(plain)
                    out[name] = REDACTED
                else:
                    out[name] = plain
            else:
                out[name] = _materialize(item, masker, _depth + 1)
        return mask_named_value(out, masker) if masker is not None and masker.fragments else out
    if isinstance(value, (list, tuple)):
        if masker is not None and masker.fragments and len(value) == 2 and isinstance(value[0], str):
            plain = [value[0], _materialize(value[1], None, _depth + 1)]
            if is_secret_pair(plain, masker):
                return [masker.text(value[0]), REDACTED]
        return [_materialize(item, masker, _depth + 1) for item in value]
    get_json = getattr(value, "get_json", None)
    if get_json is not None:
        try:
            return _materialize(get_json(), masker, _depth + 1)
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


def to_json(value, max_chars: int, masker) -> str:
    """Serialise a captured payload for an MLflow span attribute (always valid JSON).

    ``masker``: a ``Masker`` (or a ``Policy``, ``Redactor`` or key fragments). Values it
    meets under secret keys are masked in the whole payload, then the user's function
    sees it. A payload longer than ``max_chars`` (0: no limit) is stored as a JSON string
    holding its first ``max_chars`` characters followed by ``...[truncated N chars]``.
    """
    masker = _as_masker(masker)
    try:
        known = len(masker.found)
        plain = _materialize(value, masker, 0)
        if len(masker.found) > known:  # secrets met in this payload: masked everywhere in it
            plain = masker.plain(plain)
        text = dumps(masker.policy.finish(plain))
    except Exception as exc:  # e.g. a dict mutated by the app while we read it
        return json.dumps(f"<not serialisable: {type(exc).__name__}>")
    return truncate(text, max_chars)


def mask_text(text, masker):
    """An exception message, stack trace or LM error text, masked (None stays None)."""
    if text is None:
        return None
    masked = masker.policy.finish(masker.text(text))
    return masked if isinstance(masked, str) else str(masked)


# -- secrets known in a trace -------------------------------------------------------------

class _Collector(Masker):
    """Only collects the values met under secret keys (no text masking: faster)."""

    __slots__ = ()

    def text(self, text: str) -> str:
        return text


def _input_secrets(record, policy: Policy) -> frozenset:
    """Values met under secret keys in a record's inputs, and in its ancestors' (cached
    on the record: computed once, on the exporter thread)."""
    chain = []
    node = record
    while node is not None and getattr(node, "secrets", None) is None:
        chain.append(node)
        node = node.parent
    inherited = node.secrets if node is not None else frozenset()
    for node in reversed(chain):
        masker = _Collector(policy)
        for payload in (getattr(node, "inputs", None), getattr(node, "kwargs", None)):
            if payload is not None:
                _materialize(payload, masker, 0)
        node.secrets = inherited = inherited | masker.found if masker.found else inherited
    return inherited


def masker_for(record, policy: Policy) -> Masker:
    """The ``Masker`` of a record: its trace's known secrets and its ancestors' inputs'."""
    if not policy.redactor.fragments:
        return Masker(policy)
    known = set(getattr(record.trace, "secrets", None) or ())
    if record.parent is not None:
        known |= _input_secrets(record.parent, policy)
    return Masker(policy, known)


def remember(record, masker: Masker) -> None:
    """Add the secrets a record revealed to its trace (masked in later records too)."""
    secrets = getattr(record.trace, "secrets", None)
    if masker.found and secrets is not None and len(secrets) < _MAX_TRACE_SECRETS:
        secrets.update(masker.found)


def _fallback(value):
    try:
        return repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


__all__ = ["materialize", "to_json", "truncate", "dumps", "redact", "mask_text", "masker_for",
           "remember", "texts_in", "TRUNCATION_MARKER"]

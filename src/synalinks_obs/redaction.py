"""Which stored values are secrets: key fragments, matched as whole words of a key.

``Redactor("token")`` matches ``token``, ``access_token``, ``X-Auth-Token`` and
``authToken`` but not ``max_tokens`` or ``tokenizer``; ``api_key`` matches
``openai_api_key`` and ``apiKey``. Values under a matching key are stored as
``[REDACTED]`` (see ``export.payloads``). ``mask_query`` masks secret-looking query
parameters of a URL for display. Standard library only.
"""

from __future__ import annotations

import re

REDACTED = "[REDACTED]"

_WORD_BOUNDARY = re.compile(r"([a-z0-9])([A-Z])")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")


def _normalise_key(key) -> str:
    """``"X-Api-Key"``, ``"apiKey"``, ``"api key"`` -> ``"_x_api_key_"`` (word-delimited)."""
    text = _WORD_BOUNDARY.sub(r"\1_\2", str(key)).lower()
    return "_" + _NON_ALNUM.sub("_", text).strip("_") + "_"


class Redactor:
    """Decides which keys hold secrets (decisions cached per key)."""

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
    """The (cached) ``Redactor`` of a set of key fragments."""
    fragments = tuple(fragments or ())
    found = _REDACTORS.get(fragments)
    if found is None:
        found = _REDACTORS[fragments] = Redactor(fragments)
    return found


_DEFAULT_QUERY_SECRETS = ("key", "token", "secret", "password", "passwd", "signature", "auth")


def mask_query(query: str) -> str:
    """``a=1&api_key=sk-123`` -> ``a=1&api_key=***`` (secret-looking parameter names)."""
    redactor = redactor_for(_DEFAULT_QUERY_SECRETS)
    parts = []
    for item in query.split("&"):
        name, sep, value = item.partition("=")
        parts.append(f"{name}{sep}***" if sep and value and redactor.is_secret(name) else item)
    return "&".join(parts)

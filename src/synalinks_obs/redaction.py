"""What is a secret, and masking it in text: the rules every stored or printed value obeys.

- **Keys.** ``Redactor(fragments)`` matches a key holding any fragment as whole words,
  separators and case ignored, singular or plural: ``token`` matches ``access_token``,
  ``X-Auth-Token`` and ``authToken``; ``api_key`` matches ``openai_api_key``, ``apiKey``,
  ``apikey`` and ``api_keys``; ``credential`` matches ``credentials``. Not ``tokenizer``,
  ``author`` or ``passage``. A value holding no text (a number, a boolean: ``max_tokens:
  256``, ``total_tokens``) is never a secret. The same keys are found in text too
  (``mask_text``): ``api_key=...`` in a URL, ``"access_token": "..."`` rendered into a
  prompt, ``Authorization: Bearer ...`` in a header dump.
- **Patterns**: values that are credentials whatever their key (``sk-...``, ``Bearer ...``,
  a URL's ``user:password@``, JWTs, cloud and forge tokens, private key blocks),
  ``DEFAULT_PATTERNS``, configurable; a pattern's ``secret`` group, if any, is the part
  masked.
- **Known values**: values seen under a secret key elsewhere, and the values of
  secret-looking environment variables (``MLFLOW_TRACKING_PASSWORD``,
  ``MLFLOW_TRACKING_TOKEN``, ``OPENAI_API_KEY``...: ``environment_secrets``).

``scrub`` applies them to every line synalinks-obs prints; ``masking`` applies them (and
the user's own function) to every value it stores. Standard library only.
"""

from __future__ import annotations

import json
import os
import re

REDACTED = "[REDACTED]"
MIN_KNOWN_CHARS = 6  # shorter values seen under a secret key are not searched elsewhere
_MAX_KNOWN = 1_000

DEFAULT_KEYS = (
    "api_key", "access_key", "private_key", "auth", "authorization", "password", "passwd",
    "passphrase", "secret", "token", "credential", "cookie",
)
DEFAULT_PATTERNS = (
    r"(?i)\bbearer\s+(?P<secret>[A-Za-z0-9._~+/=-]{8,})",
    r"\b(?P<secret>sk[-_](?:proj[-_]|ant[-_]|live[-_]|test[-_])?[A-Za-z0-9_-]{16,})",
    r"(?i)\b[a-z][a-z0-9+.-]*://(?P<secret>[^/\s:@]+:[^/\s@]+)@",
    r"\b(?P<secret>eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})",
    r"\b(?P<secret>(?:AKIA|ASIA)[0-9A-Z]{16})\b",
    r"\b(?P<secret>gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})",
    r"\b(?P<secret>xox[abprs]-[A-Za-z0-9-]{10,})",
    r"\b(?P<secret>AIza[0-9A-Za-z_-]{35})",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
)

_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_KEY_CHARS = re.compile(r"[A-Za-z0-9_.-]")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_SEPARATOR = re.compile(r"""(\\?["'])?[ \t]*[:=][ \t]*(\\?["'])?""")
_BARE_VALUE = re.compile(r"""(?i:(?:bearer|basic|token|digest)[ \t]+)?[^\s"'\\&,;}\]<>)]+""")
_NO, _EXACT, _PLURAL = 0, 1, 2


def _words(key) -> list[str]:
    """``"X-Api-Keys"``, ``"apiKeys"`` -> ``["x", "api", "keys"]``."""
    return [w for w in _NON_ALNUM.split(_CAMEL.sub(r"\1 \2", str(key)).lower()) if w]


def _has_text(value) -> bool:
    if isinstance(value, (str, bytes)):
        return bool(value)
    if isinstance(value, dict):
        return any(_has_text(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_text(v) for v in value)
    return value is not None and not isinstance(value, (int, float, bool))


def texts_in(value, out: set, _depth: int = 0) -> None:
    """Add the strings of a plain value (dict values, list items) to ``out``."""
    if isinstance(value, str):
        if len(value) >= MIN_KNOWN_CHARS and len(out) < _MAX_KNOWN and not value.startswith(("[REDACTED", "[DROPPED")):
            out.add(value)
    elif _depth < 20 and isinstance(value, dict):
        for item in value.values():
            texts_in(item, out, _depth + 1)
    elif _depth < 20 and isinstance(value, (list, tuple)):
        for item in value:
            texts_in(item, out, _depth + 1)


class Redactor:
    """Decides which keys hold secrets (decisions cached per key); see the module."""

    def __init__(self, fragments):
        compact = ("".join(_words(f)) for f in fragments if str(f).strip())
        self.fragments = tuple(dict.fromkeys(c for c in compact if c))
        self._set = frozenset(self.fragments)
        self._cache: dict = {}
        self.text_finder = (
            re.compile("(?i)" + "|".join(_fragment_regex(f) for f in fragments if _words(f)))
            if self.fragments else None
        )
        # Where a fragment may start in lower-cased text: its first word (found with
        # str.find, fast), then the whole fragment matched there.
        self.matchers = tuple(
            (_words(f)[0], re.compile(_fragment_regex(f))) for f in fragments if _words(f)
        )

    def _kind(self, key) -> int:
        try:
            return self._cache[key]
        except KeyError:
            pass
        except TypeError:  # unhashable key
            return _NO
        words = _words(key)[:16]
        kind = _NO
        for i in range(len(words)):
            run = ""
            for j in range(i, min(len(words), i + 4)):
                run += words[j]
                if run in self._set:
                    kind = _EXACT
                    break
                if run.endswith("s") and (run[:-1] in self._set or run.endswith("es") and run[:-2] in self._set):
                    kind = _PLURAL
            if kind == _EXACT:
                break
        if len(self._cache) < 10_000:
            self._cache[key] = kind
        return kind

    def is_secret(self, key, value=REDACTED) -> bool:
        """Whether ``key`` names a secret; with ``value``, whether that value is one (a
        value without text, such as ``max_tokens: 256``, never is)."""
        return bool(self.fragments) and self._kind(key) != _NO and _has_text(value)

    def kind(self, key) -> int:
        return self._kind(key) if self.fragments else _NO

    def is_secret_text(self, key, value: str) -> bool:
        """For ``key=value`` found in text: a number is a count under a plural key
        (``max_tokens=256``), a secret under a singular one (``pin=1234``)."""
        kind = self.kind(key)
        return kind == _EXACT or kind == _PLURAL and not _NUMBER.fullmatch(value)


def _fragment_regex(fragment) -> str:
    return r"[_\-. ]?".join(re.escape(w) for w in _words(fragment))


_REDACTORS: dict = {}


def redactor_for(fragments) -> Redactor:
    """The (cached) ``Redactor`` of a set of key fragments."""
    fragments = tuple(fragments or ())
    found = _REDACTORS.get(fragments)
    if found is None:
        found = _REDACTORS[fragments] = Redactor(fragments)
    return found


def compile_patterns(patterns) -> tuple:
    """Compiled patterns; raises ``re.error`` naming the first bad one."""
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise re.error(f"{pattern!r}: {exc}") from None
    return tuple(compiled)


# A text without the literal cannot match the default pattern (a fast pre-check: most
# texts have none of them); patterns of yours are always run.
_HINTS = dict(zip(DEFAULT_PATTERNS, (
    ("bearer",), ("sk-", "sk_"), ("://",), ("eyj",), ("akia", "asia"),
    ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"), ("xox",), ("aiza",), ("private key",),
), strict=True))


def hinted(patterns) -> tuple:
    return tuple((pattern, _HINTS.get(pattern.pattern)) for pattern in patterns)


def _mask_pattern(pattern, text: str) -> str:
    if "secret" in pattern.groupindex:
        def replace(match):
            start, end = match.span("secret")
            whole = match.group(0)
            base = match.start()
            return whole[: start - base] + REDACTED + whole[end - base:]
        return pattern.sub(replace, text)
    return pattern.sub(REDACTED, text)


def _fragment_hits(redactor: Redactor, low: str):
    for word, matcher in redactor.matchers:
        at = low.find(word)
        while at >= 0:
            hit = matcher.match(low, at)
            if hit is not None:
                yield hit.span()
            at = low.find(word, at + 1)


def _mask_keys_in_text(redactor: Redactor, text: str, low: str) -> str:
    """``api_key=...``, ``"access_token": "..."``, ``Authorization: Bearer ...`` -> masked."""
    finder = redactor.text_finder
    if finder is None or ("=" not in text and ":" not in text):
        return text
    if len(low) == len(text):
        hits = sorted(_fragment_hits(redactor, low))
    else:  # lower() changed the length (rare letters): the slower case-blind search
        hits = [hit.span() for hit in finder.finditer(text)]
    if not hits:
        return text
    parts, last = [], 0
    for start, end in hits:
        if start < last:
            continue
        while start > 0 and _KEY_CHARS.match(text, start - 1):
            start -= 1
        while end < len(text) and _KEY_CHARS.match(text, end):
            end += 1
        key = text[start:end]
        if redactor.kind(key) == _NO:
            continue
        sep = _SEPARATOR.match(text, end)
        if sep is None:
            continue
        value_start = sep.end()
        quote = sep.group(2)
        if quote:
            close = text.find(quote, value_start)
            value_end = close if close >= 0 else len(text)
        else:
            value = _BARE_VALUE.match(text, value_start)
            value_end = value.end() if value else value_start
        value = text[value_start:value_end]
        if not value or text.startswith(REDACTED, value_start) or not redactor.is_secret_text(key, value):
            continue
        parts.append(text[last:value_start])
        parts.append(REDACTED)
        last = value_end
    if not parts:
        return text
    parts.append(text[last:])
    return "".join(parts)


def _escaped(secret: str) -> str | None:
    """The JSON-escaped form of a value, when it differs (quotes, backslashes...)."""
    if '"' in secret or "\\" in secret or any(ord(c) < 32 for c in secret):
        return json.dumps(secret, ensure_ascii=False)[1:-1]
    return None


def environment_secrets(redactor: Redactor | None = None) -> frozenset:
    """Values of secret-looking environment variables (``*_TOKEN``, ``*_PASSWORD``...)."""
    redactor = redactor or redactor_for(DEFAULT_KEYS)
    found = set()
    for name, value in os.environ.items():
        if len(value) >= MIN_KNOWN_CHARS and redactor.kind(name) == _EXACT:
            found.add(value)
    return frozenset(found)


def mask_text(text: str, redactor: Redactor, patterns: tuple, secrets=frozenset()) -> str:
    """``text`` with the ``secrets`` values (and their JSON-escaped forms), secret
    ``key=value`` pairs and matches of ``patterns`` (``compile_patterns`` +
    ``hinted``) masked."""
    if not text or not isinstance(text, str):
        return text
    if secrets:
        for secret in sorted(secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, REDACTED)
            escaped = _escaped(secret)
            if escaped is not None and escaped in text:
                text = text.replace(escaped, REDACTED)
    low = text.lower()
    text = _mask_keys_in_text(redactor, text, low)
    if len(text) >= 12:
        for pattern, hint in patterns:
            if hint is None or any(map(low.__contains__, hint)):
                text = _mask_pattern(pattern, text)
    return text


# -- what is printed --------------------------------------------------------------------

def scrub(text: str) -> str:
    """A line about to be printed or logged, without credentials: URL userinfo, token
    patterns, secret ``key=value`` pairs and the values of secret environment variables."""
    try:
        redactor = redactor_for(DEFAULT_KEYS)
        return mask_text(str(text), redactor, _default_patterns(), environment_secrets(redactor))
    except Exception:
        return text


def _default_patterns() -> tuple:
    found = _DEFAULT_COMPILED.get("patterns")
    if found is None:
        found = _DEFAULT_COMPILED["patterns"] = hinted(compile_patterns(DEFAULT_PATTERNS))
    return found


_DEFAULT_COMPILED: dict = {}


def mask_query(query: str) -> str:
    """``a=1&api_key=sk-123`` -> ``a=1&api_key=***`` (secret-looking parameter names)."""
    redactor = redactor_for(DEFAULT_KEYS + ("key", "signature"))
    parts = []
    for item in query.split("&"):
        name, sep, value = item.partition("=")
        parts.append(f"{name}{sep}***" if sep and value and redactor.is_secret_text(name, value) else item)
    return "&".join(parts)

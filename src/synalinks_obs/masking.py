"""How what synalinks-obs stores is masked: a ``Policy`` per settings, a ``Masker`` per record.

``Policy`` (from the settings, ``policy_for``): the secret keys and value patterns of
``synalinks_obs.redaction``, the values of secret-looking environment variables, and the
user's function (``enable(redact=fn)``, ``SYNALINKS_OBS_REDACTOR=pkg.mod:fn``), which
receives each value about to be stored and returns what to store; when it raises, the
value is dropped (``DROPPED``), never stored unmasked, and that is said once.

``Masker``: one record's masking, the policy plus the secret values already known in its
trace (a Generator renders its inputs into the LM prompt: the values met under secret keys
in its inputs are masked in the LM call's messages too); what it meets under secret keys,
at any depth, in ``(name, value)`` pairs and ``{"name": ..., "value": ...}`` entries, is
collected in ``found``. Standard library only.
"""

from __future__ import annotations

from synalinks_obs.redaction import (
    DEFAULT_KEYS,
    DEFAULT_PATTERNS,
    REDACTED,
    compile_patterns,
    environment_secrets,
    hinted,
    mask_text,
    redactor_for,
    texts_in,
)

DROPPED = "[DROPPED: the redact function failed]"


class Policy:
    """How to mask what is stored: key fragments, value patterns, the user's function."""

    def __init__(self, fragments=DEFAULT_KEYS, patterns=DEFAULT_PATTERNS, user=None):
        self.redactor = redactor_for(fragments)
        self.patterns = compile_patterns(patterns)
        self._patterns = hinted(self.patterns)
        self.user = user  # redact function (see ``user_function``), or None
        self.environment = environment_secrets(self.redactor)

    def masker(self, known=()) -> Masker:
        return Masker(self, known)

    def text(self, text: str, known=()) -> str:
        """``text`` with known secret values, secret ``key=value`` pairs and pattern
        matches masked (the user's function is not applied: see ``finish``)."""
        secrets = self.environment.union(known) if known else self.environment
        return mask_text(text, self.redactor, self._patterns, secrets)

    def finish(self, value):
        """The user's function applied to a value about to be stored (``DROPPED`` when
        it raises)."""
        return self.user(value) if self.user is not None else value

    def value(self, value):
        """A plain value (JSON data) fully masked: keys, known values, patterns, user."""
        masker = self.masker()
        return self.finish(masker.plain(value))

    def param(self, key: str, value: str) -> str:
        """A run param or tag value, masked (its key may name a secret)."""
        if self.redactor.is_secret(key, value):
            return REDACTED
        masked = self.finish(self.text(value))
        return masked if isinstance(masked, str) else str(masked)


class Masker:
    """One record's masking: the policy plus the secret values known in its trace; the
    values met under secret keys while masking are collected in ``found``."""

    __slots__ = ("policy", "redactor", "known", "found")

    def __init__(self, policy: Policy, known=()):
        self.policy = policy
        self.redactor = policy.redactor
        self.known = set(known)
        self.found: set = set()

    @property
    def fragments(self):
        return self.redactor.fragments

    def is_secret(self, key, value=REDACTED) -> bool:
        return self.redactor.is_secret(key, value)

    def collect(self, value) -> None:
        texts_in(value, self.found)

    def text(self, text: str) -> str:
        return self.policy.text(text, self.known | self.found if self.found else self.known)

    def plain(self, value, _depth: int = 0):
        """A masked copy of plain JSON data (dicts, lists, strings, numbers)."""
        if isinstance(value, str):
            return self.text(value)
        if _depth > 50:
            return "<too deep>"
        if isinstance(value, dict):
            out = {}
            for key, item in value.items():
                if self.is_secret(key, item):
                    self.collect(item)
                    out[str(key)] = REDACTED
                else:
                    out[str(key)] = self.plain(item, _depth + 1)
            return mask_named_value(out, self)
        if isinstance(value, (list, tuple)):
            if is_secret_pair(value, self):
                return [self.plain(value[0], _depth + 1), REDACTED]
            return [self.plain(item, _depth + 1) for item in value]
        return value

    def remask(self, value):
        """``value`` (already masked) again, with the values found since."""
        return self.plain(value)


_NAME_FIELDS = ("name", "key", "header", "field")
_VALUE_FIELDS = ("value", "val")


def is_secret_pair(items, masker) -> bool:
    """``("Authorization", "Bearer x")``: a (name, value) pair whose name is a secret."""
    if len(items) != 2 or not isinstance(items[0], str) or not masker.is_secret(items[0], items[1]):
        return False
    masker.collect(items[1])
    return True


def mask_named_value(entry: dict, masker):
    """``{"name": "api_key", "value": "..."}`` -> the value masked (headers, form fields)."""
    if len(entry) > 6:
        return entry
    name = next((entry[f] for f in _NAME_FIELDS if isinstance(entry.get(f), str)), None)
    if name is None:
        return entry
    for field in _VALUE_FIELDS:
        if field in entry and masker.is_secret(name, entry[field]):
            masker.collect(entry[field])
            entry[field] = REDACTED
    return entry


# -- the user's function ----------------------------------------------------------------

class UserFunction:
    """The user's redact function, made safe: an error drops the value, said once."""

    def __init__(self, function, name: str, say):
        self.function = function
        self.name = name
        self._say = say
        self.failed = False

    def __call__(self, value):
        try:
            return self.function(value)
        except Exception as exc:  # its message may hold the value: only the type is said
            if not self.failed:
                self.failed = True
                self._say(
                    f"synalinks-obs: the redact function {self.name} raised {type(exc).__name__}; "
                    f"the values it failed on are stored as {DROPPED!r}, never unmasked"
                )
            return DROPPED


def user_function(setting, say):
    """The ``redact`` setting (a callable or ``"package.module:function"``) as a
    ``UserFunction``; one that cannot be loaded drops every value (and says so once)."""
    if setting is None:
        return None
    if callable(setting):
        name = getattr(setting, "__qualname__", None) or repr(setting)
        return UserFunction(setting, name, say)
    text = str(setting).strip()
    if not text:
        return None
    module_name, _, attribute = text.partition(":")
    try:
        if not module_name or not attribute:
            raise ValueError("expected package.module:function")
        import importlib

        target = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
        if not callable(target):
            raise TypeError(f"{text} is not callable")
    except Exception as exc:
        say(
            f"synalinks-obs: SYNALINKS_OBS_REDACTOR={text!r} cannot be loaded "
            f"({type(exc).__name__}: {exc}); every value is stored as {DROPPED!r} until it is fixed"
        )
        return lambda value: DROPPED
    return UserFunction(target, text, say)


_POLICIES: dict = {}


def policy_for(settings, say=None) -> Policy:
    """The (cached) ``Policy`` of a ``Settings`` object: its key fragments, patterns and
    user function, and the secret environment variables' values of now."""
    fragments = tuple(settings.redact_key_fragments)
    patterns = tuple(settings.redact_patterns)
    user = getattr(settings, "redact", None)
    environment = environment_secrets(redactor_for(fragments))
    try:
        key = (fragments, patterns, user, environment)
        hash(key)
    except TypeError:
        key = (fragments, patterns, id(user), environment)
    found = _POLICIES.get(key)
    if found is None:
        if say is None:
            from synalinks_obs import reporting

            say = reporting.say_once
        found = Policy(fragments, patterns, user_function(user, say))
        if len(_POLICIES) > 32:
            _POLICIES.clear()
        _POLICIES[key] = found
    return found

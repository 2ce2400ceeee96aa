"""Every synalinks-obs option in one validated pydantic model.

Precedence: explicit arguments (``enable(...)``, ``python -m synalinks_obs.run`` flags),
then the environment (``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME`` and our own
``SYNALINKS_OBS_*`` variables), then the defaults below.

A bad explicit argument raises ``SettingsError`` (a ``ValueError``) with one line naming
the setting, the value and what is allowed. A bad *environment* value must not break the
app: ``load_settings`` reports it in one line and falls back to that setting's default.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from synalinks_obs import reporting
from synalinks_obs.redaction import DEFAULT_KEYS, DEFAULT_PATTERNS, compile_patterns

ENV_PREFIX = "SYNALINKS_OBS_"
DEFAULT_EXPERIMENT = "synalinks_traces"
# Program-building (symbolic) traces go to "<experiment>-build" unless SYMBOLIC_TRACES says
# otherwise: "build" (that companion), "inline" (the tracing experiment), "off" (none).
BUILD_SUFFIX = "-build"
SYMBOLIC_TRACES = ("build", "inline", "off")
DEFAULT_REDACT_KEYS = DEFAULT_KEYS
DEFAULT_REDACT_PATTERNS = DEFAULT_PATTERNS

# Settings read from a variable that does not follow the SYNALINKS_OBS_<FIELD> form.
_ENV_ALIASES = {
    "tracking_uri": "MLFLOW_TRACKING_URI",
    "experiment_name": "MLFLOW_EXPERIMENT_NAME",
    "redact": "SYNALINKS_OBS_REDACTOR",
}


class SettingsError(ValueError):
    """A setting has a value that is not allowed; the message is one line."""


class Settings(BaseSettings):
    """synalinks-obs configuration (see the README's configuration table)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", validate_default=True, populate_by_name=True
    )

    tracking_uri: str | None = Field(
        default=None,
        validation_alias="MLFLOW_TRACKING_URI",
        description="MLflow tracking URI; default: MLflow's own default store.",
    )
    experiment_name: str = Field(
        default=DEFAULT_EXPERIMENT,
        validation_alias="MLFLOW_EXPERIMENT_NAME",
        description="MLflow experiment that receives the traces.",
        min_length=1,
    )
    capture_payloads: bool = Field(
        default=True, description="Record module inputs and outputs on spans."
    )
    max_payload_chars: int = Field(
        default=20_000, ge=0, description="Longest inputs/outputs JSON kept per span (0: no limit)."
    )
    redact_keys: str = Field(
        default=",".join(DEFAULT_REDACT_KEYS),
        description="Comma-separated key fragments (whole words, any case, singular or plural) "
        "whose values are stored as '[REDACTED]', in data and in text (key=value).",
    )
    redact_patterns: Annotated[list[str], NoDecode] = Field(
        default=list(DEFAULT_REDACT_PATTERNS),
        description="Regular expressions of values that are secrets whatever their key (a "
        "JSON list; the 'default' entry stands for the built-in ones; [] turns them off).",
    )
    redact: Callable[[Any], Any] | str | None = Field(
        default=None,
        validation_alias="SYNALINKS_OBS_REDACTOR",
        description="Your mask function, applied to every value before it is stored: a "
        "callable, or 'package.module:function'.",
    )
    log_training_examples: bool = Field(
        default=True,
        description="Keep the few-shot examples (taken from the training data) in a run's "
        "model/state_tree.json (redacted); false leaves them out.",
    )
    sample_rate: float | None = Field(
        default=None, ge=0.0, le=1.0,
        description="Fraction of top-level calls traced (whole trees); unset: MLflow's "
        "MLFLOW_TRACE_SAMPLING_RATIO, else 1.0.",
    )
    symbolic_traces: str = Field(
        default="build",
        description="Where program-building (symbolic) traces go: build (the experiment "
        "named after the tracing one with a '-build' suffix), inline (the tracing "
        "experiment), off (not recorded).",
    )
    autolog_training: bool = Field(
        default=True, description="Log fit()/evaluate() to MLflow when tracing is on."
    )
    flush_timeout: float = Field(
        # A new sqlite store's first-time set-up alone can take several seconds.
        default=30.0, ge=0.0, description="Seconds the exit flush may take at most."
    )
    max_queue_spans: int = Field(
        default=100_000, ge=1, description="Finished spans buffered before new ones are dropped."
    )
    export_interval: float = Field(
        default=0.5, gt=0.0, description="Seconds between two background exports."
    )
    export_process: bool = Field(
        default=True,
        description="Write spans to MLflow from a separate process (another core); "
        "false: from a thread of the app's process.",
    )
    spool_dir: str | None = Field(
        default=None,
        description="A directory where spans not written at exit are kept, and written by "
        "the next process that traces into the same store (or `python -m synalinks_obs "
        "flush-spool`); unset: they are counted and dropped.",
    )
    log_level: str = Field(default="WARNING", description="Level of the 'synalinks_obs' logger.")
    strict: bool = Field(
        default=False,
        description="Raise synalinks-obs' own internal errors instead of logging them (tests).",
    )

    @field_validator("tracking_uri", mode="before")
    @classmethod
    def _empty_uri_is_default(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("tracking_uri")
    @classmethod
    def _parseable_uri(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from urllib.parse import urlparse

        parsed = urlparse(value)
        if parsed.scheme in ("http", "https") and not parsed.netloc:
            raise ValueError("an http(s) URI needs a host, e.g. http://127.0.0.1:5000")
        if " " in value.strip():
            raise ValueError("a URI cannot contain spaces")
        return value

    @field_validator("spool_dir", mode="before")
    @classmethod
    def _usable_spool_dir(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        path = os.path.abspath(os.path.expanduser(str(value).strip()))
        if os.path.exists(path) and not os.path.isdir(path):
            raise ValueError("it is a file, not a directory: give a directory path (created if missing)")
        parent = path
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ValueError(f"{parent} is not writable by this user: give a directory you can write")
        return path

    @field_validator("redact_keys", mode="before")
    @classmethod
    def _join_keys(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple, set)):
            return ",".join(str(k) for k in value)
        return value

    @field_validator("redact_patterns", mode="before")
    @classmethod
    def _pattern_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if not text:
                return []
            try:
                value = json.loads(text)
            except ValueError:
                raise ValueError('use a JSON list of regular expressions, e.g. ["default", "acct-[0-9]{8}"]') from None
        if isinstance(value, (list, tuple)):
            expanded = []
            for item in value:
                if item == "default":
                    expanded.extend(DEFAULT_REDACT_PATTERNS)
                else:
                    expanded.append(item)
            return list(dict.fromkeys(expanded))
        return value

    @field_validator("redact_patterns")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        import re

        try:
            compile_patterns(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @property
    def redact_key_fragments(self) -> tuple[str, ...]:
        """The lower-cased key fragments to redact."""
        return tuple(k.strip().lower() for k in self.redact_keys.split(",") if k.strip())

    @field_validator("symbolic_traces")
    @classmethod
    def _known_symbolic_mode(cls, value: str) -> str:
        mode = value.strip().lower()
        if mode not in SYMBOLIC_TRACES:
            raise ValueError(f"use one of {', '.join(SYMBOLIC_TRACES)}")
        return mode

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("use one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level


MLFLOW_SAMPLING_ENV = "MLFLOW_TRACE_SAMPLING_RATIO"


# What a setting whose default is "unset" falls back to, in the "using the default" line.
_UNSET_MEANS = {
    "sample_rate": "(unset: MLflow's MLFLOW_TRACE_SAMPLING_RATIO, else 1.0)",
    "spool_dir": "(unset: no spool)",
}


def effective_sample_rate(settings: Settings, report=None) -> float:
    """The fraction of traces kept: ours when set (``SYNALINKS_OBS_SAMPLE_RATE``,
    ``enable(sample_rate=...)``), else MLflow's ``MLFLOW_TRACE_SAMPLING_RATIO``, else 1.0.

    One decision per trace, taken at its root: the two rates never multiply. When both
    are set and differ, one line says which one applies to Synalinks traces."""
    _report = report or reporting.say_once
    text = os.environ.get(MLFLOW_SAMPLING_ENV, "").strip()
    mlflow_rate = None
    if text:
        try:
            mlflow_rate = float(text)
        except ValueError:
            mlflow_rate = None
        if mlflow_rate is None or not 0.0 <= mlflow_rate <= 1.0:
            if settings.sample_rate is None:
                _report(f"synalinks-obs: {MLFLOW_SAMPLING_ENV}={text!r} is not a number between 0 and 1; "
                        "every trace is kept (as MLflow does)")
            mlflow_rate = None
    if settings.sample_rate is None:
        return 1.0 if mlflow_rate is None else mlflow_rate
    if mlflow_rate is not None and mlflow_rate != settings.sample_rate:
        _report(f"synalinks-obs: traces of Synalinks calls are sampled at {settings.sample_rate:g} "
                f"({ENV_PREFIX}SAMPLE_RATE / sample_rate), not at {MLFLOW_SAMPLING_ENV}={mlflow_rate:g}; "
                "MLflow spans opened inside them follow the same decision")
    return settings.sample_rate


def _env_name(field: str) -> str:
    return _ENV_ALIASES.get(field, ENV_PREFIX + field.upper())


def _one_line(error: dict, source: str) -> str:
    field = str(error["loc"][0]) if error.get("loc") else "?"
    name = _env_name(field) if source == "env" else field
    value = error.get("input")
    message = error.get("msg", "invalid value").removeprefix("Value error, ")
    allowed = Settings.model_fields[field].description if field in Settings.model_fields else ""
    return f"synalinks-obs: {name}={value!r} is not valid: {message} ({allowed})"


def _known_env_keys() -> set[str]:
    return {_env_name(f) for f in Settings.model_fields}


def load_settings(report=None, **overrides: Any) -> Settings:
    """Build the settings: ``overrides`` (None means 'not given'), then env, then defaults.

    Raises ``SettingsError`` for a bad override; reports a bad or unknown environment
    variable (one line each, saying which value is used instead) and uses the default
    for it. ``report(line)`` receives those lines (default: once each on stderr).
    """
    _report = report or reporting.say_once
    explicit = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(explicit) - set(Settings.model_fields))
    if unknown:
        raise SettingsError(
            f"synalinks-obs: unknown setting {unknown[0]!r}; "
            f"known settings: {', '.join(Settings.model_fields)}"
        )
    for key in sorted(os.environ):
        if key.startswith(ENV_PREFIX) and key not in _known_env_keys():
            _report(f"synalinks-obs: unknown variable {key} (ignored); known: "
                    + ", ".join(sorted(k for k in _known_env_keys() if k.startswith(ENV_PREFIX))))
    bad_env: set[str] = set()
    while True:
        try:
            # Fields with a bad environment value are given their default explicitly.
            defaults = {f: Settings.model_fields[f].get_default() for f in bad_env}
            return Settings(**{**defaults, **explicit})
        except ValidationError as exc:
            errors = exc.errors()
            progressed = False
            for error in errors:
                field = str(error["loc"][0]) if error.get("loc") else ""
                field = _field_for_loc(field)
                if field in explicit:
                    raise SettingsError(_one_line({**error, "loc": (field,)}, "arg")) from None
                if field and field not in bad_env:
                    default = Settings.model_fields[field].get_default() if field in Settings.model_fields else None
                    shown = repr(default) if len(repr(default)) <= 80 else "value"
                    if default is None:  # unset has a meaning of its own: say it
                        shown = _UNSET_MEANS.get(field, "(unset)")
                    _report(_one_line({**error, "loc": (field,)}, "env") + f"; using the default {shown}")
                    bad_env.add(field)
                    progressed = True
            if not progressed:
                raise SettingsError(_one_line(errors[0], "env")) from None


def _field_for_loc(loc: str) -> str:
    for field, alias in _ENV_ALIASES.items():
        if loc == alias:
            return field
    return loc

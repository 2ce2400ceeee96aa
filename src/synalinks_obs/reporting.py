"""What synalinks-obs says, and what it does with its own errors.

Every module logs through ``logging.getLogger(__name__)``, a child of the
``synalinks_obs`` logger, whose level is the ``log_level`` setting. ``warn_once`` says a
thing once per process and key. ``internal_error`` is the one place an error of
synalinks-obs itself ends up: normally it is logged once per place (the app goes on,
untouched); in **strict mode** (``SYNALINKS_OBS_STRICT=1``, or ``strict_mode(True)``), as
the project's own test suite runs, it is raised instead, so a broken guard fails a test
instead of hiding a bug. Nothing said carries a credential: every line (``say``,
``first_line``, and each record of our loggers, through a filter) goes through
``redaction.scrub`` (URL userinfo, token patterns, secret ``key=value`` pairs, the values
of secret environment variables). This module imports only ``os`` and ``sys`` at module
level (it is reached from start-up code); ``logging`` is imported when first needed.
"""

import os
import sys

ROOT_LOGGER = "synalinks_obs"
STRICT_ENV = "SYNALINKS_OBS_STRICT"

_said: set = set()
_strict_override = None  # set by strict_mode(); None: the environment decides


def _scrub(text: str) -> str:
    from synalinks_obs.redaction import scrub

    return scrub(text)


class _Scrubber:
    """A logging filter: the record's message (and traceback) without credentials."""

    def filter(self, record) -> bool:
        try:
            message = record.getMessage()
            clean = _scrub(message)
            if clean != message:
                record.msg, record.args = clean, None
            if record.exc_info and not record.exc_text:
                import logging

                record.exc_text = _scrub(logging.Formatter().formatException(record.exc_info))
        except Exception:
            pass
        return True


_SCRUBBER = _Scrubber()


def logger(name: str = ROOT_LOGGER):
    """Our logger ``name``, its records scrubbed of credentials."""
    import logging

    log = logging.getLogger(name)
    if _SCRUBBER not in log.filters:
        log.addFilter(_SCRUBBER)
    return log


def forget() -> None:
    """Forget what was said (a test that counts warnings starts from none)."""
    _said.clear()


def strict() -> bool:
    """Whether internal errors raise (strict mode) instead of being logged."""
    if _strict_override is not None:
        return _strict_override
    return os.environ.get(STRICT_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def strict_mode(on: bool | None) -> None:
    """Force strict mode on or off in this process (None: back to the environment)."""
    global _strict_override
    _strict_override = on


class InternalError(RuntimeError):
    """An error of synalinks-obs itself, raised in strict mode only."""


def internal_error(where: str, exc: BaseException, log=None) -> None:
    """An error of ours at ``where``: raised in strict mode, else logged once per place."""
    if strict():
        raise InternalError(_scrub(f"synalinks-obs internal error in {where}: {exc!r}")) from exc
    key = ("internal", where)
    if key in _said:
        return
    _said.add(key)
    log = log or logger()
    import logging

    log.warning(
        "synalinks-obs: internal error in %s (%s: %s); the app is not affected",
        where, type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG),
    )


def warn_once(key, message: str, *args, log=None, level: int = 30) -> bool:
    """Log ``message`` once per process for ``key``; True when it was logged now."""
    if key in _said:
        return False
    _said.add(key)
    (log or logger()).log(level, message, *args)
    return True


def say(line: str) -> None:
    """One line for the user on stderr (configuration problems, the exit summary)."""
    try:
        sys.stderr.write(_scrub(line.rstrip("\n")) + "\n")
        sys.stderr.flush()
    except Exception:  # a closed stderr must not break the app
        pass


def say_once(line: str) -> None:
    """``say`` a line once per process."""
    if ("say", line) in _said:
        return
    _said.add(("say", line))
    say(line)


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (never raises)."""
    try:
        lines = _scrub(str(exc)).strip().splitlines()
    except Exception:
        return f"<{type(exc).__name__} with an unprintable message>"
    return lines[0][:limit] if lines else ""

"""Start-up activation: what the ``synalinks_obs.pth`` line (and the launcher's
``sitecustomize``) runs in every interpreter of the environment.

``SYNALINKS_OBSERVABILITY`` decides, case-insensitively and ignoring surrounding blanks:

- ``1`` / ``true`` / ``yes`` / ``on``: install the import hook; tracing starts the moment
  the app imports ``synalinks`` (settings are read, and checked, only then);
- ``0`` / ``false`` / ``no`` / ``off`` / empty / unset: nothing;
- anything else: one line on stderr, and nothing else.

Cost: this runs before the app's first line in every process, whether it uses Synalinks
or not, so it imports only ``os`` and ``sys`` (already loaded by ``site``) and, when the
variable is truthy, ``synalinks_obs``, ``synalinks_obs.activation``,
``synalinks_obs.runtime``, ``synalinks_obs.reporting`` and ``synalinks_obs.importhook``
(all standard-library-only at module level). No mlflow, synalinks or pydantic is
imported unless the app imports ``synalinks``.

Idempotent: CPython can process a ``.pth`` file twice (a site directory reached through
two paths, e.g. a venv's ``lib64`` symlink, or a later ``site.addsitedir``), and the
launcher's ``sitecustomize`` calls ``run()`` again: every call after the first does
nothing, so there is one hook and at most one warning per process.
"""

import os
import sys

ENV_VAR = "SYNALINKS_OBSERVABILITY"
TRUE_VALUES = frozenset({"1", "true", "yes", "on"})
FALSE_VALUES = frozenset({"", "0", "false", "no", "off"})
# Set by `python -m synalinks_obs.run` for the app and its subprocesses, so that
# `activation_source()` says "run" there (no SYNALINKS_OBS_ prefix: that namespace holds
# settings only, and unknown settings are reported).
LAUNCHER_MARK = "_SYNALINKS_OBS_RUN"

_ran = False


def parse_flag(value: str | None) -> bool | None:
    """``True``/``False`` for a recognised value of the variable (unset is False), else None."""
    if value is None:
        return False
    text = value.strip().lower()
    if text in TRUE_VALUES:
        return True
    if text in FALSE_VALUES:
        return False
    return None


def run(source: str = "env") -> bool:
    """Activate tracing if ``SYNALINKS_OBSERVABILITY`` says so; True when it did.

    Only the first call in a process does anything (see the module docstring).
    """
    global _ran
    if _ran:
        return False
    _ran = True
    value = os.environ.get(ENV_VAR)
    flag = parse_flag(value)
    if flag is None:
        sys.stderr.write(f"synalinks-obs: {ENV_VAR}={value!r} is not a boolean; use 1 or 0\n")
        return False
    if not flag:
        return False
    if os.environ.get(LAUNCHER_MARK):
        source = "run"
    try:
        import synalinks_obs

        synalinks_obs._enable_on_import(_source=source)
    except Exception as exc:  # start-up must never fail because of us
        sys.stderr.write(
            f"synalinks-obs: cannot activate tracing ({type(exc).__name__}: {exc}); "
            "the app runs untraced\n"
        )
        return False
    return True

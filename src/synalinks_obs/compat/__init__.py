"""Every private name of a dependency that synalinks-obs touches, one module per dependency.

``compat.synalinks``, ``compat.mlflow`` and ``compat.stdlib`` are the only places that
import ``synalinks.src.*``, MLflow's internals or an underscore name of the standard
library. Each accessor has a guarded fallback: when a private name is gone (a new
release moved it), the fallback is used, ``note_fallback`` says so in one warning, and
``fallbacks_in_use()`` lists it for ``python -m synalinks_obs doctor``. Nothing here
imports a dependency at module level.
"""

from __future__ import annotations

from synalinks_obs import reporting

_FALLBACKS: dict[str, str] = {}


def note_fallback(name: str, effect: str, exc: BaseException | None = None) -> None:
    """Record that the private name ``name`` is unavailable and what that costs (once)."""
    if name in _FALLBACKS:
        return
    _FALLBACKS[name] = effect
    reason = f" ({type(exc).__name__}: {reporting.first_line(exc)})" if exc is not None else ""
    reporting.warn_once(
        ("fallback", name), "synalinks-obs: %s is not available%s; %s", name, reason, effect,
        log=reporting.logger(__name__),
    )


def fallbacks_in_use() -> dict[str, str]:
    """``{private name: what the fallback means}`` for every fallback used so far."""
    return dict(_FALLBACKS)

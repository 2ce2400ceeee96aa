"""Synalinks' own observability API, routed to synalinks-obs while it is active.

- ``synalinks.enable_observability(tracking_uri=None, experiment_name=None)`` and
  ``synalinks.is_observability_enabled()`` are replaced, in every public place Synalinks
  exports them (``synalinks``, ``synalinks.config``, ``synalinks.backend``, the API
  modules, ``synalinks.src.backend[.config]``), by functions that call
  ``synalinks_obs.enable`` / ``synalinks_obs.is_enabled``. Same arguments, no ordering
  hazard. Synalinks' internal consumers keep the original flag, so no built-in ``Monitor``
  hook is added to new modules by our routing.
- Synalinks' built-in ``Monitor`` hook (present on modules built after a direct call to
  the original ``enable_observability``, or passed explicitly) does nothing while our
  tracer is on, so one call never gives two spans.

Everything is restored exactly by ``unroute()``.
"""

from __future__ import annotations

import sys

SUPPORTED = ">=0.9"

_replaced: list[tuple[object, str, object]] = []


def _routed_enable_observability(tracking_uri=None, experiment_name=None):
    """Enable synalinks-obs tracing (routed from ``synalinks.enable_observability``)."""
    import synalinks_obs

    synalinks_obs.enable(tracking_uri=tracking_uri, experiment_name=experiment_name)


def _routed_is_observability_enabled():
    """Whether synalinks-obs tracing is on (routed from ``synalinks.is_observability_enabled``)."""
    import synalinks_obs

    return synalinks_obs.is_enabled()


def _public_module(name: str) -> bool:
    return name == "synalinks" or (
        name.startswith("synalinks.") and not name.startswith("synalinks.src.")
    ) or name in ("synalinks.src.backend", "synalinks.src.backend.config")


def route() -> None:
    """Point Synalinks' public observability functions at synalinks-obs. Idempotent."""
    if _replaced:
        return
    config = sys.modules.get("synalinks.src.backend.config")
    if config is None:
        return
    originals = {
        "enable_observability": (config.enable_observability, _routed_enable_observability),
        "is_observability_enabled": (
            config.is_observability_enabled, _routed_is_observability_enabled,
        ),
    }
    for name, module in list(sys.modules.items()):
        if module is None or not _public_module(name):
            continue
        namespace = getattr(module, "__dict__", {})
        for attr, (original, routed) in originals.items():
            if namespace.get(attr) is original:
                setattr(module, attr, routed)
                _replaced.append((module, attr, original))
    _silence_builtin_monitor()


def unroute() -> None:
    """Put Synalinks' original functions and Monitor hook back."""
    while _replaced:
        module, attr, original = _replaced.pop()
        setattr(module, attr, original)
    _restore_builtin_monitor()


_monitor_originals: dict = {}


def _silence_builtin_monitor() -> None:
    monitor_module = sys.modules.get("synalinks.src.hooks.monitor")
    monitor = getattr(monitor_module, "Monitor", None)
    if monitor is None or _monitor_originals:
        return
    from synalinks_obs.instrument import STATE

    for method in ("on_call_begin", "on_call_end"):
        original = monitor.__dict__.get(method)
        if original is None:
            continue
        _monitor_originals[method] = original

        def silenced(self, *args, __original=original, **kwargs):
            if STATE.tracer is not None:
                return None
            return __original(self, *args, **kwargs)

        silenced.__wrapped__ = original
        setattr(monitor, method, silenced)
    _monitor_originals["__class__"] = monitor


def _restore_builtin_monitor() -> None:
    monitor = _monitor_originals.pop("__class__", None)
    for method, original in list(_monitor_originals.items()):
        setattr(monitor, method, original)
    _monitor_originals.clear()


def synalinks_version() -> str | None:
    """Installed Synalinks version (from package metadata; no import)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("synalinks")
    except PackageNotFoundError:
        return None


def is_supported(version_text: str | None) -> bool:
    """Whether this Synalinks version is one we support (>= 0.9)."""
    if not version_text:
        return False
    try:
        major, minor = (int(part) for part in version_text.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (0, 9)


def harden_mlflow_id_generator() -> None:
    """Silence a spurious error of MLflow's isolated id generator at interpreter exit.

    We turn on ``MLFLOW_TRACE_USE_ISOLATED_RANDOM_ID_GENERATOR`` (``import synalinks``
    seeds ``random``, so MLflow's default ids would collide across processes). Its
    ``__del__`` fails during interpreter teardown (module globals already None) and
    prints "Exception ignored in ..." on the app's stderr; this guards that one method.
    """
    try:
        from mlflow.tracing import provider
    except Exception:
        return
    generator = getattr(provider, "_IsolatedRandomIdGenerator", None)
    original = getattr(generator, "__del__", None)
    if original is None or getattr(original, "_synalinks_obs_guard", False):
        return

    def __del__(self):
        try:
            original(self)
        except Exception:
            pass

    __del__._synalinks_obs_guard = True
    generator.__del__ = __del__

"""synalinks-obs: MLflow tracing for any Synalinks program, with zero code changes.

Turn it on in any one of these ways (none needs a change to the app)::

    SYNALINKS_OBSERVABILITY=1 python app.py
    python -m synalinks_obs.run [--tracking-uri URI] [--experiment-name NAME] app.py
    synalinks_obs.enable(tracking_uri=None, experiment_name=None)   # anywhere, any time

While it is active, Synalinks' own ``synalinks.enable_observability()`` and
``synalinks.is_observability_enabled()`` are routed here too.

Every module call (real or symbolic, built-in or user-defined module, built before or
after enabling) becomes one MLflow span named ``ClassName:module_name``, with the
module's inputs and outputs, a span type by module class, the nine ``synalinks.*``
attributes, an ``exception`` event on failure, and the LM cost of the call including its
children. Spans are written by a background thread in batches; what is still queued at
interpreter exit is flushed (bounded by ``SYNALINKS_OBS_FLUSH_TIMEOUT``).

Configuration: explicit arguments, then ``MLFLOW_TRACKING_URI`` /
``MLFLOW_EXPERIMENT_NAME`` / ``SYNALINKS_OBS_*`` variables, then defaults (MLflow's own
default store, experiment ``synalinks_traces``). See ``synalinks_obs.settings``.

This module imports nothing heavy: mlflow, synalinks and pydantic are only imported
once tracing is enabled and Synalinks is imported.
"""

from __future__ import annotations

import logging
import os
import threading

__all__ = ["enable", "disable", "is_enabled", "flush", "uninstrument", "__version__"]

_logger = logging.getLogger("synalinks_obs")
_lock = threading.RLock()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("synalinks-obs")
    except PackageNotFoundError:
        return "0+unknown"


class _Activation:
    settings = None  # Settings requested by enable(); None when disabled
    source = None  # how tracing was turned on: "enable()", "env", "run", "synalinks"
    exit_hook_installed = False


_ACTIVE = _Activation()


def enable(tracking_uri: str | None = None, experiment_name: str | None = None, **options) -> None:
    """Trace every Synalinks module call into MLflow, from now on.

    Callable at any time: before or after ``import synalinks``, before or after modules
    are built. Calling it again replaces the configuration (a new destination applies to
    traces started afterwards). ``options`` are any other setting of
    ``synalinks_obs.settings.Settings`` (``capture_payloads``, ``max_payload_chars``,
    ``sample_rate``, ``redact_keys``, ...).

    Raises ``ValueError`` (one line naming the setting) for a bad argument.
    """
    _source = options.pop("_source", "enable()")
    from synalinks_obs.settings import load_settings

    settings = load_settings(tracking_uri=tracking_uri, experiment_name=experiment_name, **options)
    logging.getLogger("synalinks_obs").setLevel(settings.log_level)
    # import synalinks seeds `random`: MLflow's own spans must not share ids across processes.
    os.environ.setdefault("MLFLOW_TRACE_USE_ISOLATED_RANDOM_ID_GENERATOR", "true")
    with _lock:
        _ACTIVE.settings = settings
        _ACTIVE.source = _source
        from synalinks_obs import importhook

        importhook.when_imported("synalinks", _on_synalinks_imported)
        import sys

        if "synalinks" in sys.modules:
            _start_tracer()


def disable() -> None:
    """Stop tracing new calls; spans already finished are still written."""
    with _lock:
        _ACTIVE.settings = None
        _ACTIVE.source = None
        from synalinks_obs.instrument import STATE

        tracer, STATE.tracer = STATE.tracer, None
    if tracer is not None:
        tracer.exporter.flush()


def is_enabled() -> bool:
    """Whether tracing is on (it starts as soon as Synalinks is imported)."""
    return _ACTIVE.settings is not None


def activation_source() -> str | None:
    """How tracing was turned on (``"enable()"``, ``"env"``, ``"run"``...), or None."""
    return _ACTIVE.source


def flush(timeout: float | None = None) -> bool:
    """Write every finished span now; True when nothing is left (bounded by ``timeout``)."""
    from synalinks_obs.instrument import STATE

    tracer = STATE.tracer
    return True if tracer is None else tracer.exporter.flush(timeout)


def uninstrument() -> None:
    """Turn tracing off and restore Synalinks' original classes and functions exactly."""
    disable()
    from synalinks_obs import compat, importhook, instrument

    with _lock:
        importhook.remove_hook("synalinks")
        instrument.uninstrument()
        compat.unroute()


def _on_synalinks_imported(_module) -> None:
    """Import-hook callback: patch Synalinks, then start tracing if still enabled."""
    with _lock:
        _start_tracer()


def _start_tracer() -> None:
    settings = _ACTIVE.settings
    if settings is None:
        return
    from synalinks.src.modules.module import Module

    from synalinks_obs import compat, instrument
    from synalinks_obs.tracer import Tracer

    instrument.instrument(Module)
    compat.route()
    import mlflow

    if settings.tracking_uri:
        mlflow.set_tracking_uri(settings.tracking_uri)
    tracking_uri = settings.tracking_uri or mlflow.get_tracking_uri()
    old = instrument.STATE.tracer
    if old is not None and old.settings == settings:
        return
    instrument.STATE.tracer = Tracer(settings, tracking_uri)
    _install_exit_flush()


def _install_exit_flush() -> None:
    """Flush at exit *before* threads are joined (MLflow cannot start threads later)."""
    if _ACTIVE.exit_hook_installed:
        return
    _ACTIVE.exit_hook_installed = True
    register = getattr(threading, "_register_atexit", None)
    try:
        if register is None:
            raise RuntimeError
        register(_flush_at_exit)
    except RuntimeError:
        import atexit

        atexit.register(_flush_at_exit)


def _flush_at_exit() -> None:
    from synalinks_obs.export import current_exporter
    from synalinks_obs.instrument import STATE

    STATE.tracer = None
    exporter = current_exporter()
    if exporter is not None:
        try:
            exporter.shutdown()
        except Exception as exc:  # last-chance guard: never fail the interpreter's exit
            _logger.warning("synalinks-obs: exit flush failed: %r", exc)


def __getattr__(name):
    if name == "__version__":
        return _version()
    raise AttributeError(f"module 'synalinks_obs' has no attribute {name!r}")

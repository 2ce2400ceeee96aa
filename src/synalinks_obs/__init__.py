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
once tracing is enabled and Synalinks is imported. It is imported at interpreter
start-up by the ``.pth`` bootstrap when ``SYNALINKS_OBSERVABILITY`` is set, so even
``logging`` and ``threading`` are imported lazily here.
"""

import os
import sys
from _thread import RLock

__all__ = ["enable", "disable", "is_enabled", "flush", "uninstrument", "__version__"]

_lock = RLock()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("synalinks-obs")
    except PackageNotFoundError:
        return "0+unknown"


class _Activation:
    settings = None  # Settings requested by enable(); None when disabled
    source = None  # how tracing was turned on: "enable()", "env", "run", "synalinks"
    pending = None  # options of an activation waiting for `import synalinks` (see below)
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
    import logging

    logging.getLogger("synalinks_obs").setLevel(settings.log_level)
    # import synalinks seeds `random`: MLflow's own spans must not share ids across processes.
    os.environ.setdefault("MLFLOW_TRACE_USE_ISOLATED_RANDOM_ID_GENERATOR", "true")
    with _lock:
        _ACTIVE.settings = settings
        _ACTIVE.source = _source
        _ACTIVE.pending = None
        from synalinks_obs import importhook

        importhook.when_imported("synalinks", _on_synalinks_imported)
        if "synalinks" in sys.modules:
            _start_tracer()


def disable() -> None:
    """Stop tracing new calls; spans already finished are still written."""
    with _lock:
        _ACTIVE.settings = None
        _ACTIVE.source = None
        _ACTIVE.pending = None
        if "synalinks_obs.instrument" not in sys.modules:
            return  # never started: nothing to stop (and no reason to import mlflow)
        from synalinks_obs.instrument import STATE

        tracer, STATE.tracer = STATE.tracer, None
    if tracer is not None:
        tracer.exporter.flush()


def is_enabled() -> bool:
    """Whether tracing is on (it starts as soon as Synalinks is imported)."""
    return _ACTIVE.settings is not None or _ACTIVE.pending is not None


def activation_source() -> str | None:
    """How tracing was turned on (``"enable()"``, ``"env"``, ``"run"``...), or None."""
    return _ACTIVE.source


def flush(timeout: float | None = None) -> bool:
    """Write every finished span now; True when nothing is left (bounded by ``timeout``)."""
    if "synalinks_obs.export" not in sys.modules:
        return True  # tracing never started: nothing to write
    from synalinks_obs.export import current_exporter

    exporter = current_exporter()
    done = True if exporter is None else exporter.flush(timeout)
    _flush_mlflow_spans(timeout)
    return done


def _flush_mlflow_spans(timeout: float | None) -> None:
    """Also write spans users opened with MLflow's own API inside our traces."""
    if "mlflow" not in sys.modules:
        return
    try:
        from mlflow.tracing.processor.base_mlflow import flush_all_batch_processors

        flush_all_batch_processors(timeout_millis=(10.0 if timeout is None else timeout) * 1000)
    except Exception as exc:  # MLflow internals moved: the spans still go out later
        _logger.debug("synalinks-obs: cannot flush MLflow's span processors: %r", exc)


def uninstrument() -> None:
    """Turn tracing off and restore Synalinks' original classes and functions exactly."""
    disable()
    from synalinks_obs import compat, importhook, instrument

    with _lock:
        importhook.remove_hook("synalinks")
        instrument.uninstrument()
        compat.unroute()
        training = sys.modules.get("synalinks_obs.training")
        if training is not None:
            training.uninstall()


def _enable_on_import(_source: str = "env", **options) -> None:
    """Turn tracing on the moment Synalinks is imported (at once if it already is).

    What the start-up bootstrap (``SYNALINKS_OBSERVABILITY=1``) calls: unlike
    ``enable()`` it loads nothing now, not even the settings (pydantic), so a process
    that never imports Synalinks pays only for this module and the import hook. The
    settings are read from the environment, and reported if bad, when Synalinks is
    imported. An explicit ``enable()`` (before or after) wins; ``disable()`` cancels it.
    """
    with _lock:
        if _ACTIVE.settings is not None or _ACTIVE.pending is not None:
            return
        _ACTIVE.pending = options
        _ACTIVE.source = _source
        from synalinks_obs import importhook

        importhook.when_imported("synalinks", _on_synalinks_imported)


def _on_synalinks_imported(_module) -> None:
    """Import-hook callback: patch Synalinks, then start tracing if still enabled."""
    with _lock:
        pending, _ACTIVE.pending = _ACTIVE.pending, None
        if pending is not None and _ACTIVE.settings is None:
            enable(_source=_ACTIVE.source, **pending)  # starts the tracer: synalinks is imported
        else:
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
    _install_training_autolog()
    compat.harden_mlflow_id_generator()
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
    import threading

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
            import logging

            logging.getLogger("synalinks_obs").warning("synalinks-obs: exit flush failed: %r", exc)


def _install_training_autolog() -> None:
    """Wrap fit()/evaluate() for the training autolog (synalinks_obs.training)."""
    try:
        from synalinks_obs import training

        training.install()
    except Exception as exc:  # tracing must start even if the training log cannot
        import logging

        logging.getLogger("synalinks_obs").warning(
            "synalinks-obs: training autolog unavailable (%s: %s)", type(exc).__name__, exc
        )


def __getattr__(name):
    if name == "__version__":
        return _version()
    # synalinks_obs.callbacks.Monitor, synalinks_obs.hooks.Monitor (these import synalinks)
    if name in ("callbacks", "training", "hooks"):
        import importlib

        return importlib.import_module(f"synalinks_obs.{name}")
    raise AttributeError(f"module 'synalinks_obs' has no attribute {name!r}")

"""Turning tracing on and off: what ``enable``/``disable``/``uninstrument`` do to ``RUNTIME``.

``enable()`` validates the settings and records them; the moment Synalinks is imported
(at once if it already is) ``_start`` checks the versions and the store URI, applies
every patch through the one registry (``patching.install``), and sets the tracer the
patched calls read. A start-up activation (``SYNALINKS_OBSERVABILITY=1``, the launcher)
goes through ``enable_on_import``, which loads nothing until Synalinks is imported.
``uninstrument()`` reverts every patch, Synalinks' and MLflow's alike.

Never an error of ours into the app: past the settings check (a bad argument raises
``SettingsError``, as documented), everything ``enable()`` and ``_start`` do is guarded;
an internal error there goes to ``reporting.internal_error`` (logged once, raised only in
strict mode), the patches this start applied are reverted and the app runs untraced.

Side effects, all documented in the README: our own ``synalinks_obs`` logger gets the
``log_level`` setting; ``MLFLOW_TRACE_USE_ISOLATED_RANDOM_ID_GENERATOR`` is set to ``true``
unless already set (``import synalinks`` seeds ``random``, so MLflow's default span ids
would repeat across processes). MLflow's tracking URI, experiment and retry settings are
left alone.
"""

import os
import sys

from synalinks_obs import reporting
from synalinks_obs.runtime import RUNTIME


def enable(tracking_uri=None, experiment_name=None, _source: str = "enable()", **options) -> None:
    """See ``synalinks_obs.enable``. Raises ``SettingsError`` for a bad argument."""
    from synalinks_obs.settings import load_settings

    settings = load_settings(tracking_uri=tracking_uri, experiment_name=experiment_name, **options)
    if settings.strict:
        reporting.strict_mode(True)
    with RUNTIME.lock:
        try:
            reporting.logger().setLevel(settings.log_level)
            os.environ.setdefault("MLFLOW_TRACE_USE_ISOLATED_RANDOM_ID_GENERATOR", "true")
            from synalinks_obs import importhook

            RUNTIME.settings = settings
            RUNTIME.source = _source
            RUNTIME.pending = None
            importhook.when_imported("synalinks", _on_synalinks_imported)
        except Exception as exc:
            RUNTIME.settings = RUNTIME.source = None
            reporting.internal_error("turning tracing on", exc)
            return
        if "synalinks" in sys.modules:
            _start()


def enable_on_import(_source: str = "env", **options) -> None:
    """Turn tracing on the moment Synalinks is imported (at once if it already is).

    What start-up activation calls: unlike ``enable()`` it loads nothing now, not even
    the settings (pydantic), so a process that never imports Synalinks pays only for the
    import hook. The settings are read from the environment, and reported if bad, when
    Synalinks is imported. An explicit ``enable()`` (before or after) wins; ``disable()``
    cancels it.
    """
    from synalinks_obs import importhook

    with RUNTIME.lock:
        if RUNTIME.settings is not None or RUNTIME.pending is not None:
            return
        RUNTIME.pending = options
        RUNTIME.source = _source
        importhook.when_imported("synalinks", _on_synalinks_imported, before=_prestart_exporter)


def _store_problem(resolution) -> str | None:
    """The one line refusing a store that cannot take traces (see ``_start``), or None."""
    from synalinks_obs import uris
    from synalinks_obs.store.local_access import sqlite_store_problem

    setting = "--tracking-uri" if RUNTIME.source == "run" and resolution.source == "explicit" else (
        "tracking_uri" if resolution.source == "explicit" else "MLFLOW_TRACKING_URI"
    )
    return uris.file_store_problem(resolution.uri, setting) or sqlite_store_problem(resolution.uri, setting)


def _prestart_exporter() -> None:
    """Import-hook ``before``: start the exporter process while Synalinks is imported.

    Importing Synalinks takes seconds; in that time the exporter process imports MLflow
    and opens the store (creating it if new), so that a short script's exit waits only
    for its last spans to be written, not for MLflow's SQL stack to load in the app.
    Nothing is reported here (``_start`` reports bad settings and refused stores)."""
    with RUNTIME.lock:
        pending = RUNTIME.pending if RUNTIME.settings is None else None
    if pending is None:  # start-up activation only (an explicit enable() keeps the 2 s rule)
        return
    from synalinks_obs import uris
    from synalinks_obs.settings import SettingsError, load_settings

    try:
        settings = load_settings(report=lambda line: None, **pending)
    except SettingsError:
        return
    if not settings.export_process:
        return
    resolution = uris.resolve(settings.tracking_uri, environment=False)
    if _store_problem(resolution) is not None:
        return
    from synalinks_obs.export import service

    service.exporter_for(settings).prestart(resolution.uri, settings.experiment_name)


def _on_synalinks_imported(_module) -> None:
    """Import-hook callback: start tracing if it is still requested."""
    with RUNTIME.lock:
        pending, RUNTIME.pending = RUNTIME.pending, None
        if pending is not None and RUNTIME.settings is None:
            try:
                enable(_source=RUNTIME.source, **pending)  # starts: synalinks is imported
            except ValueError as exc:  # a bad setting: one line, and the app runs untraced
                reporting.say(str(exc))
                RUNTIME.source = None
        else:
            _start()


def disable() -> None:
    """Stop tracing new calls; spans already finished are still written."""
    with RUNTIME.lock:
        RUNTIME.settings = None
        RUNTIME.source = None
        RUNTIME.pending = None
        tracer, RUNTIME.tracer = RUNTIME.tracer, None
    if tracer is not None:
        tracer.exporter.flush()


def is_enabled() -> bool:
    return RUNTIME.settings is not None or RUNTIME.pending is not None


def uninstrument() -> None:
    """Turn tracing off and put back every attribute synalinks-obs replaced."""
    disable()
    from synalinks_obs import importhook

    with RUNTIME.lock:
        for name in list(RUNTIME.import_hooks):
            importhook.remove_hook(name)
        RUNTIME.patches.revert()
        RUNTIME.route = None
        RUNTIME.hook_tracer = None


def _start() -> None:
    """Patch Synalinks (once) and set the tracer of the activation in force (never raises
    an error of ours, except in strict mode: see the module docstring)."""
    settings = RUNTIME.settings
    if settings is None:
        return
    applied = len(RUNTIME.patches)
    try:
        _start_tracing(settings)
    except Exception as exc:
        RUNTIME.settings = RUNTIME.source = None
        RUNTIME.tracer = None
        try:  # what this start patched goes back: the app runs as if untraced
            RUNTIME.patches.revert_newest(len(RUNTIME.patches) - applied)
        finally:
            reporting.internal_error("turning tracing on", exc)


def _start_tracing(settings) -> None:
    from synalinks_obs import uris

    resolution = uris.resolve(settings.tracking_uri, environment=False)
    problem = _store_problem(resolution)
    if problem is not None:
        reporting.say_once(problem)
        RUNTIME.settings = None
        return
    if resolution.uri == uris.default_uri():  # also the launcher's default, exported
        note = uris.legacy_mlruns_note()
        if note:
            reporting.say_once(note)
    from synalinks_obs import patching

    if not patching.install(RUNTIME):
        RUNTIME.settings = None
        return
    old = RUNTIME.tracer
    if old is not None and old.settings == settings and old.destination.tracking_uri == resolution.uri:
        return
    from synalinks_obs.export import service
    from synalinks_obs.tracing.tracer import Tracer

    exporter = service.exporter_for(settings)
    RUNTIME.tracer = Tracer(settings, resolution.uri, exporter)

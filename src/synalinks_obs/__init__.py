"""synalinks-obs: MLflow tracing for any Synalinks program, with zero code changes.

Turn it on in any one of these ways (none needs a change to the app)::

    SYNALINKS_OBSERVABILITY=1 python app.py
    python -m synalinks_obs.run [--tracking-uri URI] [--experiment-name NAME] app.py
    synalinks_obs.enable(tracking_uri=None, experiment_name=None)   # anywhere, any time

While it is active, Synalinks' own ``synalinks.enable_observability()`` and
``synalinks.is_observability_enabled()`` are routed here too. This module is the public
API only; the README's "Architecture" section says which module owns each step. It is
imported at interpreter start-up by the ``.pth`` bootstrap when
``SYNALINKS_OBSERVABILITY`` is set, so it imports nothing at module level: mlflow,
synalinks and pydantic load only once tracing is enabled and Synalinks is imported.
"""

__all__ = [
    "enable", "disable", "is_enabled", "flush", "uninstrument", "activation_source", "trace_context",
    "__version__",
]


def enable(tracking_uri: str | None = None, experiment_name: str | None = None, **options) -> None:
    """Trace every Synalinks module call into MLflow, from now on.

    Callable at any time: before or after ``import synalinks``, before or after modules
    are built. Calling it again replaces the configuration (a new destination applies to
    traces started afterwards). ``options`` are any other setting of
    ``synalinks_obs.settings.Settings`` (``capture_payloads``, ``max_payload_chars``,
    ``sample_rate``, ``redact_keys``, ...).

    Raises ``ValueError`` (one line naming the setting and the fix) for a bad argument.
    """
    from synalinks_obs import activation

    activation.enable(tracking_uri=tracking_uri, experiment_name=experiment_name, **options)


def disable() -> None:
    """Stop tracing new calls; spans already finished are still written."""
    from synalinks_obs import activation

    activation.disable()


def is_enabled() -> bool:
    """Whether tracing is on (it starts as soon as Synalinks is imported)."""
    from synalinks_obs import activation

    return activation.is_enabled()


def activation_source() -> str | None:
    """How tracing was turned on (``"enable()"``, ``"env"``, ``"run"``, ``"synalinks"``), or None."""
    from synalinks_obs.runtime import RUNTIME

    return RUNTIME.source


def flush(timeout: float | None = None) -> bool:
    """Write every finished span now; True when nothing is left (bounded by ``timeout``)."""
    from synalinks_obs.runtime import RUNTIME

    if RUNTIME.exporter is None:
        return True  # tracing never started: nothing to write
    from synalinks_obs.export import service

    return service.flush(timeout)


def trace_context(session_id=None, user_id=None, tags=None, metadata=None):
    """Stamp every trace started in a scope with a session, a user and tags.

    A context manager (``with`` / ``async with``) or a decorator (functions and coroutine
    functions). The traces get MLflow's standard metadata ``mlflow.trace.session`` and
    ``mlflow.trace.user`` (the MLflow UI's session view groups by it), ``metadata`` and
    ``tags``; see ``synalinks_obs.sessions``. Raises ``ValueError`` for a value that is
    not a string (tags and metadata: a dict)."""
    from synalinks_obs.sessions import TraceContext

    return TraceContext(session_id=session_id, user_id=user_id, tags=tags, metadata=metadata)


def uninstrument() -> None:
    """Turn tracing off and restore every attribute synalinks-obs replaced (Synalinks' and
    MLflow's), exactly as imported."""
    from synalinks_obs import activation

    activation.uninstrument()


def _enable_on_import(_source: str = "env", **options) -> None:
    """What start-up activation calls (see ``activation.enable_on_import``)."""
    from synalinks_obs import activation

    activation.enable_on_import(_source=_source, **options)


def __getattr__(name):
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("synalinks-obs")
        except PackageNotFoundError:
            return "0+unknown"
    # synalinks_obs.callbacks.Monitor, synalinks_obs.hooks.Monitor (these import synalinks)
    if name in ("callbacks", "hooks"):
        import importlib

        return importlib.import_module(f"synalinks_obs.{name}")
    raise AttributeError(f"module 'synalinks_obs' has no attribute {name!r}")

"""Direct Monitor hook: trace one module (and its children) into its own experiment.

::

    from synalinks_obs.hooks import Monitor

    monitor = Monitor(tracking_uri="http://localhost:5000", experiment_name="custom_experiment")
    generator = synalinks.Generator(data_model=Answer, language_model=lm, hooks=[monitor])
    # or, on a module that already exists:  module.add_hook(monitor)

Every call of ``generator`` (and of the modules it calls, e.g. its ``LanguageModel``)
becomes a trace in ``custom_experiment`` at that tracking URI, exactly as global tracing
would record it: same span names, types, attributes, payload capture and cost. It works

- **without global tracing**: only the monitored modules and their children are traced;
- **alongside global tracing** (``SYNALINKS_OBSERVABILITY=1``, ``synalinks_obs.enable()``...):
  the monitored call leaves the enclosing trace and starts its own trace in the
  monitor's experiment. Each call is still **one** span, written to one place: never to
  both. Its ``synalinks.parent_call_id`` is still the call id of the enclosing module call
  (so the two traces can be joined), and its cost still counts in the enclosing calls'
  ``synalinks.cost``. When the monitor's destination is the enclosing trace's own, the
  call simply stays in that trace.

A monitored module called inside another monitored module's trace with a different
destination starts a trace of its own again: the innermost monitor wins for its subtree.

Why the hook itself does nothing: Synalinks runs hooks *inside* ``Module.__call__``, after
the call has begun, so a hook cannot choose where the call's span goes. Instead the
traced ``__call__`` wrapper (``synalinks_obs.instrument``) looks for a ``Monitor`` in the
module's hook list when a call starts, and opens the call's record in the monitor's
destination. The ``Monitor`` object only holds two strings: it deep-copies and pickles
with the module (no lock, logger or MLflow object on the instance).

Synalinks' own ``synalinks.hooks.Monitor`` on a module keeps doing what Synalinks
documents: it writes that module's calls into its experiment itself, and synalinks-obs
steps aside for those calls (never two spans for one call); their child calls are traced
by synalinks-obs as usual. Prefer this module's ``Monitor``: it records the whole
subtree, with synalinks-obs' attributes, payload limits and redaction.

Note: Synalinks' built-in modules such as ``Generator`` take no ``hooks=`` argument (only
``Module`` itself, language/embedding/decision models and your own subclasses that pass
``**kwargs`` on); ``module.add_hook(monitor)`` works on every module.
"""

from __future__ import annotations

import os

from synalinks.src.hooks.hook import Hook

from synalinks_obs.instrument import ASIDE

__all__ = ["Monitor"]


class Monitor(Hook):
    """Trace the module it is attached to, and its children, into its own experiment.

    Args:
        tracking_uri: MLflow tracking URI (a server ``http://host:5000``, ``sqlite:///...``
            or a path). Default: the tracking URI of global tracing when it is on, else
            ``MLFLOW_TRACKING_URI``, else MLflow's default store.
        experiment_name: MLflow experiment of the traces. Default: the experiment of global
            tracing when it is on, else ``MLFLOW_EXPERIMENT_NAME``, else
            ``synalinks_traces``.

    Pass it to a module as ``hooks=[monitor]`` or with ``module.add_hook(monitor)``. One
    monitor may be shared by several modules.
    """

    def __init__(self, tracking_uri: str | None = None, experiment_name: str | None = None):
        super().__init__()
        if tracking_uri is not None and not isinstance(tracking_uri, str):
            raise TypeError(f"tracking_uri must be a string, not {type(tracking_uri).__name__}")
        if experiment_name is not None and (not isinstance(experiment_name, str) or not experiment_name):
            raise ValueError("experiment_name must be a non-empty string")
        self.tracking_uri = _absolute(tracking_uri)
        self.experiment_name = experiment_name
        _activate()

    # Synalinks calls these inside Module.__call__; the routing happens earlier, in
    # synalinks_obs.instrument (see the module docstring).
    def on_call_begin(self, call_id, parent_call_id=None, inputs=None, kwargs=None):
        return None

    def on_call_end(self, call_id, parent_call_id=None, outputs=None, exception=None):
        return None

    def __setstate__(self, state):
        # A monitor restored from a pickle (another process) must route there too.
        self.__dict__.update(state)
        _activate()

    def __repr__(self):
        return (
            f"<synalinks_obs.hooks.Monitor tracking_uri={self.tracking_uri!r} "
            f"experiment_name={self.experiment_name!r}>"
        )


def _absolute(tracking_uri: str | None) -> str | None:
    """A relative sqlite/file location made absolute, as the launcher does: the store
    must not move when the app changes directory."""
    if not tracking_uri:
        return None
    if tracking_uri.startswith("sqlite:///") and not tracking_uri.startswith("sqlite:////"):
        path = tracking_uri[len("sqlite:///"):]
        if path and path != ":memory:":
            return "sqlite:///" + os.path.abspath(path)
    if "://" not in tracking_uri and ":" not in tracking_uri[:2]:
        return os.path.abspath(tracking_uri)
    return tracking_uri


# -- routing (called by the traced Module.__call__ wrapper) ----------------------------

class _Routing:
    tracer = None  # the tracer used for monitored calls while global tracing is off
    builtin_monitor = None  # synalinks.src.hooks.monitor.Monitor, when importable
    monitored: set = set()  # destinations monitors have sent traces to
    reported = False


_ROUTING = _Routing()


def _activate() -> None:
    """Make the traced wrapper consult monitors (once per process)."""
    from synalinks.src.modules.module import Module

    from synalinks_obs import compat, instrument

    instrument.instrument(Module)  # no-op when global tracing already patched it
    compat.harden_mlflow_id_generator()
    compat.backport_call_usage()  # LM cost and tokens on Synalinks 0.9.x
    install()


def install() -> None:
    """Route module calls through ``_route`` (idempotent). Called when a Monitor is
    created and when global tracing starts (``compat.route``)."""
    from synalinks_obs import instrument

    if instrument.STATE.route is _route:
        return
    try:
        from synalinks.src.hooks.monitor import Monitor as builtin
    except Exception:
        builtin = None
    _ROUTING.builtin_monitor = builtin
    instrument.STATE.route = _route


def _hook_tracer():
    """The tracer of monitored calls while global tracing is off (built once)."""
    tracer = _ROUTING.tracer
    if tracer is not None:
        return tracer
    # import synalinks seeds `random`: MLflow's own span ids must not collide across
    # processes (as synalinks_obs.enable() does).
    os.environ.setdefault("MLFLOW_TRACE_USE_ISOLATED_RANDOM_ID_GENERATOR", "true")
    import mlflow

    import synalinks_obs
    from synalinks_obs.settings import load_settings
    from synalinks_obs.tracer import Tracer

    settings = load_settings()
    tracking_uri = settings.tracking_uri or mlflow.get_tracking_uri()
    # No experiment of its own: every trace it starts goes to a monitor's destination.
    tracer = Tracer(settings, tracking_uri)
    synalinks_obs._install_exit_flush()
    _ROUTING.tracer = tracer
    return tracer


def _route(module, tracer):
    """``(tracer, destination)`` for one module call (see instrument.STATE.route).

    ``tracer`` is the global tracer (None when global tracing is off). A module with
    Synalinks' built-in Monitor: ``(None, ASIDE)``, the built-in hook writes the call. With
    our Monitor: its destination, and a tracer even when global tracing is off. While
    global tracing is off, the children of a monitored call are traced too (with the
    monitors' tracer); other calls pass through untraced.
    """
    try:
        monitor = None
        hooks = getattr(module.__dict__.get("_hooks"), "hooks", None)
        if hooks:
            builtin = _ROUTING.builtin_monitor
            for hook in hooks:
                if isinstance(hook, Monitor):
                    monitor = monitor or hook
                elif builtin is not None and isinstance(hook, builtin):
                    return None, ASIDE  # Synalinks' own Monitor writes this call
        if monitor is not None:
            if tracer is None:
                tracer = _hook_tracer()
            from synalinks_obs.spans import Destination

            default = tracer.destination
            destination = Destination(
                monitor.tracking_uri or default.tracking_uri,
                monitor.experiment_name or default.experiment_name,
            )
            _ROUTING.monitored.add(destination)
            return tracer, destination
        if tracer is None and _ROUTING.tracer is not None:
            from synalinks_obs.spans import current_record

            parent = current_record()
            if parent is not None and parent.trace.destination in _ROUTING.monitored:
                return _ROUTING.tracer, None
        return tracer, None
    except Exception as exc:  # never break a call: it goes on as without the monitor
        if not _ROUTING.reported:
            _ROUTING.reported = True
            import logging

            logging.getLogger("synalinks_obs").warning(
                "synalinks-obs: Monitor hook routing failed (%s: %s); the call is traced "
                "as without it", type(exc).__name__, exc,
            )
        return tracer, None

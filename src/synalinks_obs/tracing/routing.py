"""Which tracer and destination a module call goes to, once ``Monitor`` hooks exist.

``route(module, tracer)`` is what the patched ``Module.__call__`` asks (through
``RUNTIME.route``) when a ``synalinks_obs.hooks.Monitor`` exists in the process or global
tracing is on. It returns ``(tracer, destination)``:

- a module carrying one of our Monitors: the monitor's destination, with a tracer even
  when global tracing is off (``hook_tracer``, built once);
- a module carrying Synalinks' own ``synalinks.hooks.Monitor``: ``(None, ASIDE)``, that
  hook writes the call (and synalinks-obs steps aside for it);
- while global tracing is off, the children of a monitored call: the hook tracer;
- otherwise ``(tracer, None)``: the call goes where it would go anyway.

Our Monitor is recognised by its ``synalinks_obs_destination()`` method (duck typing,
so this module needs no import of ``synalinks_obs.hooks``).
"""

from __future__ import annotations

from synalinks_obs import reporting
from synalinks_obs.compat import synalinks as synalinks_compat
from synalinks_obs.runtime import RUNTIME
from synalinks_obs.tracing import context
from synalinks_obs.tracing.records import Destination

# The destination of a call synalinks-obs leaves to Synalinks' built-in Monitor hook.
ASIDE = object()


class _Routing:
    builtin_monitor = None  # synalinks.hooks.Monitor, when it exists (a class, cached)


# hook class -> OURS, BUILTIN or None (any other hook: Synalinks' Logger...): one dict
# read per hook on every call instead of a failing hasattr (the hot path, see
# benchmarks/overhead.py; ``tracing.child_calls`` reads it too). Emptied, never replaced.
HOOK_KINDS: dict = {}


OURS, BUILTIN = "ours", "builtin"
UNKNOWN = object()  # a hook class not looked at yet


_ROUTING = _Routing()


def install() -> None:
    """Route module calls through ``route`` (idempotent). Called when a Monitor is
    created and when global tracing starts."""
    if RUNTIME.route is route:
        return
    try:
        _ROUTING.builtin_monitor = synalinks_compat.builtin_hook_monitor_class()
    except Exception:
        _ROUTING.builtin_monitor = None
    HOOK_KINDS.clear()
    RUNTIME.route = route


def hook_kind(hook):
    cls = type(hook)
    try:
        return HOOK_KINDS[cls]
    except KeyError:
        pass
    builtin = _ROUTING.builtin_monitor
    if hasattr(cls, "synalinks_obs_destination"):
        kind = OURS
    elif builtin is not None and issubclass(cls, builtin):
        kind = BUILTIN
    else:
        kind = None
    HOOK_KINDS[cls] = kind
    return kind


def hook_tracer():
    """The tracer of monitored calls while global tracing is off (built once)."""
    tracer = RUNTIME.hook_tracer
    if tracer is not None:
        return tracer
    import os

    # import synalinks seeds `random`: MLflow's own span ids must not repeat across
    # processes (as synalinks_obs.enable() does).
    os.environ.setdefault("MLFLOW_TRACE_USE_ISOLATED_RANDOM_ID_GENERATOR", "true")
    from synalinks_obs import uris
    from synalinks_obs.export import service
    from synalinks_obs.settings import load_settings
    from synalinks_obs.tracing.tracer import Tracer

    settings = load_settings()
    # No experiment of its own: every trace it starts goes to a monitor's destination.
    tracer = Tracer(settings, uris.resolve(settings.tracking_uri, environment=False).uri, service.exporter_for(settings))
    RUNTIME.hook_tracer = tracer
    return tracer


def route(module, tracer):
    """``(tracer, destination)`` for one module call (see the module docstring)."""
    try:
        monitor = None
        kinds = HOOK_KINDS
        for hook in synalinks_compat.module_hooks(module):
            kind = kinds.get(type(hook), UNKNOWN)
            if kind is None:  # Synalinks' Logger and any other hook
                continue
            if kind is UNKNOWN:
                kind = hook_kind(hook)
                if kind is None:
                    continue
            if monitor is None and kind is OURS:
                monitor = hook
            elif kind is BUILTIN:
                return None, ASIDE  # Synalinks' own Monitor writes this call
        if monitor is not None:
            if tracer is None:
                tracer = hook_tracer()
            uri, experiment = monitor.synalinks_obs_destination()
            default = tracer.destination
            destination = Destination(uri or default.tracking_uri, experiment or default.experiment_name)
            RUNTIME.monitored.add(destination)
            return tracer, destination
        if tracer is None and RUNTIME.hook_tracer is not None:
            parent = context.current_record()
            if parent is not None and parent.trace.origin in RUNTIME.monitored:
                return RUNTIME.hook_tracer, None
        return tracer, None
    except Exception as exc:  # the call goes on as without the monitor
        reporting.internal_error("Monitor hook routing", exc)
        return tracer, None

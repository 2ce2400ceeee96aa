"""Synalinks' own observability API, routed to synalinks-obs while it is active.

- ``synalinks.enable_observability(...)`` and ``synalinks.is_observability_enabled()``
  are replaced, in every public place Synalinks exports them (``synalinks``,
  ``synalinks.config``, ``synalinks.backend``, the API modules, the defining module), by
  functions that call ``synalinks_obs.enable`` / ``is_enabled``: no ordering hazard. The
  routed ``enable_observability`` takes every argument of every supported version and
  never raises: ``tracking_uri`` and ``experiment_name`` go to tracing, the training
  options some versions document (``run_name``, ``log_program_model``,
  ``registered_model_name``, ``register_prompts``, ``log_inputs``) to the runs autolog
  opens, and anything else is named once as ignored. The tracking URI and experiment are
  also kept in Synalinks' own config (its built-in Monitors read their defaults there),
  as without synalinks-obs; Synalinks' own flag is left off.
- Never two spans for one call: while synalinks-obs traces, ``HookList`` adds no
  built-in ``Monitor`` to new modules. A module that carries a built-in ``Monitor``
  anyway has that call written by the built-in hook (``tracing.routing``: ``ASIDE``).
  (Synalinks' own test suite checks that an explicit built-in Monitor emits its spans.)

Every replacement goes through the patch registry; ``uninstrument()`` restores them.
"""

from __future__ import annotations

import sys

from synalinks_obs import reporting
from synalinks_obs.compat import synalinks as synalinks_compat
from synalinks_obs.runtime import RUNTIME

GROUP = "synalinks API"
TRACING_ARGUMENTS = ("tracking_uri", "experiment_name")
TRAINING_ARGUMENTS = (
    "run_name", "log_program_model", "registered_model_name", "register_prompts", "log_inputs",
)
_log = reporting.logger(__name__)


def _positional_names(original) -> list[str]:
    """The names positional arguments bind to: the installed version's own, then ours."""
    import inspect

    names = []
    try:
        for parameter in inspect.signature(original).parameters.values():
            if parameter.kind in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD):
                names.append(parameter.name)
    except (TypeError, ValueError):
        pass
    return names or list(TRACING_ARGUMENTS)


def routed_enable_observability(original):
    """The replacement of ``enable_observability``: takes every argument any supported
    Synalinks version takes (and names anything else as ignored), never raises."""
    import functools

    positional = _positional_names(original)

    @functools.wraps(original)
    def enable_observability(*args, **kwargs):
        arguments = dict(zip(positional, args, strict=False))
        if len(args) > len(positional):
            arguments["positional arguments"] = args[len(positional):]
        arguments.update(kwargs)
        _enable_from_synalinks(arguments)

    return enable_observability


def _enable_from_synalinks(arguments: dict) -> None:
    import synalinks_obs

    options = {k: arguments.pop(k) for k in TRACING_ARGUMENTS if k in arguments}
    training = {k: arguments.pop(k) for k in TRAINING_ARGUMENTS if k in arguments}
    ignored = sorted(k for k, v in arguments.items() if v is not None)
    if ignored:
        reporting.warn_once(
            ("enable_observability ignored", tuple(ignored)),
            "synalinks-obs: synalinks.enable_observability(%s) is routed to synalinks-obs, "
            "which ignores %s", ", ".join(ignored), "this argument" if len(ignored) == 1 else "these arguments",
            log=_log,
        )
    try:
        RUNTIME.training_options = {k: v for k, v in training.items() if v is not None}
        synalinks_compat.record_observability_config(options.get("tracking_uri"), options.get("experiment_name"))
        synalinks_obs.enable(_source="synalinks", **options)
    except ValueError as exc:  # a bad value: one line, the app goes on untraced
        reporting.say(str(exc))
    except Exception as exc:  # ours: the app's call returns as Synalinks' own would
        reporting.internal_error("synalinks.enable_observability() routed to synalinks-obs", exc)


def routed_is_observability_enabled():
    """Whether synalinks-obs tracing is on (routed from ``synalinks.is_observability_enabled``)."""
    import synalinks_obs

    return synalinks_obs.is_enabled()


def _public_module(name: str, config_name: str) -> bool:
    return name == "synalinks" or name == config_name or name == "synalinks.src.backend" or (
        name.startswith("synalinks.") and not name.startswith("synalinks.src.")
    )


def install(registry) -> None:
    """Point Synalinks' public observability functions at synalinks-obs. Idempotent."""
    config = synalinks_compat.config_module()
    if config is None or registry.is_patched(config, "enable_observability"):
        return
    enable, flag = config.enable_observability, config.is_observability_enabled
    replacements = {
        "enable_observability": (enable, routed_enable_observability(enable)),
        "is_observability_enabled": (flag, routed_is_observability_enabled),
    }
    for name, module in list(sys.modules.items()):
        if module is None or not _public_module(name, config.__name__):
            continue
        namespace = getattr(module, "__dict__", {})
        for attr, (original, routed) in replacements.items():
            if namespace.get(attr) is original:
                registry.apply(module, attr, routed, GROUP)
    _no_auto_monitor_while_tracing(registry, flag)


def _no_auto_monitor_while_tracing(registry, original) -> None:
    """``HookList`` adds a built-in Monitor to every new module when Synalinks' own flag is
    on: not while synalinks-obs traces (the call would be written twice)."""
    hook_list = synalinks_compat.hook_list_module()
    if hook_list is None or hook_list.__dict__.get("is_observability_enabled") is not original:
        return

    def is_observability_enabled():
        return RUNTIME.tracer is None and original()

    is_observability_enabled.__wrapped__ = original
    registry.apply(hook_list, "is_observability_enabled", is_observability_enabled, GROUP)

"""The training autolog: ``Trainer.fit`` / ``evaluate`` wrapped so runs are logged unasked.

While tracing is on (and ``autolog_training`` is), a ``fit()`` or standalone
``evaluate()`` without a Monitor gets ``training.monitor.Monitor()`` with the defaults
(and the options of a routed ``synalinks.enable_observability(...)``, e.g. ``run_name``).
A Monitor the user passes wins (ours, or Synalinks' own ``synalinks.callbacks.Monitor``):
one ``fit()`` is never two runs, and while one of our Monitors logs, Synalinks'
``CallbackList`` adds no built-in Monitor. The wrapper also ends our Monitors' runs
``FAILED`` when ``fit()`` raises or is interrupted (whether or not tracing is on), and
still ends them ``FAILED`` when that abort itself fails.

Safe call: the wrapped method runs exactly once with the caller's arguments (a call that
does not bind raises the very ``TypeError`` it would raise unwrapped); an error of ours
in planning costs the run its log, never the training. Both patches go through the
patch registry.
"""

from __future__ import annotations

import contextvars
import functools
import inspect

from synalinks_obs import reporting
from synalinks_obs.compat import synalinks as synalinks_compat
from synalinks_obs.runtime import RUNTIME
from synalinks_obs.tracing import threads
from synalinks_obs.training import feedback

GROUP = "training"
# True while a fit() or evaluate() runs with one of our Monitors: Synalinks' CallbackList
# must then not add its own built-in Monitor (that would be a second run).
_OWN_MONITOR: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "synalinks_obs_own_monitor", default=False
)
_IN_FIT: contextvars.ContextVar[bool] = contextvars.ContextVar("synalinks_obs_in_fit", default=False)
_log = reporting.logger(__name__)


class _Monitors:
    cls = None  # training.monitor.Monitor, registered by that module when imported


_MONITORS = _Monitors()


def register_monitor_class(cls) -> None:
    _MONITORS.cls = cls


def autolog_active() -> bool:
    """Whether a fit()/evaluate() without a Monitor gets one now (tracing on, autolog on)."""
    tracer = RUNTIME.tracer
    return tracer is not None and bool(tracer.settings.autolog_training)


def _autolog_monitor():
    tracer = RUNTIME.tracer
    accepted = inspect.signature(_MONITORS.cls).parameters
    options = {k: v for k, v in RUNTIME.training_options.items() if k in accepted}
    ignored = sorted(set(RUNTIME.training_options) - set(options))
    if ignored:
        reporting.warn_once(
            ("training options ignored", tuple(ignored)),
            "synalinks-obs: the training log ignores %s (from synalinks.enable_observability)",
            ", ".join(ignored), log=_log,
        )
    monitor = _MONITORS.cls(tracking_uri=tracer.destination.tracking_uri if tracer else None, **options)
    monitor.autolog = True
    return monitor


def _flatten(callbacks) -> list:
    if callbacks is None:
        return []
    if isinstance(callbacks, (list, tuple)):
        out = []
        for item in callbacks:
            out.extend(_flatten(item))
        return out
    return [callbacks]


def _plan(program, callbacks, kind: str):
    """-> (callbacks to pass, our monitors); None to leave the call alone."""
    callback_list = synalinks_compat.callback_list_class()
    if kind == "evaluate" and (isinstance(callbacks, callback_list) or _IN_FIT.get()):
        return None  # validation inside fit(): the fit's Monitor handles it
    given = callbacks.callbacks if isinstance(callbacks, callback_list) else _flatten(callbacks)
    ours = [cb for cb in given if _MONITORS.cls is not None and isinstance(cb, _MONITORS.cls)]
    if ours:
        return callbacks, ours
    builtin = synalinks_compat.builtin_callback_monitor_class()
    if builtin is not None and any(isinstance(cb, builtin) for cb in given):
        return None  # the user's own synalinks.callbacks.Monitor wins
    if not autolog_active() or _MONITORS.cls is None:
        return None
    monitor = _autolog_monitor()
    if isinstance(callbacks, callback_list):
        monitor.set_program(program)
        monitor.set_params(callbacks.params)
        callbacks.callbacks.append(monitor)
        return callbacks, [monitor]
    return given + [monitor], [monitor]


def _wrap(original, kind: str):
    signature = inspect.signature(original)

    @functools.wraps(original)
    async def wrapper(self, *args, **kwargs):
        plan = bound = callbacks = None
        try:
            bound = signature.bind(self, *args, **kwargs)
            callbacks = bound.arguments.get("callbacks")
            plan = _plan(self, callbacks, kind)
        except TypeError:
            plan = None  # the unwrapped call raises it, below
        except Exception as exc:
            reporting.internal_error(f"setting up the training log of {kind}()", exc)
            plan = None
        if plan is None:
            return await original(self, *args, **kwargs)
        new_callbacks, monitors = plan
        if new_callbacks is not callbacks:
            bound.arguments["callbacks"] = new_callbacks
        for monitor in monitors:
            monitor._call_arguments = dict(bound.arguments)  # its datasets when Synalinks hides them
        own_token = _OWN_MONITOR.set(True)
        fit_token = _IN_FIT.set(True) if kind == "fit" else None
        try:
            return await original(*bound.args, **bound.kwargs)
        except BaseException as error:
            for monitor in monitors:
                try:
                    monitor._abort(error)
                except Exception as exc:
                    try:  # the run must not stay RUNNING: end it without the details
                        monitor._end_open_run("FAILED")
                    except Exception:
                        pass
                    reporting.internal_error("ending a failed training run", exc)
            raise
        finally:
            for monitor in monitors:
                monitor._call_arguments = None
            if fit_token is not None:
                _IN_FIT.reset(fit_token)
            _OWN_MONITOR.reset(own_token)

    return wrapper


def install(registry) -> None:
    """Wrap ``Trainer.fit`` / ``Trainer.evaluate`` (idempotent, reverted by uninstrument),
    with what a run needs from its traces: the threads its work starts follow it
    (``tracing.threads``), its per-example scores are matched (``training.feedback``)."""
    threads.install(registry)
    feedback.install(registry)
    with RUNTIME.lock:
        trainer = synalinks_compat.trainer_class()
        if trainer is None or registry.is_patched(trainer, "fit"):
            return
        for name in ("fit", "evaluate"):
            original = trainer.__dict__.get(name)
            if original is not None:
                registry.apply(trainer, name, _wrap(original, name), GROUP)
        callback_list = synalinks_compat.callback_list_module()
        flag = callback_list.__dict__.get("is_observability_enabled") if callback_list else None
        if flag is not None:

            def is_observability_enabled():
                return flag() and not _OWN_MONITOR.get()

            is_observability_enabled.__wrapped__ = flag
            registry.apply(callback_list, "is_observability_enabled", is_observability_enabled, GROUP)


def is_installed() -> bool:
    trainer = synalinks_compat.trainer_class()
    return trainer is not None and RUNTIME.patches.is_patched(trainer, "fit")

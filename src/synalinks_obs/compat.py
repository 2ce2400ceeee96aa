"""Synalinks' own observability API, routed to synalinks-obs while it is active.

- ``synalinks.enable_observability(tracking_uri=None, experiment_name=None)`` and
  ``synalinks.is_observability_enabled()`` are replaced, in every public place Synalinks
  exports them (``synalinks``, ``synalinks.config``, ``synalinks.backend``, the API
  modules, ``synalinks.src.backend[.config]``), by functions that call
  ``synalinks_obs.enable`` / ``synalinks_obs.is_enabled``. Same arguments, no ordering
  hazard. Synalinks' internal flag is left alone.
- Never two spans for one call, and Synalinks' own ``hooks.Monitor`` keeps working as
  Synalinks documents it:

  * while synalinks-obs traces, ``HookList`` adds no built-in ``Monitor`` to new modules
    (it would, had the original ``enable_observability`` been called before routing);
  * a module that carries a built-in ``Monitor`` anyway (passed explicitly, or added
    before routing) has that call written by the built-in hook, into the hook's own
    experiment, and synalinks-obs steps aside for that call (``synalinks_obs.hooks``).
    Its child calls are traced by synalinks-obs as usual.

  (Synalinks' own test suite checks that an explicit built-in Monitor emits its spans;
  silencing it, as an earlier version did, changed 13 of its results.)

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
    _no_auto_monitor_while_tracing(config.is_observability_enabled)
    backport_call_usage()
    from synalinks_obs import hooks

    hooks.install()  # built-in Monitors write their modules' calls; ours route them


def unroute() -> None:
    """Put Synalinks' original functions back."""
    while _replaced:
        module, attr, original = _replaced.pop()
        setattr(module, attr, original)
    while _backported:
        cls, module, original, name = _backported.pop()
        setattr(cls, name, original)
        module.__dict__.pop("current_call_usage", None)


_LM_MODULE = "synalinks.src.modules.language_models.language_model"


def backport_call_usage() -> None:
    """Synalinks 0.9.x: give ``LanguageModel`` the ``current_call_usage()`` of 0.10.

    0.10 reports each LM call's usage (tokens, cost, error) through a ContextVar read by
    ``current_call_usage()``, which is where synalinks-obs takes the cost and tokens of
    an LM span from. 0.9 only keeps the last call's numbers on the instance
    (``last_call_cost``, ``last_call_prompt_tokens``...). This wraps
    ``LanguageModel.call`` (class level, restored by ``unroute``) to publish those
    numbers the 0.10 way right after each call, in the caller's context. Nothing
    happens on 0.10+.
    """
    module = sys.modules.get(_LM_MODULE)
    if module is None or hasattr(module, "current_call_usage"):  # 0.10+, or done already
        return
    import contextvars
    import functools

    usage_var = contextvars.ContextVar("synalinks_obs_lm_call_usage", default=None)

    def current_call_usage():
        """Usage of the ``LanguageModel`` call that just ran in this task (backport)."""
        return usage_var.get()

    cls = module.LanguageModel
    original = cls.__dict__["call"]
    last_error = contextvars.ContextVar("synalinks_obs_lm_last_error", default=None)

    @functools.wraps(original)
    async def call(self, *args, **kwargs):
        calls = getattr(self, "cumulated_calls", 0)
        failed = getattr(self, "cumulated_failed_calls", 0)
        last_error.set(None)
        result = await original(self, *args, **kwargs)
        if getattr(self, "cumulated_calls", 0) != calls:
            prompt = getattr(self, "last_call_prompt_tokens", 0) or 0
            completion = getattr(self, "last_call_completion_tokens", 0) or 0
            usage_var.set({
                "input_tokens": prompt,
                "output_tokens": completion,
                "total_tokens": getattr(self, "last_call_tokens", 0) or prompt + completion,
                "cost": getattr(self, "last_call_cost", None),
            })
        elif result is None and getattr(self, "cumulated_failed_calls", 0) != failed:
            usage_var.set({"error": last_error.get() or "every attempt failed"})
        return result

    cls.call = call
    module.current_call_usage = current_call_usage
    _backported.append((cls, module, original, "call"))
    retrying = cls.__dict__.get("_call_with_retry")
    if retrying is not None:  # where 0.9 raises the last attempt's error (then warns)

        @functools.wraps(retrying)
        async def _call_with_retry(self, *args, **kwargs):
            try:
                return await retrying(self, *args, **kwargs)
            except Exception as exc:
                last_error.set(str(exc) or type(exc).__name__)
                raise

        cls._call_with_retry = _call_with_retry
        _backported.append((cls, module, retrying, "_call_with_retry"))


_backported: list = []  # (LanguageModel, its module, original method, method name)


def _no_auto_monitor_while_tracing(original) -> None:
    """``HookList`` adds a built-in Monitor to every new module when Synalinks' own flag is
    on: not while synalinks-obs traces (the call would be written twice)."""
    hook_list = sys.modules.get("synalinks.src.hooks.hook_list")
    if hook_list is None or hook_list.__dict__.get("is_observability_enabled") is not original:
        return
    from synalinks_obs.instrument import STATE

    def is_observability_enabled():
        return STATE.tracer is None and original()

    is_observability_enabled.__wrapped__ = original
    hook_list.is_observability_enabled = is_observability_enabled
    _replaced.append((hook_list, "is_observability_enabled", original))


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

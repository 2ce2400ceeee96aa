"""Synalinks 0.9.x: give ``LanguageModel`` the ``current_call_usage()`` of 0.10.

0.10 reports each LM call's usage (tokens, cost, error) through a ContextVar read by
``current_call_usage()``, which is where synalinks-obs takes the cost and tokens of an LM
span from. 0.9 only keeps the last call's numbers on the instance. ``install`` wraps
``LanguageModel.call`` (class level, through the patch registry) to publish those numbers
the 0.10 way right after each call, in the caller's context, and adds the function to
the LM module. Nothing happens on 0.10+.
"""

from __future__ import annotations

import contextvars
import functools

from synalinks_obs.compat import synalinks as synalinks_compat

GROUP = "LM usage (Synalinks 0.9)"


def install(registry) -> None:
    module = synalinks_compat.language_model_module()
    if module is None or hasattr(module, "current_call_usage"):  # 0.10+, or done already
        return
    usage_var = contextvars.ContextVar("synalinks_obs_lm_call_usage", default=None)
    last_error = contextvars.ContextVar("synalinks_obs_lm_last_error", default=None)

    def current_call_usage():
        """Usage of the ``LanguageModel`` call that just ran in this task (backport)."""
        return usage_var.get()

    cls = module.LanguageModel
    original = cls.__dict__["call"]

    @functools.wraps(original)
    async def call(self, *args, **kwargs):
        calls, failed = synalinks_compat.call_counters(self)
        last_error.set(None)
        result = await original(self, *args, **kwargs)
        now_calls, now_failed = synalinks_compat.call_counters(self)
        if now_calls != calls:
            usage_var.set(synalinks_compat.last_call_usage(self))
        elif result is None and now_failed != failed:
            usage_var.set({"error": last_error.get() or "every attempt failed"})
        return result

    registry.apply(cls, "call", call, GROUP)
    registry.apply(module, "current_call_usage", current_call_usage, GROUP)
    retrying = cls.__dict__.get(synalinks_compat.LM_RETRY_METHOD)
    if retrying is None:
        return

    @functools.wraps(retrying)
    async def _call_with_retry(self, *args, **kwargs):  # where 0.9 raises the last error
        try:
            return await retrying(self, *args, **kwargs)
        except Exception as exc:
            last_error.set(str(exc) or type(exc).__name__)
            raise

    registry.apply(cls, synalinks_compat.LM_RETRY_METHOD, _call_with_retry, GROUP)

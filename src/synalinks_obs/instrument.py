"""Patch and unpatch Synalinks' module classes.

``instrument(synalinks_module)`` replaces ``Module.__call__`` with a traced ``async``
wrapper, at class level, so every module is traced whenever it was built. Subclasses that
override ``__call__`` get the same wrapper: those that exist when we patch (found by
walking ``Module.__subclasses__()``) and those defined later (through a
``Module.__init_subclass__`` hook, which costs nothing per instance, unlike wrapping
``__init__``). A subclass's ``super().__call__`` lands in the wrapped ``Module.__call__``
for the same module object: that inner wrapper steps aside, so one call is one span.

Patching is idempotent (a second ``instrument`` is a no-op) and reversible:
``uninstrument()`` puts back the exact original functions (each wrapper keeps its
original in ``__wrapped__``). Nothing is stored on module instances, so ``deepcopy``,
``save`` and ``load`` behave as without tracing.

The wrapper never breaks a call: an error inside synalinks-obs is logged once and the
call proceeds; the user's own exceptions propagate unchanged (same object, traceback).
"""

from __future__ import annotations

import functools
import logging

from synalinks_obs import spans

_logger = logging.getLogger("synalinks_obs")

_MARK = "__synalinks_obs_wrapper__"


class _State:
    tracer = None  # the Tracer while tracing is on; None means pass-through
    module_class = None  # synalinks' Module once patched
    patched: dict = {}  # class -> original __call__
    had_own_init_subclass = False
    original_init_subclass = None
    # Set by synalinks_obs.hooks once a Monitor hook exists or tracing starts:
    # ``route(module, tracer)`` returns the ``(tracer, destination)`` of a call (a
    # monitored module's own experiment; None: where it would go anyway), or
    # ``(None, ASIDE)`` for a module whose call Synalinks' own Monitor hook writes.
    route = None


# The destination of a call synalinks-obs leaves to Synalinks' built-in Monitor hook.
ASIDE = object()


STATE = _State()


def _wrap_call(original):
    """The traced replacement of one class's ``__call__``."""
    begin, enter, leave, current = spans.begin, spans.enter, spans.leave, spans._CURRENT

    @functools.wraps(original)
    async def __call__(self, *args, **kwargs):
        tracer = STATE.tracer
        destination = None
        route = STATE.route
        if route is not None:  # a Monitor hook exists in this process, or tracing is on
            tracer, destination = route(self, tracer)
            if destination is ASIDE:
                return await _call_aside(original, self, args, kwargs)
        if tracer is None:
            return await original(self, *args, **kwargs)
        parent = current.get()
        if parent is not None and (
            not parent.trace.sampled or (parent.module_id == id(self) and parent.end_ns is None)
        ) and (destination is None or destination == parent.trace.destination):
            # Inside an unsampled trace, or the super().__call__ of a traced override
            # (unless a monitored module starts its own trace here).
            return await original(self, *args, **kwargs)
        try:
            record = begin(self, args, kwargs, tracer, destination)
            if not record.trace.sampled:
                tokens = enter(record)
                try:
                    return await original(self, *args, **kwargs)
                finally:
                    leave(tokens)
            tokens = enter(record)
            usage_getter = tracer.usage_getter(type(self)) if record.span_type in (
                "CHAT_MODEL", "EMBEDDING"
            ) else None
            usage_before = usage_getter() if usage_getter is not None else None
        except Exception as exc:
            tracer.internal_error("span start", exc)
            return await original(self, *args, **kwargs)
        try:
            outputs = await original(self, *args, **kwargs)
        except BaseException as exc:
            _close(tracer, record, tokens, None, exc, None)
            raise
        usage = None
        if usage_getter is not None:
            try:
                usage = usage_getter()
                if usage is usage_before:
                    usage = None
            except Exception:
                usage = None
        _close(tracer, record, tokens, outputs, None, usage)
        return outputs

    setattr(__call__, _MARK, True)
    return __call__


async def _call_aside(original, module, args, kwargs):
    """A call Synalinks' own Monitor hook writes: no record of ours, and no span of ours
    in MLflow's context while it runs, so that hook starts its own trace in its own
    experiment. Our records of its child calls nest under the enclosing record."""
    context = spans.CONTEXT
    if context is None:
        return await original(module, *args, **kwargs)
    from opentelemetry.trace import INVALID_SPAN

    token = context.attach(INVALID_SPAN)
    try:
        return await original(module, *args, **kwargs)
    finally:
        context.detach(token)


def _close(tracer, record, tokens, outputs, error, usage) -> None:
    try:
        spans.leave(tokens)
    except Exception as exc:
        tracer.internal_error("context reset", exc)
    try:
        tracer.end(record, outputs, error, usage)
    except Exception as exc:
        tracer.internal_error("span end", exc)


def _patch_class(cls) -> None:
    own = cls.__dict__.get("__call__")
    if own is None or getattr(own, _MARK, False) or cls in STATE.patched:
        return
    STATE.patched[cls] = own
    cls.__call__ = _wrap_call(own)


def _all_subclasses(cls):
    seen = set()
    stack = [cls]
    while stack:
        klass = stack.pop()
        for sub in klass.__subclasses__():
            if sub not in seen:
                seen.add(sub)
                stack.append(sub)
    return seen


def instrument(module_class) -> None:
    """Patch ``module_class`` (Synalinks' ``Module``) and its subclasses. Idempotent."""
    if STATE.module_class is module_class:
        return
    STATE.module_class = module_class
    _patch_class(module_class)
    for sub in _all_subclasses(module_class):
        _patch_class(sub)

    own_hook = module_class.__dict__.get("__init_subclass__")
    STATE.had_own_init_subclass = own_hook is not None
    STATE.original_init_subclass = own_hook

    def __init_subclass__(cls, **kwargs):
        if own_hook is not None:
            own_hook.__func__(cls, **kwargs)
        else:
            super(module_class, cls).__init_subclass__(**kwargs)
        try:
            _patch_class(cls)
        except Exception as exc:  # never break a class definition
            _logger.warning("synalinks-obs: cannot instrument %s: %r", cls.__qualname__, exc)

    module_class.__init_subclass__ = classmethod(__init_subclass__)


def uninstrument() -> None:
    """Restore every patched ``__call__`` and ``Module.__init_subclass__`` exactly."""
    module_class = STATE.module_class
    if module_class is None:
        return
    for cls, original in list(STATE.patched.items()):
        cls.__call__ = original
    STATE.patched.clear()
    if STATE.had_own_init_subclass:
        module_class.__init_subclass__ = STATE.original_init_subclass
    else:
        try:
            del module_class.__init_subclass__
        except AttributeError:
            pass
    STATE.module_class = None
    STATE.route = None


def is_instrumented() -> bool:
    return STATE.module_class is not None

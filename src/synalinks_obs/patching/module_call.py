"""The traced ``Module.__call__``, applied at class level to Synalinks' ``Module``.

``install(registry)`` replaces ``Module.__call__`` with a traced ``async`` wrapper, so
every module is traced whenever it was built. Subclasses that override ``__call__`` with
a coroutine get the same wrapper: those that exist when we patch (``__subclasses__``)
and those defined later (a ``Module.__init_subclass__`` hook: nothing per instance). A
subclass's ``super().__call__`` lands in the wrapped ``Module.__call__`` for the same
module object: that inner wrapper steps aside, so one call is one span. A *synchronous*
``__call__`` override is left as it is: it returns the base call's coroutine, which is
traced. Nothing is stored on module instances (``deepcopy``, ``save``, ``load`` unchanged).

Safe by construction (MLflow's ``safe_patch``): ``_start`` and ``_finish`` hold all our
work and never raise (an error of ours goes to ``reporting.internal_error``: logged
once, or raised in strict mode); the user's call runs exactly once, outside any ``try``
of ours that could call it again, and its exception propagates untouched: the same
object, and the same traceback as without tracing. On its way out the wrapper unlinks its
own entry from the exception's ``__traceback__`` (``tb_next`` is writable) before a bare
``raise``, which re-raises without adding an entry for the frame it runs in; so no frame
of this file shows in the app's traceback, in pytest's or in the span's stack trace.
"""

from __future__ import annotations

import functools
import inspect

from synalinks_obs import reporting
from synalinks_obs.compat import synalinks as synalinks_compat
from synalinks_obs.runtime import RUNTIME
from synalinks_obs.tracing import context, streams
from synalinks_obs.tracing.child_calls import close_child, open_child
from synalinks_obs.tracing.context import CURRENT, enter, leave
from synalinks_obs.tracing.records import begin
from synalinks_obs.tracing.routing import ASIDE

MARK = "__synalinks_obs_wrapper__"
GROUP = "module calls"
_LM_SPAN_TYPES = ("CHAT_MODEL", "EMBEDDING")


class _Aside:
    """A call Synalinks' own Monitor hook writes: no record of ours, and no span of ours
    in MLflow's context while it runs (that hook then starts its own trace)."""

    __slots__ = ("handle",)

    def __init__(self, handle):
        self.handle = handle


def _start(module, args, kwargs):
    """The entered record of a traced call, an ``_Aside``, or None to pass through."""
    try:
        tracer = RUNTIME.tracer
        destination = None
        route = RUNTIME.route
        if route is not None:  # a Monitor hook exists in this process, or tracing is on
            tracer, destination = route(module, tracer)
            if destination is ASIDE:
                return _Aside(context.attach_no_span())
        if tracer is None:
            return None
        parent = CURRENT.get()
        if parent is not None and (
            not parent.trace.sampled or (parent.module is module and parent.end_ns is None)
        ) and (destination is None or destination == parent.trace.origin):
            # Inside an unsampled trace, or the super().__call__ of a traced override
            # (unless a monitored module starts its own trace here).
            return None
        record = begin(module, args, kwargs, tracer, destination, parent)
        if record.trace.sampled and record.span_type in _LM_SPAN_TYPES:
            getter = tracer.usage_getter(type(module))
            if getter is not None:
                try:
                    record.usage_before = getter()
                    record.usage_getter = getter
                except Exception as exc:  # the span goes on without cost and tokens
                    reporting.internal_error("reading the LM call's usage", exc)
        enter(record)  # last: nothing of ours can fail between it and the call
        return record
    except Exception as exc:
        reporting.internal_error("span start", exc)
        return None


def _finish(record, outputs, error) -> None:
    """Leave the call's context and hand the finished record over (never raises)."""
    try:
        if type(record) is _Aside:
            context.detach(record.handle)
            return
        leave(record)
        if not record.trace.sampled:
            return
        if error is None and record.span_type == "CHAT_MODEL" and streams.is_stream(outputs):
            streams.follow(record, outputs)  # its span ends when the stream has been read
            return
        usage = None
        getter = record.usage_getter
        if getter is not None:
            try:
                usage = getter()
            except Exception as exc:
                reporting.internal_error("reading the LM call's usage", exc)
            if usage is record.usage_before:
                usage = None
        record.trace.tracer.end(record, outputs, error, usage)
    except Exception as exc:
        reporting.internal_error("span end", exc)


def wrap(original):
    """The traced replacement of one class's ``__call__``.

    A child call of the common kind goes through ``tracing.child_calls`` (two function
    calls a span); any other, and any call that raises, through ``_start``/``_finish``."""
    start, finish, runtime = _start, _finish, RUNTIME

    @functools.wraps(original)
    async def __call__(self, *args, **kwargs):
        record = None
        child = False
        if runtime.tracer is not None or runtime.route is not None:
            record = open_child(self, args, kwargs)
            if record is None:
                record = start(self, args, kwargs)
            else:
                child = True
        try:
            outputs = await original(self, *args, **kwargs)
        except BaseException as exc:
            if record is not None:
                finish(record, None, exc)
            tb = exc.__traceback__
            if tb is not None and tb.tb_frame.f_code is _WRAPPER_CODE:
                exc.__traceback__ = tb.tb_next  # our own frame, not the app's
            raise
        if record is not None and not (child and close_child(record, outputs)):
            finish(record, outputs, None)
        return outputs

    setattr(__call__, MARK, True)
    return __call__


_WRAPPER_CODE = wrap(lambda *a: None).__code__  # every wrapper shares this code object


def _patch_class(registry, cls) -> None:
    own = cls.__dict__.get("__call__")
    if own is None or getattr(own, MARK, False) or registry.is_patched(cls, "__call__"):
        return
    if not inspect.iscoroutinefunction(own):
        return  # a synchronous override returns the base call's coroutine: traced there
    registry.apply(cls, "__call__", wrap(own), GROUP)


def _all_subclasses(cls):
    seen = set()
    stack = [cls]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in seen:
                seen.add(sub)
                stack.append(sub)
    return seen


def install(registry) -> None:
    """Patch Synalinks' ``Module`` and its subclasses, now and later. Idempotent."""
    module_class = synalinks_compat.module_class()
    if registry.is_patched(module_class, "__init_subclass__"):
        return
    _patch_class(registry, module_class)
    for sub in _all_subclasses(module_class):
        _patch_class(registry, sub)
    own_hook = module_class.__dict__.get("__init_subclass__")

    def __init_subclass__(cls, **kwargs):
        if own_hook is not None:
            own_hook.__func__(cls, **kwargs)
        else:
            super(module_class, cls).__init_subclass__(**kwargs)
        try:
            _patch_class(registry, cls)
        except Exception as exc:  # never break a class definition
            reporting.internal_error(f"instrumenting {cls.__qualname__}", exc)

    registry.apply(module_class, "__init_subclass__", classmethod(__init_subclass__), GROUP)


def is_installed() -> bool:
    try:
        module_class = synalinks_compat.module_class()
    except Exception:
        return False
    return RUNTIME.patches.is_patched(module_class, "__init_subclass__")

"""``trace_context``: a session, a user and tags on every trace started in a scope.

::

    with synalinks_obs.trace_context(session_id="chat-42", user_id="ada", tags={"team": "qa"}):
        answer = await program(question)

    @synalinks_obs.trace_context(session_id="nightly-eval")
    async def handle(request): ...

Every trace started inside the scope (a program call; each call of an ``asyncio.gather``
or a task made inside it) carries MLflow's standard trace metadata ``mlflow.trace.session``
and ``mlflow.trace.user`` (what the MLflow UI's session view groups a conversation by),
any other ``metadata`` given, and the ``tags``. No code goes into the modules. When MLflow
is imported and has ``mlflow.tracing.context`` (3.6+), the scope is entered there too, so
MLflow's own traces started inside (an autologger's, ``@mlflow.trace``) carry the same
keys. Scopes nest: an inner scope's values win, the outer ones' other keys stay.

A context manager (``with`` and ``async with``) and a decorator (functions and coroutine
functions: each call enters a scope of its own). Threads started inside do not inherit
it (Python's context variables); the traces of such a thread are not stamped.
"""

from __future__ import annotations

import functools
import inspect
import sys

from synalinks_obs.compat import mlflow as mlflow_compat
from synalinks_obs.tracing.context import STAMPS


def _text(name: str, value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(
            f"synalinks-obs: trace_context({name}={value!r}) must be a string; e.g. {name}='chat-42'"
        )
    text = str(value)
    if not text.strip():
        raise ValueError(f"synalinks-obs: trace_context({name}='') is empty; give a value or leave it out")
    return text


def _mapping(name: str, value) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(
            f"synalinks-obs: trace_context({name}={value!r}) must be a dict of strings; "
            f"e.g. {name}={{'team': 'search'}}"
        )
    return {str(key): str(item) for key, item in value.items()}


class TraceContext:
    """See the module docstring; made by ``synalinks_obs.trace_context(...)``."""

    def __init__(self, session_id=None, user_id=None, tags=None, metadata=None):
        self.session_id = _text("session_id", session_id)
        self.user_id = _text("user_id", user_id)
        self.tags = _mapping("tags", tags)
        self.metadata = _mapping("metadata", metadata)
        if self.session_id is not None:
            self.metadata[mlflow_compat.TRACE_SESSION_KEY] = self.session_id
        if self.user_id is not None:
            self.metadata[mlflow_compat.TRACE_USER_KEY] = self.user_id
        self._entered: list = []  # (our token, MLflow's scope) per `with`, innermost last

    def _copy(self) -> TraceContext:
        return TraceContext(self.session_id, self.user_id, self.tags, self.metadata)

    # -- as a context manager ---------------------------------------------------------
    def __enter__(self) -> TraceContext:
        outer = STAMPS.get()
        tags = {**(outer[0] if outer else {}), **self.tags}
        metadata = {**(outer[1] if outer else {}), **self.metadata}
        token = STAMPS.set((tags, metadata))
        scope = None
        if "mlflow" in sys.modules:
            factory = mlflow_compat.mlflow_trace_context()
            if factory is not None:
                try:
                    scope = factory(tags=self.tags or None, metadata=self.metadata or None)
                    scope.__enter__()
                except BaseException:
                    STAMPS.reset(token)
                    raise
        self._entered.append((token, scope))
        return self

    def __exit__(self, *exc_info) -> None:
        token, scope = self._entered.pop()
        try:
            if scope is not None:
                scope.__exit__(*exc_info)
        finally:
            STAMPS.reset(token)

    async def __aenter__(self) -> TraceContext:
        return self.__enter__()

    async def __aexit__(self, *exc_info) -> None:
        self.__exit__(*exc_info)

    # -- as a decorator ---------------------------------------------------------------
    def __call__(self, function):
        if inspect.iscoroutinefunction(function):

            @functools.wraps(function)
            async def run_async(*args, **kwargs):
                with self._copy():
                    return await function(*args, **kwargs)

            return run_async

        @functools.wraps(function)
        def run(*args, **kwargs):
            with self._copy():
                return function(*args, **kwargs)

        return run

    def __repr__(self) -> str:
        return (f"trace_context(session_id={self.session_id!r}, user_id={self.user_id!r}, "
                f"tags={self.tags!r})")

"""Streamed LM answers followed to their end: ``StreamingIterator.__anext__``, patched.

A ``LanguageModel`` called with ``streaming=True`` returns a ``StreamingIterator``; the
traced call keeps its record open (``tracing.streams.follow``). The class's ``__anext__``
is replaced (once, through the registry; ``uninstrument()`` puts it back) by a wrapper
that, for a stream we follow, notes each chunk read and ends the record when the stream
ends or fails; any other stream goes straight to the original. The original runs exactly
once per step and its exceptions (``StopAsyncIteration`` included) propagate untouched.
"""

from __future__ import annotations

import functools

from synalinks_obs import reporting
from synalinks_obs.compat import synalinks as synalinks_compat
from synalinks_obs.tracing import streams

GROUP = "module calls"


def install(registry) -> None:
    cls = synalinks_compat.streaming_iterator_class()
    if cls is None or registry.is_patched(cls, "__anext__"):
        return
    registry.apply(cls, "__anext__", _wrap(cls.__dict__["__anext__"]), GROUP)


def _wrap(original):
    following = streams.following

    @functools.wraps(original)
    async def __anext__(self):
        stream = following(self)
        if stream is None:
            return await original(self)
        try:
            chunk = await original(self)
        except StopAsyncIteration:
            _end(stream, self, None)
            raise
        except BaseException as exc:
            _end(stream, self, exc)
            raise
        try:
            stream.seen(chunk)
        except Exception as exc:
            reporting.internal_error("reading a streamed chunk", exc)
        return chunk

    return __anext__


def _end(stream, iterator, error) -> None:
    try:
        stream.finish(iterator, error)
    except Exception as exc:
        reporting.internal_error("ending a streamed call's span", exc)

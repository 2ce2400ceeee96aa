"""A streamed LM answer as one span, open until the stream has been read.

A ``LanguageModel`` called with ``streaming=True`` returns a ``StreamingIterator`` at
once; the answer arrives while the caller reads it, usually after the program call that
made it has returned. The LM call's record stays open (``follow``): the patched
``StreamingIterator.__anext__`` (``patching.streaming``) notes the first token's time and
the text read; when the stream ends, the record finishes with the assembled answer as its
output (``{"role": "assistant", "content": ...}``), its time to first token, and its end
time. Its usage is counted from LiteLLM's raw chunks, the way LiteLLM reports a streamed call
(the provider's usage chunk, or LiteLLM's own token count), priced by LiteLLM
(``usage_of``, ~1 ms of LiteLLM's work): at the stream's end when it is read inside the
call that made it (the cost rolls up into the calls around it), else on the exporter
thread (``settle``): the calls around it had already returned, so that cost stays on the
LM span (MLflow's trace-level cost, summed from the spans, still counts it).

A stream that fails ends its span with the error; one dropped before its end (garbage
collected) ends it then, with what had been read.
"""

from __future__ import annotations

import time
import weakref

from synalinks_obs import reporting
from synalinks_obs.compat import synalinks as synalinks_compat
from synalinks_obs.runtime import RUNTIME


class _Stream:
    """What is known of a stream being read: its record, the text so far."""

    __slots__ = ("record", "content", "reasoning", "done", "finalizer")

    def __init__(self, record):
        self.record = record
        self.content = []
        self.reasoning = []
        self.done = False
        self.finalizer = None

    def seen(self, chunk) -> None:
        if type(chunk) is not dict:
            return
        content = chunk.get("content")
        reasoning = chunk.get("reasoning_content")
        if content or reasoning:
            record = self.record
            if record.first_token_ns is None:
                record.first_token_ns = time.time_ns()
            if content:
                self.content.append(str(content))
            if reasoning:
                self.reasoning.append(str(reasoning))

    def answer(self) -> dict:
        answer = {"role": "assistant", "content": "".join(self.content)}
        if self.reasoning:
            answer["reasoning_content"] = "".join(self.reasoning)
        return answer

    def finish(self, iterator, error: BaseException | None) -> None:
        """End the record (once): the answer read, the error if the stream failed."""
        if self.done:
            return
        self.done = True
        if self.finalizer is not None:
            self.finalizer.detach()
        streams = RUNTIME.open_streams
        if streams is not None and iterator is not None:
            streams.pop(iterator, None)
        record = self.record
        usage = None
        record.stream = iterator if error is None else None
        parent = record.parent
        if record.stream is not None and parent is not None and parent.end_ns is None:
            # Read inside the call that made it: its usage and cost now (~1 ms), so they
            # roll up into the calls around it, which are still running.
            record.stream = None
            usage = usage_of(iterator)
        record.trace.tracer.end(record, None if error is not None else self.answer(), error, usage)


def is_stream(value) -> bool:
    """Whether an LM call returned a stream (``StreamingIterator``)."""
    cls = _classes.streaming
    if cls is None:
        cls = _classes.streaming = synalinks_compat.streaming_iterator_class() or False
    return cls is not False and type(value) is cls


class _Classes:
    streaming = None  # StreamingIterator, False when this Synalinks has none


_classes = _Classes()


def follow(record, iterator) -> None:
    """Keep ``record`` open until ``iterator`` (the stream it returned) has been read."""
    streams = RUNTIME.open_streams
    if streams is None:
        streams = RUNTIME.open_streams = weakref.WeakKeyDictionary()
    stream = _Stream(record)
    streams[iterator] = stream
    stream.finalizer = weakref.finalize(iterator, _dropped, stream)
    stream.finalizer.atexit = False


def _dropped(stream) -> None:
    """The stream was garbage collected before its end: its span ends now."""
    if not stream.done:
        try:
            stream.finish(None, None)
        except Exception as exc:
            reporting.internal_error("ending a dropped stream's span", exc)


def following(iterator):
    """The ``_Stream`` of an iterator we follow, or None."""
    streams = RUNTIME.open_streams
    return streams.get(iterator) if streams is not None else None


def usage_of(iterator) -> dict | None:
    """A finished stream's usage and cost, as LiteLLM counts them (None if unknown)."""
    try:
        return synalinks_compat.streamed_usage(iterator)
    except Exception as exc:
        reporting.internal_error("counting a streamed answer's usage", exc)
        return None


def settle(record) -> None:
    """Count a finished stream's usage and cost (exporter thread: a stream read after the
    calls around it had returned)."""
    iterator, record.stream = record.stream, None
    usage = usage_of(iterator)
    if usage:
        record.usage = usage
        cost = usage.get("cost")
        if isinstance(cost, (int, float)):
            record.cost += float(cost)

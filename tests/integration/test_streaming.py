"""Streamed LM answers (issue 15): one span with the assembled output, its time to first
token and the usage, read back from the sqlite store.

A ``LanguageModel`` called with ``streaming=True`` returns Synalinks' ``StreamingIterator``
at once; the fake LLM (examples/_offline_lm.py) answers ``"stream": true`` with OpenAI's
server-sent chunks, a pause between them (``stream_interval``), so the first token comes
measurably before the last.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from traces import load_traces, render

INTERVAL = 0.05  # seconds between the fake LLM's chunks


@pytest.fixture
def synalinks():
    import synalinks as module

    return module


@pytest.fixture
def traced(sqlite_uri, request, monkeypatch, fake_llm):
    import mlflow

    import synalinks_obs

    mlflow.tracing.reset()  # MLflow's tracer of an earlier test would keep that test's store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri)
    experiment = f"exp_{request.node.name}"[:200]
    synalinks_obs.enable(tracking_uri=sqlite_uri, experiment_name=experiment)
    fake_llm.stream_interval = INTERVAL

    def read():
        assert synalinks_obs.flush(30), "spans were still queued after 30 s"
        return load_traces(sqlite_uri, experiment)

    yield read
    fake_llm.stream_interval = 0.0
    synalinks_obs.flush(30)
    synalinks_obs.disable()


def _messages(synalinks, text):
    return synalinks.ChatMessages(messages=[synalinks.ChatMessage(role="user", content=text)])


def _check_stream_span(span, text, read_before):
    attributes = span.attributes
    assert span.span_type == "CHAT_MODEL"
    assert span.outputs["choices"][0]["message"]["content"] == text
    ttft = attributes["synalinks.time_to_first_token"]
    duration = attributes["synalinks.duration"]
    # The first chunk after the role chunk comes one interval in; the span lasts until
    # the stream has been read (several intervals).
    assert 0 < ttft < duration
    assert duration >= read_before
    usage = attributes["mlflow.chat.tokenUsage"]
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert attributes["synalinks.cost"] > 0
    assert attributes["mlflow.llm.cost"]["total_cost"] == pytest.approx(attributes["synalinks.cost"])


def test_a_streamed_lm_call_is_one_span_with_answer_ttft_and_usage(traced, synalinks, lm):
    async def main():
        stream = await lm(_messages(synalinks, "Tell me a story"), streaming=True)
        parts = []
        start = asyncio.get_running_loop().time()
        async for chunk in stream:
            parts.append(chunk.get("content") or "")
        return "".join(parts), asyncio.get_running_loop().time() - start

    text, read_for = asyncio.run(main())
    assert text
    (trace,) = traced()
    (span,) = trace.data.spans
    _check_stream_span(span, text, read_for)
    assert json.loads(trace.info.trace_metadata["mlflow.trace.tokenUsage"]) == (
        span.attributes["mlflow.chat.tokenUsage"]
    )


def test_a_stream_read_inside_a_module_nests_and_rolls_up(traced, synalinks, lm):
    class Streamer(synalinks.Module):
        """Streams the LM's answer and returns it whole."""

        def __init__(self, language_model, **kwargs):
            super().__init__(**kwargs)
            self.language_model = language_model

        async def call(self, inputs, training=False):
            stream = await self.language_model(_messages(synalinks, inputs.get("question")), streaming=True)
            message = await stream.aconsume()
            return message

        async def compute_output_spec(self, inputs, training=False):
            return synalinks.ChatMessage.to_symbolic_data_model()

    class Question(synalinks.DataModel):
        question: str

    async def main():
        module = Streamer(lm, name="streamer")
        return await module(Question(question="Tell me a story"))

    message = asyncio.run(main())
    text = message.get("content")
    assert text
    (trace,) = traced()
    (root,) = [s for s in trace.data.spans if s.parent_id is None]
    (chat,) = [s for s in trace.data.spans if s.span_type == "CHAT_MODEL"]
    assert chat.parent_id == root.span_id, render(trace)
    _check_stream_span(chat, text, 0.0)
    assert chat.end_time_ns <= root.end_time_ns
    assert root.attributes["synalinks.cost"] == pytest.approx(chat.attributes["synalinks.cost"])


def test_a_stream_dropped_half_read_ends_its_span(traced, synalinks, lm):
    async def main():
        stream = await lm(_messages(synalinks, "Tell me a story"), streaming=True)
        first = await stream.__anext__()
        del stream
        return first.get("content")

    first = asyncio.run(main())
    import gc

    gc.collect()
    (trace,) = traced()
    (span,) = trace.data.spans
    assert span.outputs["choices"][0]["message"]["content"] == first
    assert span.attributes["synalinks.time_to_first_token"] > 0

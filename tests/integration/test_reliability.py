"""Tracing never changes what the app sees, and loses nothing it was given (in process).

Each test runs real Synalinks programs with tracing on into its own sqlite store and
checks two things: the app's side (results, exceptions, their objects, messages,
tracebacks and chains) is exactly what an untraced run gives, and the store (read back
through MLflow's client) holds exactly the expected spans.

- user exceptions, ``KeyboardInterrupt`` and ``asyncio.CancelledError`` propagate
  unchanged and are recorded;
- errors of synalinks-obs itself (a bug in the span path, a payload that cannot be
  serialised, an MLflow API that raises, a module with a broken ``__repr__`` /
  ``description`` / ``name``) are logged once and the call returns its real result;
- payload size limit, redaction and switching capture off, through the settings and
  their ``SYNALINKS_OBS_*`` variables;
- 1,000 concurrent calls (``asyncio.gather``) and 8 threads: exactly the expected
  complete, correctly nested traces; sampling keeps whole traces;
- the store side on its own (``synalinks_obs._writer.Writer``): a store that fails,
  one that is down, a full buffer.

Store outages, fork and exit are in ``test_reliability_process.py`` (subprocesses).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import traceback

import pytest
from app_processes import read_traces, root

FLUSH = 60.0


@pytest.fixture
def sl():
    import synalinks

    return synalinks


@pytest.fixture
def obs(sqlite_uri, request, monkeypatch):
    """``obs.enable(**options)`` into a fresh sqlite store (also the app's own MLflow
    tracking URI, as the launcher sets it up); ``obs.traces()`` reads back."""
    import synalinks_obs

    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri)

    class Obs:
        uri = sqlite_uri
        experiment = f"rel_{request.node.name}"[:120]

        def enable(self, **options):
            synalinks_obs.enable(tracking_uri=self.uri, experiment_name=self.experiment, **options)

        def flush(self):
            assert synalinks_obs.flush(FLUSH), f"spans still queued after {FLUSH} s"

        def traces(self, real_only=True):
            self.flush()
            traces = read_traces(self.uri, self.experiment)
            if real_only:
                traces = [t for t in traces if not root(t).attributes["synalinks.is_symbolic"]]
            return traces

    yield Obs()
    synalinks_obs.flush(FLUSH)
    synalinks_obs.disable()


def children(trace, span):
    return sorted(
        (s for s in trace.data.spans if s.parent_id == span.span_id),
        key=lambda s: s.start_time_ns,
    )


def span(trace, name):
    (found,) = [s for s in trace.data.spans if s.name == name]
    return found


def models(sl):
    class Question(sl.DataModel):
        question: str

    return Question


def step_class(sl):
    class Step(sl.Module):
        """Copies its input."""

        async def call(self, inputs, training=False, **kwargs):
            return inputs.clone()

        async def compute_output_spec(self, inputs, training=False, **kwargs):
            return inputs.clone()

    return Step


async def chain(sl, Question, *modules, name="chain"):
    inputs = sl.Input(data_model=Question)
    x = inputs
    for module in modules:
        x = await module(x)
    return sl.Program(inputs=inputs, outputs=x, name=name)


def user_frames(error):
    """(file, function, line) of the traceback's frames, ours left out."""
    return [
        (frame.filename, frame.name, frame.lineno)
        for frame in traceback.extract_tb(error.__traceback__)
        if "synalinks_obs" not in frame.filename
    ]


# -- the app's exceptions ---------------------------------------------------------------


class Boom(Exception):
    pass


def test_user_exceptions_propagate_unchanged(obs, sl):
    import synalinks_obs

    Question, Step = models(sl), step_class(sl)
    raised = []

    class Failing(sl.Module):
        async def call(self, inputs, training=False):
            if inputs is not None and inputs.get("question") == "fail":
                try:
                    try:
                        raise KeyError("innermost")
                    except KeyError:
                        raise ValueError("the cause")  # noqa: B904  (chained on purpose)
                except ValueError as cause:
                    error = Boom("user message")
                    raised.append((error, cause))
                    raise error from cause
            return inputs.clone()

        async def compute_output_spec(self, inputs, training=False):
            return inputs.clone()

    program = asyncio.run(
        chain(sl, Question, Step(name="before"), Failing(name="failing"), Step(name="after"))
    )

    def run():
        try:
            asyncio.run(program(Question(question="fail")))
        except Boom as error:
            return error
        raise AssertionError("Boom did not propagate")

    synalinks_obs.disable()
    untraced = run()
    obs.enable()
    traced = run()

    error, cause = raised[-1]
    assert traced is error and type(traced) is Boom and str(traced) == "user message"
    assert traced.__cause__ is cause and traced.__context__ is cause
    assert type(cause.__context__) is KeyError and traced.__suppress_context__
    assert user_frames(traced) == user_frames(untraced)
    assert user_frames(traced)[-1][1] == "call"  # still raised where the user raised it

    (trace,) = obs.traces()
    assert trace.info.state == "ERROR"
    failing = span(trace, "Failing:failing")
    assert failing.status.status_code == "ERROR"
    assert failing.attributes["synalinks.success"] is False
    (event,) = [e for e in failing.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "Boom"
    assert event.attributes["exception.message"] == "user message"
    assert "ValueError: the cause" in event.attributes["exception.stacktrace"]
    assert root(trace).status.status_code == "ERROR"
    assert {s.name for s in trace.data.spans} == {
        "Functional:chain", "Step:before", "Failing:failing"
    }


def test_keyboard_interrupt_and_cancellation_are_recorded_and_reraised(obs, sl):
    Question, Step = models(sl), step_class(sl)
    interrupts = []
    started = []

    class Interrupting(sl.Module):
        async def call(self, inputs, training=False):
            if inputs is not None:
                interrupt = KeyboardInterrupt("stop now")
                interrupts.append(interrupt)
                raise interrupt
            return inputs

        async def compute_output_spec(self, inputs, training=False):
            return inputs.clone()

    class Slow(sl.Module):
        async def call(self, inputs, training=False):
            if inputs is not None:
                started.append(time.monotonic())
                await asyncio.sleep(60)
            return inputs.clone()

        async def compute_output_spec(self, inputs, training=False):
            return inputs.clone()

    obs.enable()
    interrupting = asyncio.run(chain(sl, Question, Interrupting(name="ctrl_c"), name="interrupted"))
    slow = asyncio.run(chain(sl, Question, Step(name="first"), Slow(name="slow"), name="cancelled"))

    with pytest.raises(KeyboardInterrupt) as info:
        asyncio.run(interrupting(Question(question="q")))
    assert info.value is interrupts[0]

    async def cancel():
        task = asyncio.create_task(slow(Question(question="q")))
        while not started:
            await asyncio.sleep(0.001)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError as error:
            return task, error, time.monotonic()
        raise AssertionError("CancelledError did not propagate")

    task, error, caught_at = asyncio.run(cancel())
    assert task.cancelled() and isinstance(error, asyncio.CancelledError)

    traces = {root(t).name: t for t in obs.traces()}
    assert set(traces) == {"Functional:interrupted", "Functional:cancelled"}
    for trace, name, exc_type in (
        (traces["Functional:interrupted"], "Interrupting:ctrl_c", "KeyboardInterrupt"),
        (traces["Functional:cancelled"], "Slow:slow", "CancelledError"),
    ):
        recorded = span(trace, name)
        assert recorded.status.status_code == "ERROR"
        (event,) = [e for e in recorded.events if e.name == "exception"]
        assert event.attributes["exception.type"] == exc_type
        # The program's own task ends too (asyncio cancels it once its child raised).
        assert root(trace).status.status_code == "ERROR"
    assert span(traces["Functional:interrupted"], "Interrupting:ctrl_c").events[0].attributes[
        "exception.message"
    ] == "stop now"
    assert span(traces["Functional:cancelled"], "Step:first").status.status_code == "OK"


# -- our own failures -------------------------------------------------------------------


class _NoRepr:
    def __repr__(self):
        raise RuntimeError("repr is broken")


class _BadName(str):
    """A name Synalinks can still use (it formats it), but nothing else works on it."""

    def __repr__(self):
        raise RuntimeError("repr is broken")

    def __eq__(self, other):
        raise RuntimeError("eq is broken")

    __hash__ = str.__hash__


def test_our_errors_are_contained_and_logged_once(obs, sl, monkeypatch, caplog, lenient):
    import synalinks_obs
    from synalinks_obs.runtime import RUNTIME

    Question, Step = models(sl), step_class(sl)

    class Odd(sl.Module):
        """Broken __repr__, no description, a name that is an odd str; takes kwargs.

        (A module whose ``name`` or ``description`` raise breaks Synalinks itself.)"""

        def __repr__(self):
            raise RuntimeError("module repr is broken")

        @property
        def description(self):
            return None

        @description.setter
        def description(self, value):
            pass

        async def call(self, inputs, training=False, **kwargs):
            return inputs.clone()

        async def compute_output_spec(self, inputs, training=False, **kwargs):
            return inputs.clone()

    unserialisable = {"name": "mixed", "set": {1, 2}, "bytes": b"\x00", "obj": _NoRepr()}
    odd = Odd(name="odd")
    odd.name = _BadName("odd")
    program = asyncio.run(chain(sl, Question, Step(name="plain"), name="prog"))

    async def calls():
        a = await program(Question(question="a"))
        b = await odd(Question(question="b"), meta=unserialisable, thing=_NoRepr())
        return a.get_json(), b.get_json()

    synalinks_obs.disable()
    expected = asyncio.run(calls())
    obs.enable()
    assert asyncio.run(calls()) == expected  # weird payloads and module: real results

    # A bug in our span path (at the end of the call): every call still returns its result.
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        with monkeypatch.context() as patch:
            patch.setattr(RUNTIME.tracer.exporter, "submit", _raiser("submit is broken"))
            for _ in range(3):
                assert asyncio.run(calls()) == expected
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("synalinks_obs")]
    assert sum("span end" in m and "submit is broken" in m for m in messages) == 1, messages

    traces = obs.traces()
    odd_traces = [t for t in traces if root(t).attributes["synalinks.module"] == "Odd"]
    assert odd_traces, "the odd module's call was traced"
    odd_span = root(odd_traces[0])
    assert odd_span.name == "Odd:odd"
    assert odd_span.attributes["synalinks.module_description"] == ""
    # Keyword arguments sit beside the positional data model (under "inputs").
    inputs = odd_span.inputs
    assert inputs["inputs"] == {"question": "b"}
    assert inputs["thing"] == "<_NoRepr>"
    assert inputs["meta"]["name"] == "mixed" and inputs["meta"]["obj"] == "<_NoRepr>"
    assert inputs["meta"]["set"] == "{1, 2}" and inputs["meta"]["bytes"] == "b'\\x00'"
    assert odd_span.outputs == {"question": "b"}


def _raiser(message):
    def fail(*args, **kwargs):
        raise RuntimeError(message)

    return fail


def test_a_bug_at_span_start_is_logged_once(obs, sl, monkeypatch, caplog, lenient):
    """Break the tracer the wrapper talks to."""
    from synalinks_obs.runtime import RUNTIME

    Question, Step = models(sl), step_class(sl)
    obs.enable()
    program = asyncio.run(chain(sl, Question, Step(name="s"), name="p"))
    tracer = RUNTIME.tracer
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        monkeypatch.setattr(tracer, "new_trace", _raiser("new_trace is broken"))
        results = [asyncio.run(program(Question(question=f"q{i}"))) for i in range(3)]
    assert [r.get("question") for r in results] == ["q0", "q1", "q2"]
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("synalinks_obs")]
    assert len(messages) == 1 and "span start" in messages[0], messages


def test_an_mlflow_api_that_raises_is_contained(obs, sl, monkeypatch, caplog, lenient):
    """MLflow's trace manager fails when a user's span asks for our trace: the user's
    code and its result are untouched, one warning."""
    import mlflow
    from mlflow.tracing.trace_manager import InMemoryTraceManager

    Question = models(sl)

    class WithUserSpan(sl.Module):
        async def call(self, inputs, training=False):
            with mlflow.start_span(name="user_span") as user_span:
                user_span.set_attribute("k", 1)
            return inputs.clone()

        async def compute_output_spec(self, inputs, training=False):
            return inputs.clone()

    obs.enable()
    program = asyncio.run(chain(sl, Question, WithUserSpan(name="u"), name="p"))
    obs.flush()
    monkeypatch.setattr(InMemoryTraceManager, "register_trace", _raiser("manager is broken"))
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        results = [asyncio.run(program(Question(question=f"q{i}"))) for i in range(3)]
    assert [r.get("question") for r in results] == ["q0", "q1", "q2"]
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("synalinks_obs")]
    assert len(messages) == 1 and "manager is broken" in messages[0], messages
    traces = obs.traces()
    assert len(traces) == 3
    for trace in traces:  # our spans are complete; MLflow dropped the user's orphan
        assert {s.name for s in trace.data.spans} == {"Functional:p", "WithUserSpan:u"}


def test_a_down_store_never_holds_up_the_apps_own_mlflow_code(sl, monkeypatch, caplog):
    """Tracing into a store that is down: the app's ``@mlflow.trace`` around program calls
    (MLflow asks synalinks-obs for its default experiment) and its spans inside a module
    go on at once, the store is not asked again per call, one warning says why."""
    import socket

    import mlflow

    import synalinks_obs

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there
    # MLflow's own export of the user's traces: no minutes of retries in this test process.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the app's MLflow points there too
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    Question = models(sl)

    class WithUserSpan(sl.Module):
        async def call(self, inputs, training=False):
            with mlflow.start_span(name="user_span"):
                pass
            return inputs.clone()

        async def compute_output_spec(self, inputs, training=False):
            return inputs.clone()

    from synalinks_obs.export import exporter as exporter_module

    asked = []  # the store, asked by the calling thread (a spy: the real probe runs)
    real_probe = exporter_module.probe
    monkeypatch.setattr(exporter_module, "probe", lambda *a, **k: asked.append(a[0]) or real_probe(*a, **k))
    synalinks_obs.enable(tracking_uri=uri, experiment_name="down_store")
    try:
        program = asyncio.run(chain(sl, Question, WithUserSpan(name="u"), name="p"))

        @mlflow.trace(name="handler")
        def handler(question):
            return asyncio.run(program(Question(question=question)))

        with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
            results = [handler(f"q{i}") for i in range(5)]
        assert [r.get("question") for r in results] == [f"q{i}" for i in range(5)]
        # One probe (a refused connection, no retries), not one per call: the time this
        # takes is in benchmarks/faults.py.
        assert asked == [uri], asked
        messages = [r.getMessage() for r in caplog.records if r.name.startswith("synalinks_obs")]
        assert len(messages) == 1, messages
        assert "cannot resolve the experiment 'down_store'" in messages[0], messages
        assert f"tracking store {uri} unreachable" in messages[0], messages
    finally:
        synalinks_obs.disable()


# -- payloads ---------------------------------------------------------------------------


def test_payload_limit_redaction_and_capture_switch(obs, sl, monkeypatch):
    class Secretive(sl.DataModel):
        question: str
        api_key: str
        notes: str = ""

    Step = step_class(sl)
    monkeypatch.setenv("SYNALINKS_OBS_MAX_PAYLOAD_CHARS", "400")
    obs.enable()
    program = asyncio.run(chain(sl, Secretive, Step(name="copy"), name="p"))
    step = Step(name="direct")
    obs.flush()

    async def calls(question, notes=""):
        data = Secretive(question=question, api_key="sk-SECRET", notes=notes)
        await program(data)
        await step(data, authorization="Bearer SECRET", password="SECRET", max_tokens=7)

    asyncio.run(calls("small"))
    asyncio.run(calls("big", notes="n" * 5000))
    traces = obs.traces()
    for trace in traces:
        for recorded in trace.data.spans:
            text = json.dumps([recorded.inputs, recorded.outputs])
            assert "SECRET" not in text, text[:300]
    small = [t for t in traces if "small" in json.dumps(root(t).inputs)]
    direct = next(root(t) for t in small if root(t).name == "Step:direct")
    assert direct.inputs == {
        "inputs": {"question": "small", "api_key": "[REDACTED]", "notes": ""},
        "authorization": "[REDACTED]", "password": "[REDACTED]", "max_tokens": 7,
    }
    assert direct.outputs["api_key"] == "[REDACTED]"
    big = [root(t) for t in traces if "big" in json.dumps(root(t).inputs)]
    assert sorted(recorded.name for recorded in big) == ["Functional:p", "Step:direct"]
    for recorded in big:
        assert isinstance(recorded.inputs, str)  # too long: a string with the marker
        assert len(recorded.inputs) <= 400 + 40
        start = '{"question":"big","api_key":"[REDACTED]"'
        if recorded.name == "Step:direct":  # keyword arguments: the data under "inputs"
            start = '{"inputs":' + start
        assert recorded.inputs.startswith(start)
        assert recorded.inputs.endswith(" chars]") and "...[truncated " in recorded.inputs

    # Configurable keys (here from the variable), then capture off.
    monkeypatch.setenv("SYNALINKS_OBS_REDACT_KEYS", "question")
    obs.enable()
    asyncio.run(step(Secretive(question="hidden", api_key="visible")))
    obs.flush()
    monkeypatch.setenv("SYNALINKS_OBS_CAPTURE_PAYLOADS", "false")
    obs.enable()
    asyncio.run(step(Secretive(question="none", api_key="none")))
    traces = obs.traces()
    last_two = sorted((root(t) for t in traces), key=lambda s: s.start_time_ns)[-2:]
    assert last_two[0].inputs == {
        "question": "[REDACTED]", "api_key": "visible", "notes": ""
    }
    assert last_two[1].inputs is None and last_two[1].outputs is None
    assert last_two[1].attributes["synalinks.module_name"] == "direct"


# -- concurrency and sampling -----------------------------------------------------------


def test_thousand_gathered_calls_and_eight_threads(obs, sl):
    Question, Step = models(sl), step_class(sl)
    obs.enable()
    program = asyncio.run(chain(sl, Question, Step(name="a"), Step(name="b"), name="conc"))
    obs.flush()

    async def gathered():
        results = await asyncio.gather(
            *(program(Question(question=f"g{i}")) for i in range(1000))
        )
        return [r.get("question") for r in results]

    assert asyncio.run(gathered()) == [f"g{i}" for i in range(1000)]
    errors = []

    def worker(tag):
        try:
            for i in range(10):
                result = asyncio.run(program(Question(question=f"{tag}-{i}")))
                assert result.get("question") == f"{tag}-{i}"
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"t{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors

    traces = obs.traces()
    expected = {f"g{i}" for i in range(1000)} | {f"t{n}-{i}" for n in range(8) for i in range(10)}
    assert len(traces) == len(expected) == 1080
    seen = set()
    for trace in traces:
        top = root(trace)
        assert top.name == "Functional:conc" and len(trace.data.spans) == 3
        kids = children(trace, top)
        assert [k.name for k in kids] == ["Step:a", "Step:b"]
        question = top.inputs["question"]
        for kid in kids:  # each child saw its own call's data, not a neighbour's
            assert kid.inputs["question"] == question
            assert kid.attributes["synalinks.parent_call_id"] == top.attributes["synalinks.call_id"]
            assert children(trace, kid) == []
        seen.add(question)
    assert seen == expected
    assert len({t.info.trace_id for t in traces}) == 1080


def test_sampling_keeps_about_a_tenth_as_whole_traces(obs, sl, monkeypatch):
    Question, Step = models(sl), step_class(sl)
    monkeypatch.setenv("SYNALINKS_OBS_SAMPLE_RATE", "0.1")
    obs.enable()
    program = asyncio.run(chain(sl, Question, Step(name="a"), Step(name="b"), name="sampled"))

    async def calls():
        await asyncio.gather(*(program(Question(question=f"s{i}")) for i in range(400)))

    asyncio.run(calls())
    traces = obs.traces()
    # Binomial(400, 0.1): mean 40, sd 6; this band is 4 sd wide each side.
    assert 16 <= len(traces) <= 64, len(traces)
    for trace in traces:
        assert sorted(s.name for s in trace.data.spans) == [
            "Functional:sampled", "Step:a", "Step:b"
        ]


# -- the store side on its own ----------------------------------------------------------


def _wires(count, trace_id=0x1234):
    """Minimal spans: one trace, a root and its children."""
    from synalinks_obs.export.wire import Wire

    now = time.time_ns()
    return [
        Wire(
            trace_id, f"tr-{trace_id:032x}", i + 1, None if i == 0 else 1, f"Step:s{i}", now,
            now + 1000, "CHAIN", i + 1, None if i == 0 else 1, "Step", f"s{i}", "", False, 0.0,
            None, None, '[]', 'null', None, None, i == 0, False,
        )
        for i in range(count)
    ]


def test_writer_survives_a_failing_store_a_down_store_and_a_full_buffer(sqlite_uri, monkeypatch):
    import socket

    from mlflow.tracing.client import TracingClient

    from synalinks_obs.store import store_health
    from synalinks_obs.store import writer as _writer
    from synalinks_obs.tracing.records import Destination

    monkeypatch.setattr(store_health, "MAX_BACKOFF", 0.05)
    good = Destination(sqlite_uri, "writer")

    # A full buffer: what does not fit is dropped and counted, the rest is written.
    writer = _writer.Writer(max_spans=10)
    writer.add(good, 6, _wires(6, trace_id=1))
    writer.add(good, 6, _wires(6, trace_id=2))
    assert writer.pending == 6 and sum(writer.dropped.values()) == 6
    assert "buffer full (10 spans)" in next(iter(writer.dropped))
    writer.drain(time.monotonic() + 60)
    assert writer.exported == 6 and writer.pending == 0

    # MLflow's own API raises: retried a few times, then dropped with the reason.
    calls = []

    def broken(self, location, spans):
        calls.append(len(spans))
        raise RuntimeError("store exploded")

    with monkeypatch.context() as patch:
        patch.setattr(TracingClient, "log_spans", broken)
        writer = _writer.Writer(max_spans=100)
        writer.add(good, 3, _wires(3, trace_id=3))
        deadline = time.monotonic() + 30
        while writer.pending and time.monotonic() < deadline:
            time.sleep(writer.pump() or 0)
    assert len(calls) == _writer.MAX_ATTEMPTS
    assert writer.dropped == {"RuntimeError: store exploded": 3}

    # A server that is down: kept (not retried by MLflow for minutes), then dropped at
    # the end with the reason, after one more probe.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    down = Destination(closed, "writer")
    probes, writes = [], []
    real_probe = _writer.probe
    counted = lambda uri, *a, **k: probes.append(uri) or real_probe(uri, *a, **k)  # noqa: E731
    monkeypatch.setattr(_writer, "probe", counted)  # the probe at the end
    monkeypatch.setattr(store_health, "probe", counted)  # the probe before a write
    monkeypatch.setattr(TracingClient, "log_spans", lambda self, *a: writes.append(a))
    writer = _writer.Writer(max_spans=100)
    writer.add(down, 4, _wires(4, trace_id=4))
    assert writer.pump() is not None and writer.pending == 4
    writer.drain(time.monotonic() + 60)
    # Two probes (the write, then one more at the end), never MLflow's write and its
    # retries; the time this takes is in benchmarks/faults.py.
    assert probes == [closed, closed] and writes == []
    ((reason, count),) = writer.dropped.items()
    assert count == 4 and reason.startswith(f"tracking store {closed} unreachable"), reason

    from traces import load_traces

    (trace,) = load_traces(sqlite_uri, "writer")
    assert len(trace.data.spans) == 6

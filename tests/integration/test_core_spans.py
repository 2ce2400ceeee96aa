"""Core tracing, in process: one span per module call, as SPEC section 3 says.

Each test enables synalinks-obs into its own sqlite store, runs a real Synalinks program
(LM calls answered by the loopback fake server), flushes, and asserts on what MLflow's
own API reads back from the store: tree shape, names, span types, the nine
``synalinks.*`` attributes, events, status and costs.
"""

from __future__ import annotations

import asyncio
import copy
import threading

import pytest
from traces import load_traces, render

NINE = (
    "synalinks.call_id",
    "synalinks.parent_call_id",
    "synalinks.module",
    "synalinks.module_name",
    "synalinks.module_description",
    "synalinks.is_symbolic",
    "synalinks.duration",
    "synalinks.success",
    "synalinks.cost",
)


@pytest.fixture
def synalinks():
    import synalinks as module

    return module


@pytest.fixture
def traced(sqlite_uri, request, monkeypatch):
    """Tracing on into a fresh sqlite store, which is also the app's own MLflow tracking
    URI (as the launcher and SYNALINKS_OBSERVABILITY=1 set it up); yields a ``read()`` of
    the landed traces."""
    import mlflow

    import synalinks_obs

    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri)
    experiment = f"exp_{request.node.name}"[:200]
    mlflow.tracing.reset()  # MLflow's tracer of an earlier test would keep that test's store
    synalinks_obs.enable(tracking_uri=sqlite_uri, experiment_name=experiment)

    def read(real_only=True):
        assert synalinks_obs.flush(30), "spans were still queued after 30 s"
        traces = load_traces(sqlite_uri, experiment)
        if real_only:
            traces = [t for t in traces if not _root(t).attributes["synalinks.is_symbolic"]]
        return traces

    read.uri, read.experiment = sqlite_uri, experiment
    read.flush = lambda: synalinks_obs.flush(30)
    yield read
    synalinks_obs.flush(30)
    synalinks_obs.disable()


def _root(trace):
    ids = {s.span_id for s in trace.data.spans}
    roots = [s for s in trace.data.spans if s.parent_id is None or s.parent_id not in ids]
    assert len(roots) == 1, render(trace)
    return roots[0]


def _children(trace, span):
    kids = [s for s in trace.data.spans if s.parent_id == span.span_id]
    return sorted(kids, key=lambda s: s.start_time_ns)


def _by_name(trace, name):
    found = [s for s in trace.data.spans if s.name == name]
    assert found, f"no span {name!r} in\n{render(trace)}"
    return found


def _make_models(synalinks):
    class Question(synalinks.DataModel):
        question: str

    class Answer(synalinks.DataModel):
        answer: str

    return Question, Answer


async def _qa_program(synalinks, lm, name="qa"):
    Question, Answer = _make_models(synalinks)
    inputs = synalinks.Input(data_model=Question)
    outputs = await synalinks.Generator(
        data_model=Answer, language_model=lm, name="gen", description="Answer it"
    )(inputs)
    return synalinks.Program(inputs=inputs, outputs=outputs, name=name), Question


def _step_class(synalinks):
    class Step(synalinks.Module):
        """A trivial custom module: copies its input (optionally failing)."""

        raised: list = []

        async def call(self, inputs, training=False):
            if inputs is not None and inputs.get("question") == "fail":
                error = ValueError("bad question")
                Step.raised.append(error)
                raise error
            return inputs.clone()

        async def compute_output_spec(self, inputs, training=False):
            return inputs.clone()

    return Step


def test_qa_program_tree_types_attributes_and_cost(traced, synalinks, lm):
    async def main():
        program, Question = await _qa_program(synalinks, lm)
        return await program(Question(question="What is the capital of France?"))

    result = asyncio.run(main())
    assert result is not None and result.get("answer")

    traces = traced()
    assert len(traces) == 1
    trace = traces[0]
    root = _root(trace)
    assert root.name == "Functional:qa"
    assert root.span_type == "CHAIN"
    (gen,) = _children(trace, root)
    assert gen.name == "Generator:gen" and gen.span_type == "LLM"
    chat = [s for s in trace.data.spans if s.span_type == "CHAT_MODEL"]
    assert len(chat) == 1 and chat[0].parent_id == gen.span_id, render(trace)

    for span in trace.data.spans:
        attributes = span.attributes
        assert set(NINE) <= set(attributes), span.name
        assert attributes["synalinks.is_symbolic"] is False
        assert attributes["synalinks.success"] is True
        assert isinstance(attributes["synalinks.duration"], float)
        assert attributes["synalinks.duration"] > 0
        assert span.status.status_code == "OK"
    assert root.attributes["synalinks.parent_call_id"] == ""
    assert gen.attributes["synalinks.parent_call_id"] == root.attributes["synalinks.call_id"]
    assert gen.attributes["synalinks.module"] == "Generator"
    assert gen.attributes["synalinks.module_name"] == "gen"
    assert gen.attributes["synalinks.module_description"] == "Answer it"
    call_ids = {s.attributes["synalinks.call_id"] for s in trace.data.spans}
    assert len(call_ids) == len(trace.data.spans)

    # Cost: read from the LM's usage in its own call, rolled up to every ancestor.
    lm_cost = chat[0].attributes["synalinks.cost"]
    assert lm_cost > 0
    assert gen.attributes["synalinks.cost"] == pytest.approx(lm_cost)
    assert root.attributes["synalinks.cost"] == pytest.approx(lm_cost)
    assert chat[0].attributes["mlflow.chat.tokenUsage"]["total_tokens"] > 0
    assert chat[0].attributes["mlflow.llm.cost"]["total_cost"] == pytest.approx(lm_cost)

    # Inputs and outputs are the data models' JSON.
    assert root.inputs == {"question": "What is the capital of France?"}
    assert root.outputs == result.get_json()
    assert trace.info.tags.get("mlflow.traceName") == "Functional:qa"


def test_symbolic_calls_are_traced_with_schemas(traced, synalinks, lm):
    async def main():
        await _qa_program(synalinks, lm, name="sym")

    import mlflow

    asyncio.run(main())
    assert traced.flush()
    # Program building is kept out of the app's experiment (not even created), in its
    # companion "<experiment>-build" (see also tests/integration/test_trace_listing.py).
    assert mlflow.MlflowClient(traced.uri).get_experiment_by_name(traced.experiment) is None
    symbolic = load_traces(traced.uri, traced.experiment + "-build")
    assert all(_root(t).attributes["synalinks.is_symbolic"] for t in symbolic)
    names = sorted(_root(t).name for t in symbolic)
    assert "Generator:gen" in names, names
    gen = next(_root(t) for t in symbolic if _root(t).name == "Generator:gen")
    assert gen.span_type == "LLM"
    assert gen.inputs["properties"]["question"]["type"] == "string"
    assert gen.outputs["properties"]["answer"]["type"] == "string"


def test_exception_event_status_and_unchanged_propagation(traced, synalinks):
    Step = _step_class(synalinks)
    Question, _ = _make_models(synalinks)
    caught = {}

    async def main():
        inputs = synalinks.Input(data_model=Question)
        outputs = await Step(name="failing", description="fails on 'fail'")(inputs)
        program = synalinks.Program(inputs=inputs, outputs=outputs, name="prog")
        Step.raised.clear()
        try:
            await program(Question(question="fail"))
        except ValueError as error:
            caught["error"] = error

    asyncio.run(main())
    error = caught["error"]
    assert error is Step.raised[0], "the user's exception object must propagate unchanged"
    frames = []
    tb = error.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert frames[-1] == "call", frames  # the user's own frame is still where it was raised

    (trace,) = traced()
    assert trace.info.state == "ERROR"
    failing = _by_name(trace, "Step:failing")[0]
    assert failing.status.status_code == "ERROR"
    assert failing.attributes["synalinks.success"] is False
    (event,) = [e for e in failing.events if e.name == "exception"]
    assert event.attributes["exception.type"] == "ValueError"
    assert event.attributes["exception.message"] == "bad question"
    root = _root(trace)
    assert root.attributes["synalinks.success"] is False
    assert root.events[0].attributes["exception.type"] == "ValueError"


def test_sequential_siblings_parallel_branches_and_gather(traced, synalinks):
    Step = _step_class(synalinks)
    Question, _ = _make_models(synalinks)

    async def main():
        inputs = synalinks.Input(data_model=Question)
        a = await Step(name="a")(inputs)
        b = await Step(name="b")(a)  # sequential after a
        left = await Step(name="left")(b)  # two parallel branches from b
        right = await Step(name="right")(b)
        outputs = await synalinks.And(name="join")([left, right]) if hasattr(
            synalinks, "And"
        ) else left
        program = synalinks.Program(inputs=inputs, outputs=outputs, name="branches")
        await asyncio.gather(*(program(Question(question=f"q{i}")) for i in range(50)))

    asyncio.run(main())
    traces = traced()
    assert len(traces) == 50
    questions = set()
    for trace in traces:
        root = _root(trace)
        assert root.name == "Functional:branches"
        kids = _children(trace, root)
        kid_names = [k.name for k in kids]
        for name in ("Step:a", "Step:b", "Step:left", "Step:right"):
            assert name in kid_names, render(trace)
        for span in trace.data.spans:
            if span is not root:
                assert _children(trace, span) == [], f"steps must not nest:\n{render(trace)}"
        questions.add(root.inputs["question"])
        assert {s.attributes["synalinks.parent_call_id"] for s in kids} == {
            root.attributes["synalinks.call_id"]
        }
    assert questions == {f"q{i}" for i in range(50)}, "each trace holds its own call"


def test_two_threads_give_separate_trees(traced, synalinks):
    Step = _step_class(synalinks)
    Question, _ = _make_models(synalinks)

    async def build():
        inputs = synalinks.Input(data_model=Question)
        outputs = await Step(name="inner")(inputs)
        return synalinks.Program(inputs=inputs, outputs=outputs, name="threaded")

    program = asyncio.run(build())
    errors = []

    def worker(tag):
        try:
            for i in range(5):
                asyncio.run(program(Question(question=f"{tag}{i}")))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(tag,)) for tag in "xy"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    traces = traced()
    assert len(traces) == 10
    for trace in traces:
        assert len(trace.data.spans) == 2, render(trace)
        root = _root(trace)
        (inner,) = _children(trace, root)
        assert inner.name == "Step:inner"


def test_span_types_match_through_inheritance(traced, synalinks, lm):
    from synalinks_obs.tracing.span_types import span_type_for

    class MyGenerator(synalinks.Generator):
        pass

    assert span_type_for(MyGenerator) == "LLM"
    assert span_type_for(synalinks.ChainOfThought) == "LLM"
    assert span_type_for(synalinks.SelfCritique) == "LLM"
    assert span_type_for(synalinks.FunctionCallingAgent) == "AGENT"
    for name in ("EmbedKnowledge", "RetrieveKnowledge", "UpdateKnowledge"):
        assert span_type_for(getattr(synalinks, name)) == "RETRIEVER"
    assert span_type_for(synalinks.Tool) == "TOOL"
    assert span_type_for(synalinks.LanguageModel) == "CHAT_MODEL"
    assert span_type_for(synalinks.EmbeddingModel) == "EMBEDDING"
    assert span_type_for(_step_class(synalinks)) == "CHAIN"

    Question, Answer = _make_models(synalinks)

    async def main():
        inputs = synalinks.Input(data_model=Question)
        outputs = await MyGenerator(data_model=Answer, language_model=lm, name="mine")(inputs)
        thought = await synalinks.ChainOfThought(data_model=Answer, language_model=lm, name="cot")(
            inputs
        )
        program = synalinks.Program(
            inputs=inputs, outputs=[outputs, thought], name="types"
        )
        await program(Question(question="Why?"))

    asyncio.run(main())
    (trace,) = traced()
    assert _by_name(trace, "MyGenerator:mine")[0].span_type == "LLM"
    assert _by_name(trace, "ChainOfThought:cot")[0].span_type == "LLM"


@pytest.fixture(params=["shown", "attached"])
def context_mode(request, monkeypatch):
    """How MLflow sees our current call: its context object shows it when read (the
    default), or, where that cannot be patched (MLflow reading OpenTelemetry's global
    context, its own context object missing), each call attaches its span."""
    from synalinks_obs.compat import mlflow as mlflow_compat
    from synalinks_obs.tracing import context

    monkeypatch.setattr(context.CONTEXTS, "mlflow", None)
    if request.param == "attached":
        monkeypatch.setattr(mlflow_compat, "show_in_mlflow_context", lambda *args: False)
    return request.param


def test_user_mlflow_spans_nest_both_ways(context_mode, traced, synalinks):
    import mlflow

    from synalinks_obs.tracing import context

    assert context.CONTEXTS.mlflow.lazy is (context_mode == "shown")
    Question, _ = _make_models(synalinks)

    class Opens(synalinks.Module):
        async def call(self, inputs, training=False):
            with mlflow.start_span(name="user_inner") as span:
                span.set_inputs({"q": inputs.get("question")})
            return inputs.clone()

        async def compute_output_spec(self, inputs, training=False):
            return inputs.clone()

    async def build():
        inputs = synalinks.Input(data_model=Question)
        outputs = await Opens(name="opens")(inputs)
        return synalinks.Program(inputs=inputs, outputs=outputs, name="nested")

    program = asyncio.run(build())

    @mlflow.trace(name="user_outer")
    def handler(question):
        return asyncio.run(program(Question(question=question)))

    # No experiment chosen by the app, nothing flushed yet: MLflow asks synalinks-obs
    # (its default-experiment provider) and the user's trace lands with ours at once.
    handler("hello")
    asyncio.run(program(Question(question="direct")))

    traces = traced(real_only=False)
    outer = [t for t in traces if any(s.name == "user_outer" for s in t.data.spans)]
    assert len(outer) == 1, [render(t) for t in traces]
    trace = outer[0]
    user_outer = _by_name(trace, "user_outer")[0]
    program_span = _by_name(trace, "Functional:nested")[0]
    assert program_span.parent_id == user_outer.span_id, render(trace)
    opens = _by_name(trace, "Opens:opens")[0]
    inner = _by_name(trace, "user_inner")[0]
    assert inner.parent_id == opens.span_id, render(trace)

    direct = [
        t for t in traces
        if _root(t).name == "Functional:nested" and _root(t).inputs["question"] == "direct"
    ]
    assert len(direct) == 1
    trace = direct[0]
    inner = _by_name(trace, "user_inner")[0]
    assert inner.parent_id == _by_name(trace, "Opens:opens")[0].span_id, render(trace)
    assert mlflow.tracking.fluent._active_experiment_id is None  # MLflow's state untouched


def test_user_traces_follow_the_apps_own_experiment_choice(traced, synalinks):
    """An experiment the app chose itself wins over the tracing experiment."""
    import mlflow

    import synalinks_obs

    Question, _ = _make_models(synalinks)
    Step = _step_class(synalinks)

    async def build():
        inputs = synalinks.Input(data_model=Question)
        return synalinks.Program(inputs=inputs, outputs=await Step(name="echo")(inputs), name="own")

    program = asyncio.run(build())

    @mlflow.trace(name="user_outer")
    def handler(question):
        return asyncio.run(program(Question(question=question)))

    mlflow.set_experiment("apps_own_choice")
    handler("mine")
    mlflow.flush_trace_async_logging()
    assert synalinks_obs.flush(30)
    own = load_traces(traced.uri, "apps_own_choice")
    assert len(own) == 1, [render(t) for t in own]
    assert sorted(s.name for s in own[0].data.spans) == ["Functional:own", "Step:echo", "user_outer"]
    # Nothing in the tracing experiment (not even created): its only trace, program
    # building, went to the "-build" companion.
    assert mlflow.MlflowClient(traced.uri).get_experiment_by_name(traced.experiment) is None
    built = load_traces(traced.uri, traced.experiment + "-build")
    assert [_root(t).name for t in built] == ["Step:echo"]


def test_override_of_call_is_one_span(traced, synalinks):
    Question, _ = _make_models(synalinks)

    class Loud(synalinks.Module):
        async def __call__(self, *args, **kwargs):
            return await super().__call__(*args, **kwargs)

        async def call(self, inputs, training=False):
            return inputs.clone()

        async def compute_output_spec(self, inputs, training=False):
            return inputs.clone()

    async def main():
        inputs = synalinks.Input(data_model=Question)
        outputs = await Loud(name="loud")(inputs)
        program = synalinks.Program(inputs=inputs, outputs=outputs, name="over")
        await program(Question(question="x"))

    asyncio.run(main())
    (trace,) = traced()
    assert len(_by_name(trace, "Loud:loud")) == 1, render(trace)
    assert len(trace.data.spans) == 2


def test_modules_built_before_enable_are_traced(sqlite_uri, synalinks, lm):
    import synalinks_obs

    synalinks_obs.disable()

    async def build():
        return await _qa_program(synalinks, lm, name="early")

    program, Question = asyncio.run(build())  # built while tracing is off
    synalinks_obs.enable(tracking_uri=sqlite_uri, experiment_name="late")
    try:
        asyncio.run(program(Question(question="late?")))
        assert synalinks_obs.flush(30)
        traces = load_traces(sqlite_uri, "late")
        assert [_root(t).name for t in traces] == ["Functional:early"]
        assert len(traces[0].data.spans) == 3
    finally:
        synalinks_obs.disable()


def test_disable_stops_and_uninstrument_restores(sqlite_uri, synalinks):
    from synalinks.src.modules.module import Module

    import synalinks_obs

    Step = _step_class(synalinks)
    Question, _ = _make_models(synalinks)

    async def build():
        inputs = synalinks.Input(data_model=Question)
        outputs = await Step(name="s")(inputs)
        return synalinks.Program(inputs=inputs, outputs=outputs, name="onoff")

    synalinks_obs.enable(tracking_uri=sqlite_uri, experiment_name="onoff")
    program = asyncio.run(build())
    asyncio.run(program(Question(question="on")))
    synalinks_obs.disable()
    assert not synalinks_obs.is_enabled()
    asyncio.run(program(Question(question="off")))
    traces = load_traces(sqlite_uri, "onoff")
    real = [t for t in traces if not _root(t).attributes["synalinks.is_symbolic"]]
    assert [_root(t).inputs["question"] for t in real] == ["on"]

    wrapped = Module.__call__
    assert getattr(wrapped, "__wrapped__", None) is not None
    original = wrapped.__wrapped__
    synalinks_obs.uninstrument()
    try:
        assert Module.__call__ is original
        assert "__init_subclass__" not in Module.__dict__
        assert synalinks.enable_observability.__module__ == "synalinks.src.backend.config"
        assert asyncio.run(program(Question(question="plain"))).get("question") == "plain"
    finally:
        synalinks_obs.enable(tracking_uri=sqlite_uri, experiment_name="onoff")
        synalinks_obs.disable()
    assert Module.__call__.__wrapped__ is original  # re-enabling patches again


def test_synalinks_enable_observability_is_routed(sqlite_uri, synalinks):
    from synalinks.src.hooks.monitor import Monitor as BuiltinMonitor

    import synalinks_obs

    synalinks_obs.disable()
    assert synalinks.is_observability_enabled() is False
    synalinks.enable_observability(tracking_uri=sqlite_uri, experiment_name="routed")
    try:
        assert synalinks_obs.is_enabled()
        assert synalinks.is_observability_enabled() is True
        assert synalinks.config.is_observability_enabled() is True
        Step = _step_class(synalinks)
        Question, _ = _make_models(synalinks)

        async def main():
            inputs = synalinks.Input(data_model=Question)
            # Synalinks' built-in Monitor passed explicitly writes its module's calls itself
            # (Synalinks' own tests expect it to); synalinks-obs steps aside for them.
            outputs = await Step(name="hooked", hooks=[BuiltinMonitor()])(inputs)
            program = synalinks.Program(inputs=inputs, outputs=outputs, name="routed")
            await program(Question(question="r"))

        asyncio.run(main())
        assert synalinks_obs.flush(30)
        traces = load_traces(sqlite_uri, "routed")
        real = [t for t in traces if not _root(t).attributes.get("synalinks.is_symbolic")]
        # Never two spans for one call: the hooked call is written once, by the built-in
        # hook, into its default experiment, which is what enable_observability() set for
        # Synalinks (as without synalinks-obs).
        assert sorted([s.name for s in t.data.spans] for t in real) == [
            ["Functional:routed"], ["Step:hooked"]
        ], [render(t) for t in traces]
        assert mlflow_experiment_count(sqlite_uri) == {"Default", "routed"}
    finally:
        synalinks_obs.disable()


def mlflow_experiment_count(uri):
    import mlflow

    return {e.name for e in mlflow.MlflowClient(uri).search_experiments()}


def test_save_load_and_deepcopy_behave_as_untraced(traced, synalinks, lm, tmp_path):
    async def main():
        program, Question = await _qa_program(synalinks, lm, name="saved")
        clone = copy.deepcopy(program)
        path = tmp_path / "program.json"
        program.save(str(path))
        loaded = synalinks.Program.load(str(path))
        a = await clone(Question(question="one"))
        b = await loaded(Question(question="two"))
        return a, b

    a, b = asyncio.run(main())
    assert a.get("answer") and b.get("answer")
    traces = traced()
    assert len(traces) == 2
    for trace in traces:
        assert len(trace.data.spans) == 3, render(trace)


def test_agent_with_tool_types_and_cost_roll_up(traced, synalinks, lm):
    Question, Answer = _make_models(synalinks)

    async def calculate(expression: str):
        """Calculate the result of a mathematical expression.

        Args:
            expression (str): The mathematical expression to calculate.
        """
        return {"result": 4}

    async def main():
        inputs = synalinks.Input(data_model=Question)
        outputs = await synalinks.FunctionCallingAgent(
            data_model=Answer,
            tools=[synalinks.Tool(calculate)],
            language_model=lm,
            max_iterations=3,
            name="agent",
        )(inputs)
        program = synalinks.Program(inputs=inputs, outputs=outputs, name="math")
        return await program(Question(question="What is 2 + 2?"))

    assert asyncio.run(main()) is not None
    (trace,) = traced()
    agent = _by_name(trace, "FunctionCallingAgent:agent")[0]
    assert agent.span_type == "AGENT"
    tools = [s for s in trace.data.spans if s.span_type == "TOOL"]
    assert tools and all(s.name.startswith("Tool") for s in tools), render(trace)
    chats = [s for s in trace.data.spans if s.span_type == "CHAT_MODEL"]
    assert len(chats) >= 2, render(trace)  # a tool call, then the final answer

    def descends_from(span, ancestor):
        by_id = {s.span_id: s for s in trace.data.spans}
        while span.parent_id is not None:
            span = by_id[span.parent_id]
            if span.span_id == ancestor.span_id:
                return True
        return False

    assert all(descends_from(s, agent) for s in tools + chats), render(trace)
    lm_total = sum(s.attributes["synalinks.cost"] for s in chats)
    assert lm_total > 0
    assert agent.attributes["synalinks.cost"] == pytest.approx(lm_total)
    assert _root(trace).attributes["synalinks.cost"] == pytest.approx(lm_total)


def test_lm_reported_failure_marks_the_span(traced, synalinks, lm_factory, fake_llm):
    Question, Answer = _make_models(synalinks)
    lm = lm_factory(retry=1, max_retries=0)

    async def main():
        program, _ = await _qa_program(synalinks, lm, name="broken_lm")
        fake_llm.inject_errors()
        return await program(Question(question="anyone there?"))

    with pytest.warns(UserWarning):
        assert asyncio.run(main()) is None  # Synalinks swallows the LM failure
    (trace,) = traced()
    (chat,) = [s for s in trace.data.spans if s.span_type == "CHAT_MODEL"]
    assert chat.attributes["synalinks.success"] is False
    assert chat.status.status_code == "ERROR"
    (event,) = [e for e in chat.events if e.name == "exception"]
    assert "injected failure" in event.attributes["exception.message"]


_PER_CALL = {"synalinks.call_id", "synalinks.parent_call_id", "synalinks.duration", "mlflow.traceRequestId"}


def _span_shape(trace):
    """A trace's spans without what differs from call to call (ids, clocks)."""
    names = {s.span_id: s.name for s in trace.data.spans}
    return sorted(
        (
            s.name,
            names.get(s.parent_id),
            s.span_type,
            s.status.status_code,
            sorted((k, repr(v)) for k, v in s.attributes.items() if k not in _PER_CALL),
        )
        for s in trace.data.spans
    )


def test_child_calls_give_the_spans_of_the_general_path(traced, synalinks, monkeypatch):
    """tracing/child_calls opens and closes the common child call in one frame each; the
    same program with it turned off (every call through _start/_finish) gives the same
    spans: names, parents, types, status, attributes and payloads."""
    from synalinks_obs.patching import module_call
    from synalinks_obs.tracing import child_calls

    Step = _step_class(synalinks)
    Question, _ = _make_models(synalinks)

    async def build():
        inputs = synalinks.Input(data_model=Question)
        a = await Step(name="a", description="first")(inputs)
        b = await Step(name="b")(a)
        return synalinks.Program(inputs=inputs, outputs=b, name="two_steps")

    program = asyncio.run(build())
    opened = []

    def counted(module, args, kwargs):
        record = child_calls.open_child(module, args, kwargs)
        opened.append(record is not None)
        return record

    monkeypatch.setattr(module_call, "open_child", counted)
    fast = asyncio.run(program(Question(question="same")))
    assert opened.count(True) == 2, opened  # the two steps, not the program's root call
    monkeypatch.setattr(module_call, "open_child", lambda module, args, kwargs: None)
    general = asyncio.run(program(Question(question="same")))
    assert fast.get_json() == general.get_json() == {"question": "same"}
    traces = traced()
    assert len(traces) == 2
    first, second = (_span_shape(t) for t in traces)
    assert first == second
    assert [name for name, *_ in first] == ["Functional:two_steps", "Step:a", "Step:b"]
    step_a = next(row for row in first if row[0] == "Step:a")
    assert step_a[1] == "Functional:two_steps"
    assert ("synalinks.module_description", repr("first")) in step_a[4]

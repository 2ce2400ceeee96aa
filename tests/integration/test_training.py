"""Training runs: synalinks_obs.callbacks.Monitor and the autolog of fit()/evaluate().

Every test runs a real ``fit()`` (or ``evaluate()``) with an optimizer on a small
question-answering program whose language model is the fake OpenAI-compatible server of
``tests/support/fake_llm.py``, writes to a real SQLite store (or a real ``mlflow server``), and
asserts on what landed, read back through MLflow's client API: run params, metric
histories with their steps, artifact paths and JSON contents, run status and tags, and
the traces' experiment and source-run link.
"""

import asyncio
import json
import logging
import os
import threading
import types
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
from conftest import SYNALINKS_09
from traces import load_traces

TRACES = "synalinks_traces_test"
SOURCE_RUN = "mlflow.sourceRun"
# Generous: a new SQLite store runs its migrations on the exporter thread first, which
# takes long on a loaded machine.
FLUSH_TIMEOUT = 120


# -- fixtures and helpers --------------------------------------------------------------


@pytest.fixture(scope="session")
def sl():
    """synalinks, plus the data models of the test program (built once per worker)."""
    import synalinks

    class Question(synalinks.DataModel):
        question: str = synalinks.Field(description="The question to answer")

    class Answer(synalinks.DataModel):
        answer: str = synalinks.Field(description="The answer")

    return types.SimpleNamespace(synalinks=synalinks, Question=Question, Answer=Answer)


@pytest.fixture
def obs(monkeypatch):
    """synalinks_obs, left exactly as found (uninstrumented, no active run) after the test."""
    import synalinks_obs
    from synalinks_obs.runtime import RUNTIME
    from synalinks_obs.tracing import context

    monkeypatch.delenv("SYNALINKS_OBS_AUTOLOG_TRAINING", raising=False)
    yield synalinks_obs
    synalinks_obs.flush(FLUSH_TIMEOUT)
    synalinks_obs.uninstrument()
    assert RUNTIME.active_runs == [], "a training run left its trace destination active"
    assert RUNTIME.run_observers == {}, "a training run left its trace observer"
    assert context.DESTINATION_OVERRIDE.get() is None


async def build_program(sl, lm, name="qa_program"):
    synalinks = sl.synalinks
    inputs = synalinks.Input(data_model=sl.Question)
    outputs = await synalinks.Generator(data_model=sl.Answer, language_model=lm)(inputs)
    return synalinks.Program(
        inputs=inputs, outputs=outputs, name=name, description="Answers questions"
    )


def compile_program(sl, program):
    synalinks = sl.synalinks
    program.compile(
        reward=synalinks.rewards.ExactMatch(in_mask=["answer"]),
        optimizer=synalinks.optimizers.RandomFewShot(),
    )


def dataset(sl, size):
    import numpy as np

    # The fake LLM answers "Example answer." for an `answer` field: every sample scores 1.
    x = np.array([sl.Question(question=f"Question {i}?") for i in range(size)], dtype="object")
    y = np.array([sl.Answer(answer="Example answer.") for _ in range(size)], dtype="object")
    return x, y


async def fit(sl, program, callbacks=None, epochs=2):
    x, y = dataset(sl, 4)
    return await program.fit(
        x=x, y=y, validation_data=dataset(sl, 2), epochs=epochs, batch_size=2,
        callbacks=callbacks, verbose=0,
    )


def client(uri):
    import mlflow

    return mlflow.MlflowClient(uri)


def runs_of(uri, experiment_name):
    mlflow_client = client(uri)
    experiment = mlflow_client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return []
    return mlflow_client.search_runs([experiment.experiment_id])


def all_runs(uri):
    mlflow_client = client(uri)
    ids = [e.experiment_id for e in mlflow_client.search_experiments()]
    return mlflow_client.search_runs(ids) if ids else []


def steps(uri, run_id, key):
    history = client(uri).get_metric_history(run_id, key)
    return sorted(metric.step for metric in history)


def artifact_paths(uri, run_id, path=None):
    found = []
    for item in client(uri).list_artifacts(run_id, path):
        found.extend(artifact_paths(uri, run_id, item.path) if item.is_dir else [item.path])
    return sorted(found)


def read_artifact(uri, run_id, path, tmp_path):
    local = client(uri).download_artifacts(run_id, path, str(tmp_path))
    return Path(local).read_text(encoding="utf-8")


def trainable_state(program):
    return [json.dumps(v.get_json(), sort_keys=True) for v in program.trainable_variables]


def linked_traces(uri, experiment_name, run_id):
    mlflow_client = client(uri)
    experiment = mlflow_client.get_experiment_by_name(experiment_name)
    return mlflow_client.search_traces(
        locations=[experiment.experiment_id], run_id=run_id, include_spans=False
    )


# -- the Monitor callback -----------------------------------------------------------------


class TestMonitorRun:
    """One fit() with an explicit Monitor (the seed's full configuration), many checks."""

    @pytest.fixture(scope="class")
    @classmethod
    def trained(cls, sl, fake_llm_server, tmp_path_factory):
        import synalinks_obs
        from synalinks_obs.callbacks import Monitor

        fake_llm_server.reset()
        uri = f"sqlite:///{tmp_path_factory.mktemp('monitor') / 'mlflow.db'}"
        synalinks_obs.enable(tracking_uri=uri, experiment_name=TRACES)
        lm = sl.synalinks.LanguageModel(
            model="openai/gpt-4o-mini", api_base=fake_llm_server.base_url, api_key="sk-test"
        )

        async def main():
            program = await build_program(sl, lm)  # symbolic calls: the tracing side
            initial = trainable_state(program)
            compile_program(sl, program)
            monitor = Monitor(
                experiment_name="training_runs",
                run_name="experiment_v1",
                log_batch_metrics=True,
                tags={"model": "gpt-4o-mini", "dataset": "toy"},
            )
            history = await fit(sl, program, [monitor])
            fresh = await build_program(sl, lm)  # same code, a fresh (untrained) program
            return program, fresh, monitor, history, initial

        program, fresh, monitor, history, initial = asyncio.run(main())
        assert synalinks_obs.flush(FLUSH_TIMEOUT)
        yield types.SimpleNamespace(
            uri=uri, program=program, fresh=fresh, monitor=monitor, history=history,
            initial=initial, run=client(uri).get_run(monitor.run_id),
        )
        synalinks_obs.uninstrument()

    def test_run_finished_with_name_tags_and_one_run(self, trained):
        run = trained.run
        assert run.info.status == "FINISHED"
        assert run.info.run_name == "experiment_v1"
        experiment = client(trained.uri).get_experiment(run.info.experiment_id)
        assert experiment.name == "training_runs"
        tags = run.data.tags
        assert tags["model"] == "gpt-4o-mini" and tags["dataset"] == "toy"
        assert tags["synalinks.program"] == "qa_program"
        assert tags["synalinks.run_type"] == "train"
        assert tags["synalinks_obs.autolog"] == "false"
        # the user's Monitor wins: no autolog run, no built-in Monitor run, anywhere
        assert [r.info.run_id for r in all_runs(trained.uri)] == [run.info.run_id]

    def test_params(self, trained):
        params = trained.run.data.params
        assert params["epochs"] == "2"
        assert params["batch_size"] == "2"
        assert params["optimizer"] == "RandomFewShot"
        if not SYNALINKS_09:  # 0.9.x hands callbacks no dataset sizes
            assert params["train_size"] == "4" and params["val_size"] == "2"
        assert params["program_name"] == "qa_program"
        assert params["program_class"] == "Functional"
        # input module, generator, language model
        assert params["num_modules"] == "3"
        assert params["num_trainable_variables"] == "1"
        assert params["reward"] == "exact_match"

    def test_epoch_and_batch_metrics_with_their_steps(self, trained):
        uri, run_id = trained.uri, trained.run.info.run_id
        assert trained.history.history["reward"] == [1.0, 1.0]
        for key in ("reward", "val_reward", "epoch_duration_s", "epoch_cost"):
            assert steps(uri, run_id, key) == [0, 1], key
        rewards = client(uri).get_metric_history(run_id, "val_reward")
        assert [m.value for m in rewards] == [1.0, 1.0]
        assert trained.run.data.metrics["epoch_cost"] > 0  # the fake LLM reports usage
        # 4 training samples in batches of 2 for 2 epochs; one validation batch per epoch
        # (0.9.x also validates after each of the 2 training batches of an epoch)
        assert steps(uri, run_id, "train_batch_reward") == [0, 1, 2, 3]
        val_batches = 2 * (3 if SYNALINKS_09 else 1)
        assert steps(uri, run_id, "val_batch_reward") == list(range(val_batches))
        assert steps(uri, run_id, "fit_duration_s") == [1]

    def test_artifacts(self, trained, tmp_path):
        uri, run_id = trained.uri, trained.run.info.run_id
        paths = artifact_paths(uri, run_id)
        assert "model/state_tree.json" in paths
        assert "model/model_info.json" in paths
        assert "program_plots/qa_program.svg" in paths
        assert "program_plots/qa_program.txt" in paths
        from synalinks.src.utils.program_visualization import check_graphviz

        assert ("program_plots/qa_program.png" in paths) == check_graphviz()

        info = json.loads(read_artifact(uri, run_id, "model/model_info.json", tmp_path))
        assert info["name"] == "qa_program"
        assert info["description"] == "Answers questions"
        assert info["num_trainable_variables"] == 1
        assert info["run_id"] == run_id

        state = json.loads(read_artifact(uri, run_id, "model/state_tree.json", tmp_path))
        generator_state = next(iter(state["trainable_variables"].values()))
        variable = next(iter(generator_state.values()))
        assert variable["examples"], "the few-shot examples learned by RandomFewShot"
        assert variable == trained.program.trainable_variables[0].get_json()

    def test_program_plot_content(self, trained, tmp_path):
        uri, run_id = trained.uri, trained.run.info.run_id
        text = read_artifact(uri, run_id, "program_plots/qa_program.txt", tmp_path)
        assert "Program: qa_program (Functional)" in text
        assert "(InputModule)" in text
        assert "(Generator)  [trainable]" in text
        assert '"question"' in text and '"answer"' in text  # input / output schemas
        svg = read_artifact(uri, run_id, "program_plots/qa_program.svg", tmp_path)
        root = ElementTree.fromstring(svg)  # well-formed, self-contained SVG
        assert root.tag.endswith("svg")
        words = " ".join(t.text or "" for t in root.iter() if t.tag.endswith("text"))
        assert "(Generator)" in words and "Trainable" in words
        assert "in: Question(question: string)" in words
        assert "out: Answer(answer: string)" in words

    def test_traces_of_fit_are_linked_to_the_run(self, trained):
        uri, run_id = trained.uri, trained.run.info.run_id
        training = load_traces(uri, "training_runs")
        # 2 epochs x (4 training + 2 validation samples), one trace per program call
        assert len(training) >= 12
        assert {t.info.trace_metadata.get(SOURCE_RUN) for t in training} == {run_id}
        assert all(not t.data.spans[0].attributes.get("synalinks.is_symbolic") for t in training)
        # Tags for the Traces list's search box: the program and the kind of trace.
        assert {t.info.tags.get("synalinks.trace_kind") for t in training} == {"training"}
        assert {t.info.tags.get("synalinks.program") for t in training} == {"qa_program"}
        found = linked_traces(uri, "training_runs", run_id)
        assert {t.info.trace_id for t in found} == {t.info.trace_id for t in training}
        for trace in training:  # the re-sent trace info kept what the spans said
            assert trace.info.state.value == "OK"
            assert trace.info.execution_duration is not None

    def test_program_building_stays_on_the_tracing_side(self, trained):
        """In the tracing experiment's "-build" companion, not linked to the run."""
        # Only program building was traced outside fit(): the tracing experiment itself
        # was never needed (so never created).
        assert client(trained.uri).get_experiment_by_name(TRACES) is None
        building = load_traces(trained.uri, TRACES + "-build")
        assert building, "the symbolic calls of program building"
        for trace in building:
            assert SOURCE_RUN not in trace.info.trace_metadata
            assert trace.info.tags.get("synalinks.trace_kind") == "build"
            assert all(s.attributes.get("synalinks.is_symbolic") for s in trace.data.spans)

    def test_learned_state_restores_into_a_fresh_program(self, trained):
        from synalinks_obs.callbacks import restore_state

        trained_state = trainable_state(trained.program)
        assert trained_state != trained.initial, "training changed the trainable variables"
        assert trainable_state(trained.fresh) == trained.initial
        restore_state(trained.fresh, trained.run.info.run_id, tracking_uri=trained.uri)
        assert trainable_state(trained.fresh) == trained_state


# -- autolog ---------------------------------------------------------------------------------


def test_autolog_logs_fit_once_even_with_synalinks_own_flag_on(
    obs, sl, lm, sqlite_uri, monkeypatch
):
    """No callback passed: one autolog run in the program's experiment. Synalinks' own
    observability flag (set by a direct call of the original enable_observability) would
    make its CallbackList add the built-in Monitor: it must not, one fit is one run."""
    from synalinks.src.backend import config

    obs.enable(tracking_uri=sqlite_uri, experiment_name=TRACES)

    async def main():
        program = await build_program(sl, lm, name="auto_program")
        compile_program(sl, program)
        monkeypatch.setattr(config, "_ENABLE_OBSERVABILITY", True)
        return await fit(sl, program)

    history = asyncio.run(main())
    assert obs.flush(FLUSH_TIMEOUT)
    assert history.history["reward"] == [1.0, 1.0]
    runs = all_runs(sqlite_uri)
    assert len(runs) == 1
    run = runs[0]
    assert client(sqlite_uri).get_experiment(run.info.experiment_id).name == "auto_program"
    assert run.info.status == "FINISHED"
    assert run.info.run_name.startswith("auto_program-train-")
    assert run.data.tags["synalinks_obs.autolog"] == "true"
    assert steps(sqlite_uri, run.info.run_id, "reward") == [0, 1]
    assert "train_batch_reward" not in run.data.metrics  # log_batch_metrics=False
    assert "model/state_tree.json" in artifact_paths(sqlite_uri, run.info.run_id)
    traces = load_traces(sqlite_uri, "auto_program")
    assert traces and {t.info.trace_metadata.get(SOURCE_RUN) for t in traces} == {
        run.info.run_id
    }


def test_autolog_of_a_standalone_evaluate(obs, sl, lm, sqlite_uri):
    obs.enable(tracking_uri=sqlite_uri, experiment_name=TRACES)

    async def main():
        program = await build_program(sl, lm, name="eval_program")
        compile_program(sl, program)
        x, y = dataset(sl, 3)
        return await program.evaluate(x=x, y=y, batch_size=2, verbose=0)

    logs = asyncio.run(main())
    assert obs.flush(FLUSH_TIMEOUT)
    assert logs["reward"] == 1.0
    [run] = all_runs(sqlite_uri)
    assert run.info.status == "FINISHED"
    assert run.data.tags["synalinks.run_type"] == "evaluate"
    assert run.info.run_name.startswith("eval_program-evaluate-")
    assert steps(sqlite_uri, run.info.run_id, "reward") == [0]
    assert run.data.metrics["reward"] == 1.0
    assert run.data.params["program_name"] == "eval_program"
    traces = load_traces(sqlite_uri, "eval_program")
    assert len(traces) == 3
    assert {t.info.trace_metadata.get(SOURCE_RUN) for t in traces} == {run.info.run_id}
    assert {t.info.tags.get("synalinks.trace_kind") for t in traces} == {"evaluation"}
    assert {t.info.tags.get("synalinks.program") for t in traces} == {"eval_program"}


def test_autolog_off_by_environment(obs, sl, lm, sqlite_uri, monkeypatch):
    monkeypatch.setenv("SYNALINKS_OBS_AUTOLOG_TRAINING", "0")
    obs.enable(tracking_uri=sqlite_uri, experiment_name=TRACES)

    async def main():
        program = await build_program(sl, lm, name="quiet_program")
        compile_program(sl, program)
        return await fit(sl, program, epochs=1)

    history = asyncio.run(main())
    assert obs.flush(FLUSH_TIMEOUT)
    assert history.history["reward"] == [1.0]
    assert all_runs(sqlite_uri) == []
    # tracing itself goes on: the calls of fit() are traced into the tracing experiment
    traces = load_traces(sqlite_uri, TRACES)
    real = [t for t in traces if not t.data.spans[0].attributes.get("synalinks.is_symbolic")]
    assert len(real) >= 6
    assert all(SOURCE_RUN not in t.info.trace_metadata for t in traces)


def test_program_plot_of_sequential_and_subclassed_programs(sl, lm):
    """The plot needs no Graphviz for any kind of program: a Sequential is a chain, a
    subclassed program lists its modules."""
    from synalinks_obs.training.plot import render_svg, render_text
    from synalinks_obs.training.program import describe_program

    synalinks = sl.synalinks

    class TwoSteps(synalinks.Program):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.draft = synalinks.Generator(data_model=sl.Answer, language_model=lm, name="draft")
            self.final = synalinks.Generator(data_model=sl.Answer, language_model=lm, name="final")

        async def call(self, inputs, training=False):
            return await self.final(await self.draft(inputs))

    async def main():
        sequential = synalinks.Sequential(
            [synalinks.Input(data_model=sl.Question),
             synalinks.Generator(data_model=sl.Answer, language_model=lm, name="only")],
            name="chain", description="A chain",
        )
        subclassed = TwoSteps(name="two_steps", description="Draft then final")
        await subclassed(sl.Question(question="Built by a first call?"))
        return sequential, subclassed

    sequential, subclassed = asyncio.run(main())
    chain = describe_program(sequential)
    assert [(m["class"], m["trainable"]) for m in chain["modules"]] == [
        ("InputModule", None), ("Generator", True),
    ]
    assert chain["edges"] == [(0, 1)]
    two = describe_program(subclassed)
    assert [(m["name"], m["class"], m["trainable"]) for m in two["modules"]] == [
        ("draft", "Generator", True), ("final", "Generator", True),
    ]
    for description in (chain, two):
        root = ElementTree.fromstring(render_svg(description))
        names = {g.get("data-name") for g in root.iter() if g.tag.endswith("}g")}
        assert names == {m["name"] for m in description["modules"]}
        assert f"Program: {description['name']}" in render_text(description)


# -- failures ----------------------------------------------------------------------------


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_run_is_failed_when_fit_raises_or_is_interrupted(obs, sl, lm, sqlite_uri, error):
    from synalinks_obs.callbacks import Monitor

    obs.enable(tracking_uri=sqlite_uri, experiment_name=TRACES)

    class Breaks(sl.synalinks.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise error("stopped in epoch 0")

    monitor = Monitor(experiment_name="failing")

    async def main():
        program = await build_program(sl, lm, name="failing_program")
        compile_program(sl, program)
        try:
            await fit(sl, program, [monitor, Breaks()])
        finally:
            # after the failed fit, calls are no longer sent to the (ended) run
            x, _ = dataset(sl, 1)
            await program(x[0])

    with pytest.raises(error, match="stopped in epoch 0"):
        asyncio.run(main())
    assert obs.flush(FLUSH_TIMEOUT)
    run = client(sqlite_uri).get_run(monitor.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["synalinks.error"] == f"{error.__name__}: stopped in epoch 0"
    # the Monitor comes first: it logged epoch 0 before the next callback broke the fit
    assert steps(sqlite_uri, monitor.run_id, "reward") == [0]
    after = [
        t for t in load_traces(sqlite_uri, TRACES)
        if not t.data.spans[0].attributes.get("synalinks.is_symbolic")
    ]
    assert len(after) == 1 and SOURCE_RUN not in after[0].info.trace_metadata


def test_a_monitor_works_without_tracing(obs, sl, lm, sqlite_uri):
    """The callback alone (tracing off): the run is logged, no trace is written."""
    from synalinks_obs.callbacks import Monitor

    monitor = Monitor(tracking_uri=sqlite_uri, log_program_plot=False)

    async def main():
        program = await build_program(sl, lm, name="untraced_program")
        compile_program(sl, program)
        await fit(sl, program, [monitor], epochs=1)

    asyncio.run(main())
    run = client(sqlite_uri).get_run(monitor.run_id)
    assert run.info.status == "FINISHED"
    assert client(sqlite_uri).get_experiment(run.info.experiment_id).name == "untraced_program"
    assert steps(sqlite_uri, monitor.run_id, "val_reward") == [0]
    paths = artifact_paths(sqlite_uri, monitor.run_id)
    assert {"model/model_info.json", "model/state_tree.json", "model/MLmodel"} <= set(paths)
    assert {"datasets/training.json", "datasets/validation.json"} <= set(paths)
    assert not [p for p in paths if p.startswith("program_plots/")]  # log_program_plot=False
    assert len(client(sqlite_uri).search_traces(locations=[run.info.experiment_id])) == 0


# -- threads -----------------------------------------------------------------------------


def test_calls_from_callback_threads_join_the_run(obs, sl, lm, sqlite_uri):
    """A callback that calls modules from a plain thread (no ContextVar crosses into it):
    the real call is linked to the training run, a symbolic one stays with program
    building."""
    from synalinks_obs.callbacks import Monitor

    synalinks = sl.synalinks
    obs.enable(tracking_uri=sqlite_uri, experiment_name=TRACES)
    side = synalinks.Generator(data_model=sl.Answer, language_model=lm, name="side_generator")
    builder = synalinks.Generator(data_model=sl.Answer, language_model=lm, name="side_builder")
    errors = []

    def in_thread(coroutine_function):
        def target():
            try:
                asyncio.run(coroutine_function())
            except BaseException as exc:  # reported by the test
                errors.append(exc)

        thread = threading.Thread(target=target)
        thread.start()
        thread.join()

    class SideCalls(synalinks.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                in_thread(lambda: side(sl.Question(question="From a thread?")))
                in_thread(lambda: builder(synalinks.Input(data_model=sl.Question)))

    monitor = Monitor(experiment_name="threaded_runs")

    async def main():
        program = await build_program(sl, lm, name="threaded_program")
        compile_program(sl, program)
        await fit(sl, program, [monitor, SideCalls()])

    asyncio.run(main())
    assert obs.flush(FLUSH_TIMEOUT)
    assert not errors
    run_id = monitor.run_id

    def named(traces, name):
        return [t for t in traces if t.data.spans[0].name == name]

    training = load_traces(sqlite_uri, "threaded_runs")
    [side_trace] = named(training, "Generator:side_generator")
    assert side_trace.info.trace_metadata[SOURCE_RUN] == run_id
    building = load_traces(sqlite_uri, TRACES + "-build")
    [built] = named(building, "Generator:side_builder")
    assert SOURCE_RUN not in built.info.trace_metadata
    assert not named(training, "Generator:side_builder")


# -- remote server -------------------------------------------------------------------------


# One uvicorn worker starts fastest; the timeout leaves room for a loaded machine.
SERVER_OPTIONS = ("--workers=1",)
SERVER_START_TIMEOUT = 240
NO_PROXY_OPTIONS = (
    "--no-serve-artifacts",
    # a path on the server's disk that this client cannot create (EPERM even as root)
    "--default-artifact-root=file:///sys/synalinks-obs/artifacts",
)


class _StartingServer:
    """An MlflowServer (tests/conftest.py), started on a background thread at once, or
    (``background=False``) by the first test that needs it."""

    def __init__(self, workdir, args, background=True):
        from conftest import MlflowServer

        self.server = MlflowServer(workdir, args)
        self.error = None
        self.thread = threading.Thread(target=self._start, daemon=True)
        if background:
            self.thread.start()

    def _start(self):
        try:
            self.server.start(SERVER_START_TIMEOUT)
        except BaseException as exc:  # raised in the test that needs the server
            self.error = exc

    def ready(self):
        if self.thread.ident is None:
            self.thread.start()
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.server

    def stop(self):
        if self.thread.ident is not None:
            self.thread.join()
        self.server.stop()


@pytest.fixture(scope="module", autouse=True)
def servers(request, tmp_path_factory):
    """The two real servers of the remote tests. In a plain run they start in the
    background as soon as the module's first test runs (their start-up, ~20 s each,
    overlaps the in-process tests), and only when a remote test is selected; under
    pytest-xdist a worker starts one when one of its tests needs it."""
    module_items = [i for i in request.session.items if i.module is request.module]
    background = "PYTEST_XDIST_WORKER" not in os.environ and any(
        i.get_closest_marker("server") for i in module_items
    )
    starting = types.SimpleNamespace(
        proxy=_StartingServer(
            tmp_path_factory.mktemp("proxy-server"), SERVER_OPTIONS, background
        ),
        no_proxy=_StartingServer(
            tmp_path_factory.mktemp("no-proxy-server"),
            (*SERVER_OPTIONS, *NO_PROXY_OPTIONS),
            background,
        ),
    )
    yield starting
    starting.proxy.stop()
    starting.no_proxy.stop()


@pytest.mark.server
def test_artifacts_and_traces_reach_a_server_through_the_artifact_proxy(
    obs, sl, lm, servers, tmp_path
):
    """`mlflow server --serve-artifacts --default-artifact-root mlflow-artifacts:/
    --artifacts-destination DIR`: the artifacts land in DIR, the traces in the server's
    store, linked to the run."""
    from synalinks_obs.callbacks import Monitor

    mlflow_server = servers.proxy.ready()
    assert "--serve-artifacts" in mlflow_server.args
    uri = mlflow_server.uri
    obs.enable(tracking_uri=uri, experiment_name=f"{TRACES}_{tmp_path.name}")
    monitor = Monitor(tracking_uri=uri, experiment_name=f"remote_{tmp_path.name}")

    async def main():
        program = await build_program(sl, lm, name="remote_program")
        compile_program(sl, program)
        await fit(sl, program, [monitor], epochs=1)

    asyncio.run(main())
    assert obs.flush(FLUSH_TIMEOUT)
    run = client(uri).get_run(monitor.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    on_disk = {
        p.relative_to(mlflow_server.artifacts_dir).as_posix()
        for p in mlflow_server.artifacts_dir.rglob("*") if p.is_file()
    }
    prefix = f"{run.info.experiment_id}/{run.info.run_id}/artifacts/"
    for name in ("model/state_tree.json", "model/model_info.json",
                 "program_plots/remote_program.svg", "program_plots/remote_program.txt"):
        assert prefix + name in on_disk, sorted(on_disk)
    info = json.loads((mlflow_server.artifacts_dir / prefix / "model/model_info.json").read_text())
    assert info["name"] == "remote_program"
    traces = linked_traces(uri, f"remote_{tmp_path.name}", monitor.run_id)
    assert len(traces) >= 6


@pytest.mark.server
def test_a_server_without_artifact_proxy_gives_one_clear_warning(
    obs, sl, lm, servers, caplog
):
    """The seed's PermissionError case: the server hands out a path on its own disk
    (here one nobody can create) instead of proxying. One warning naming
    --serve-artifacts; training, metrics and the run status are unaffected."""
    from synalinks_obs.callbacks import Monitor

    server = servers.no_proxy.ready()
    assert "--serve-artifacts" not in server.args
    monitor = Monitor(tracking_uri=server.uri, experiment_name="no_proxy")

    async def main():
        program = await build_program(sl, lm, name="unproxied_program")
        compile_program(sl, program)
        return await fit(sl, program, [monitor], epochs=1)

    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        history = asyncio.run(main())
    assert history.history["reward"] == [1.0]  # training went on
    warnings = [
        r.getMessage() for r in caplog.records
        if r.name.startswith("synalinks_obs") and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 1, warnings
    assert "--serve-artifacts" in warnings[0] and "PermissionError" in warnings[0]
    run = client(server.uri).get_run(monitor.run_id)
    assert run.info.status == "FINISHED"
    assert steps(server.uri, monitor.run_id, "reward") == [0]


def test_a_tracking_server_that_is_down_costs_one_warning(obs, sl, lm, caplog, monkeypatch):
    """Nothing listens on the port: no run, one warning, training unaffected (and not
    held up by MLflow's client retrying for minutes: the store is probed once, MLflow's
    client never asked; the time it takes is in benchmarks/faults.py)."""
    import socket

    from mlflow.tracking import MlflowClient

    from synalinks_obs.callbacks import Monitor

    created = []
    monkeypatch.setattr(MlflowClient, "create_run", lambda self, *a, **k: created.append(a))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # free once closed: nothing listens there
    monitor = Monitor(tracking_uri=f"http://127.0.0.1:{port}")

    async def main():
        program = await build_program(sl, lm, name="offline_program")
        compile_program(sl, program)
        return await fit(sl, program, [monitor], epochs=1)

    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        history = asyncio.run(main())
    assert history.history["reward"] == [1.0]
    assert monitor.run_id is None and created == []
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("synalinks_obs")]
    assert len(warnings) == 1 and f"127.0.0.1:{port}" in warnings[0], warnings

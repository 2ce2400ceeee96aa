"""Every private name synalinks-obs touches (``synalinks_obs.compat``), broken on purpose.

For each one: the app still runs (traced where the name is not essential to tracing),
one warning names what is missing and what that costs, and ``doctor``'s compatibility
check lists it. Names are removed with ``monkeypatch`` (in process) or, for what only
matters at interpreter exit, in a real subprocess.
"""

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
import types

import pytest
from tiny_modules import question_and_step
from traces import load_traces


@pytest.fixture(autouse=True)
def fresh_compat(monkeypatch):
    """Each case starts with no fallback noted and no cached lookup."""
    from synalinks_obs import compat
    from synalinks_obs.tracing import capture, context

    monkeypatch.setattr(compat, "_FALLBACKS", {})
    monkeypatch.setattr(capture.CLASSES, "symbolic", None)
    monkeypatch.setattr(capture.CLASSES, "kinds", {})
    monkeypatch.setattr(context.CONTEXTS, "mlflow", None)
    yield


def _noted(name):
    from synalinks_obs.cli.checks import check_fallbacks
    from synalinks_obs.compat import fallbacks_in_use

    check = check_fallbacks()
    return name in fallbacks_in_use() and not check.ok and name in check.detail


def _traced_call(sqlite_uri, experiment):
    """Enable, call a real module once, read what landed; (result, traces)."""
    import synalinks

    import synalinks_obs

    class Q(synalinks.DataModel):
        question: str

    class Echo(synalinks.Module):
        async def call(self, inputs, training=False):
            return inputs.clone()

    synalinks_obs.enable(tracking_uri=sqlite_uri, experiment_name=experiment)
    try:
        result = asyncio.run(Echo(name="echo")(Q(question="q")))
        assert synalinks_obs.flush(30)
    finally:
        synalinks_obs.uninstrument()
    return result, load_traces(sqlite_uri, experiment)


def _warnings(caplog, name):
    return [r for r in caplog.records if r.name.startswith("synalinks_obs") and name in r.getMessage()]


def test_symbolic_data_model_missing(sqlite_uri, monkeypatch, caplog):
    import synalinks

    monkeypatch.delattr(synalinks, "SymbolicDataModel")
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        result, traces = _traced_call(sqlite_uri, "no_symbolic")
    assert result.get("question") == "q" and len(traces) == 1
    assert len(_warnings(caplog, "synalinks.SymbolicDataModel")) == 1
    assert _noted("synalinks.SymbolicDataModel")


def test_module_hook_list_moved(sqlite_uri, monkeypatch, caplog):
    """Synalinks keeps a module's HookList under another name (here its code still reads
    ``self._hooks``, a property over ``_hook_list``): the call is traced, one warning."""
    from synalinks.src.modules.module import Module

    def get(self):
        return self.__dict__["_hook_list"]

    def set_(self, value):
        self.__dict__["_hook_list"] = value

    monkeypatch.setattr(Module, "_hooks", property(get, set_), raising=False)
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        result, traces = _traced_call(sqlite_uri, "hooks_moved")
    assert result.get("question") == "q" and len(traces) == 1
    assert len(_warnings(caplog, "Module._hooks")) == 1 and _noted("Module._hooks")


def test_mlflow_runtime_context_missing(sqlite_uri, monkeypatch, caplog):
    from mlflow.tracing import provider

    monkeypatch.delattr(provider, "mlflow_runtime_context")
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        result, traces = _traced_call(sqlite_uri, "no_runtime_context")
    assert result.get("question") == "q" and len(traces) == 1
    name = "mlflow.tracing.provider.mlflow_runtime_context"
    assert len(_warnings(caplog, name)) == 1 and _noted(name)


def test_runtime_context_variable_missing(sqlite_uri, monkeypatch, caplog):
    """Without the ContextVar of MLflow's runtime context, its get_current is read: a
    module calling another still gives a root and its child."""
    import synalinks
    from mlflow.tracing import provider

    import synalinks_obs
    from synalinks_obs.compat import mlflow as mlflow_compat
    from synalinks_obs.tracing import context

    class Q(synalinks.DataModel):
        question: str

    class Inner(synalinks.Module):
        async def call(self, inputs, training=False):
            return inputs.clone()

    class Outer(synalinks.Module):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.inner = Inner(name="inner")

        async def call(self, inputs, training=False):
            return await self.inner(inputs)

    monkeypatch.setattr(mlflow_compat, "RUNTIME_CONTEXT_VAR", "_no_such_context_var")
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        synalinks_obs.enable(tracking_uri=sqlite_uri, experiment_name="no_context_var")
        try:
            result = asyncio.run(Outer(name="outer")(Q(question="q")))
            assert synalinks_obs.flush(30)
            reads = context.CONTEXTS.mlflow.current_context
        finally:
            synalinks_obs.uninstrument()
    assert result.get("question") == "q"
    assert reads.__func__ is type(provider.mlflow_runtime_context).get_current
    (trace,) = load_traces(sqlite_uri, "no_context_var")
    by_name = {span.attributes["synalinks.module_name"]: span for span in trace.data.spans}
    assert set(by_name) == {"outer", "inner"}
    assert by_name["inner"].parent_id == by_name["outer"].span_id
    name = "ContextVarsRuntimeContext._no_such_context_var"
    assert len(_warnings(caplog, name)) == 1 and _noted(name)


def test_mlflow_trace_manager_missing(sqlite_uri, monkeypatch, caplog):
    import mlflow.tracing.trace_manager as trace_manager

    monkeypatch.delattr(trace_manager, "InMemoryTraceManager")
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        result, traces = _traced_call(sqlite_uri, "no_trace_manager")
    assert result.get("question") == "q" and len(traces) == 1
    name = "mlflow.tracing.trace_manager.InMemoryTraceManager"
    assert len(_warnings(caplog, name)) == 1 and _noted(name)


def test_mlflows_rest_helper_missing_means_no_health_probe(monkeypatch, caplog):
    import mlflow.utils.rest_utils as rest_utils

    from synalinks_obs.store import health

    monkeypatch.delattr(rest_utils, "http_request")
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        health.probe("http://127.0.0.1:9", timeout=0.5)  # not probed: no error raised
    assert _noted("mlflow.utils.rest_utils.http_request")


@pytest.mark.parametrize(
    "name, call",
    [
        ("mlflow.store.db.utils._initialize_tables",
         lambda m: m.db_utils_schema_functions(types.SimpleNamespace())),
        ("RestStore._get_server_version.cache_clear", None),
        # A tracing client whose store lacks MLflow's cached /version lookup: unknown version.
        ("RestStore._get_server_version",
         lambda m: m.server_version(types.SimpleNamespace(store=types.SimpleNamespace()))),
        ("SqlAlchemyStore._engine_map", None),
    ],
)
def test_mlflow_store_internals_missing(name, call, monkeypatch):
    from synalinks_obs.compat import mlflow as mlflow_compat

    if name == "RestStore._get_server_version.cache_clear":
        from mlflow.store.tracking.rest_store import RestStore

        monkeypatch.setattr(RestStore, "_get_server_version", staticmethod(lambda creds: None))
        mlflow_compat.clear_server_version_cache()
    elif name.startswith("SqlAlchemyStore"):
        import mlflow.store.tracking.sqlalchemy_store as store_module

        class Broken:
            @property
            def values(self):
                raise RuntimeError("engine map changed shape")

        monkeypatch.setattr(store_module.SqlAlchemyStore, "_engine_map", Broken())
        mlflow_compat.forget_inherited_connections()
    else:
        assert call(mlflow_compat) is None
    assert _noted(name)


def test_synalinks_trainer_module_moved(monkeypatch):
    import synalinks  # noqa: F401

    from synalinks_obs.compat import synalinks as synalinks_compat

    module = sys.modules[synalinks_compat.TRAINER_MODULE]
    trainer = module.Trainer
    monkeypatch.delattr(module, "Trainer")
    found = synalinks_compat.trainer_class()
    assert "fit" in vars(found) and found is trainer
    assert _noted(f"{synalinks_compat.TRAINER_MODULE}.Trainer")


def test_program_introspection_without_private_names(monkeypatch):
    import synalinks

    from synalinks_obs.compat import synalinks as synalinks_compat

    class Leaf(synalinks.Module):
        async def call(self, inputs, training=False):
            return inputs

    class Program:  # no _flatten_modules, no _operations
        modules = [Leaf(name="leaf")]

    assert [m.name for m in synalinks_compat.flatten_modules(Program())] == ["leaf"]
    assert _noted("Module._flatten_modules")
    monkeypatch.setitem(sys.modules, "synalinks.src.programs", None)  # import fails
    kind, modules, edges = synalinks_compat.program_graph(Program())
    assert kind == "other" and edges == [] and _noted("synalinks.src.programs")
    monkeypatch.setitem(sys.modules, "synalinks.src.utils.program_visualization", None)
    monkeypatch.setitem(sys.modules, "synalinks.src.utils", types.SimpleNamespace())
    assert synalinks_compat.program_visualization() is None
    assert _noted("synalinks.src.utils.program_visualization")


def test_functional_graph_internals_missing(monkeypatch):
    """A real Functional program whose nodes moved: its plot keeps the modules, without
    edges, and the fallback is noted."""
    import synalinks
    from synalinks.src.ops import function

    from synalinks_obs.compat import synalinks as synalinks_compat

    Q, Step = question_and_step()

    async def build():
        inputs = synalinks.Input(data_model=Q)
        x = await Step(name="one")(inputs)
        return synalinks.Program(inputs=inputs, outputs=await Step(name="two")(x), name="g")

    program = asyncio.run(build())
    kind, modules, edges = synalinks_compat.program_graph(program)
    assert kind == "functional" and len(edges) == len(modules) - 1 >= 2  # the real graph
    monkeypatch.delattr(function, "make_node_key")
    kind, modules_after, edges = synalinks_compat.program_graph(program)
    assert kind == "functional" and modules_after == modules and edges == []
    assert _noted("the graph of Functional programs")


def test_mlflow_trace_id_lookup_missing(sqlite_uri, monkeypatch, caplog):
    """MLflow's trace manager without its OpenTelemetry-id lookup: our calls stay traced
    (MLflow spans opened inside them are not joined), one warning, doctor lists it."""
    from mlflow.tracing.trace_manager import InMemoryTraceManager

    import synalinks_obs
    from synalinks_obs.compat import mlflow as mlflow_compat

    synalinks_obs.uninstrument()  # the class's own method, not a patch of an earlier test
    monkeypatch.delattr(InMemoryTraceManager, mlflow_compat.TRACE_MANAGER_LOOKUP)
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        result, traces = _traced_call(sqlite_uri, "no_trace_id_lookup")
    assert result.get("question") == "q" and len(traces) == 1
    name = f"InMemoryTraceManager.{mlflow_compat.TRACE_MANAGER_LOOKUP}"
    assert len(_warnings(caplog, name)) == 1 and _noted(name)


def test_synalinks_config_globals_missing(monkeypatch):
    from synalinks_obs.compat import synalinks as synalinks_compat

    config = synalinks_compat.config_module()
    monkeypatch.delattr(config, "_MLFLOW_TRACKING_URI")
    synalinks_compat.record_observability_config("sqlite:///x.db", None)
    assert _noted(f"{synalinks_compat.CONFIG_MODULE}._MLFLOW_TRACKING_URI")


def test_runpy_run_module_as_main_missing(monkeypatch, tmp_path, capsys):
    import runpy

    from synalinks_obs.compat import stdlib as stdlib_compat

    (tmp_path / "target_mod.py").write_text("print('ran', __name__)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delattr(runpy, "_run_module_as_main")
    stdlib_compat.run_module_as_main("target_mod")
    assert "ran __main__" in capsys.readouterr().out
    assert _noted("runpy._run_module_as_main")


EXIT_APP = textwrap.dedent(
    """
    import asyncio, concurrent.futures.thread, os, threading
    import synalinks, synalinks_obs

    del threading._register_atexit  # a Python without it (what imports use it is loaded)

    synalinks_obs.enable(tracking_uri=os.environ["URI"], experiment_name="no_register_atexit")

    class Q(synalinks.DataModel):
        question: str

    class Echo(synalinks.Module):
        async def call(self, inputs, training=False):
            return inputs.clone()

    asyncio.run(Echo(name="echo")(Q(question="at exit")))
    print("done", flush=True)
    """
)


def test_threading_register_atexit_missing(tmp_path):
    uri = f"sqlite:///{tmp_path}/exit.db"
    app = tmp_path / "app.py"
    app.write_text(EXIT_APP)
    out = subprocess.run([sys.executable, str(app)], env=dict(os.environ, URI=uri),
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0 and "done" in out.stdout, out.stderr[-3000:]
    assert out.stderr.count("threading._register_atexit is not available") == 1, out.stderr[-3000:]
    traces = [t for t in load_traces(uri, "no_register_atexit")
              if not t.data.spans[0].attributes["synalinks.is_symbolic"]]
    assert len(traces) == 1  # written by the atexit flush

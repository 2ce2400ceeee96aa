"""Core tracing across process boundaries and import order.

- ``enable()`` before ``import synalinks``: the import hook patches Synalinks the moment
  it is imported; nothing else is needed in the app, and every span is in the store when
  the process exits normally (flush before interpreter shutdown).
- Two processes writing into one store at once do not collide (``import synalinks``
  seeds ``random``; our ids and MLflow's own come from private generators), even when
  they, their exporter processes and MLflow's own code create that store together.
- The import hook itself: idempotent, removable, and a failing callback never fails the
  user's import.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from traces import load_traces, render

APP = textwrap.dedent(
    """
    import asyncio, os, sys
    import synalinks_obs

    synalinks_obs.enable(tracking_uri=os.environ["URI"], experiment_name="shared")
    assert "synalinks" not in sys.modules and "mlflow" not in sys.modules
    import synalinks  # patched by the import hook, right now
    import mlflow

    class Q(synalinks.DataModel):
        question: str

    class Step(synalinks.Module):
        async def call(self, inputs, training=False):
            return inputs.clone()

        async def compute_output_spec(self, inputs, training=False):
            return inputs.clone()

    async def build():
        x = synalinks.Input(data_model=Q)
        y = await Step(name="one")(x)
        z = await Step(name="two")(y)
        return synalinks.Program(inputs=x, outputs=z, name="proc")

    program = asyncio.run(build())
    tag = os.environ["TAG"]

    async def main():
        await asyncio.gather(*(program(Q(question=f"{tag}-{i}")) for i in range(20)))

    asyncio.run(main())

    @mlflow.trace(name="handler")
    def handler():
        return asyncio.run(program(Q(question=f"{tag}-handler")))

    handler()
    print("done", tag)
    # no flush, no disable: the exit flush must deliver everything
    """
)


def test_enable_before_import_two_processes_and_exit_flush(tmp_path):
    uri = f"sqlite:///{tmp_path}/shared.db"
    script = tmp_path / "app.py"
    script.write_text(APP)
    # MLflow's own tracking URI is the app's: its @mlflow.trace handler writes there, and
    # enable(tracking_uri=...) does not change it.
    env = dict(os.environ, URI=uri, MLFLOW_TRACKING_URI=uri, PYTHONUNBUFFERED="1")
    # The store does not exist yet: both apps, their exporter processes and MLflow's own
    # code in the apps (the @mlflow.trace handler) create it at the same moment.
    procs = [
        subprocess.Popen(
            [sys.executable, str(script)],
            env=dict(env, TAG=tag),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-3000:]
        assert "done" in out
        assert "Exception ignored" not in err, err[-3000:]
        assert "synalinks-obs" not in err, err[-3000:]  # no warning, nothing dropped

    traces = load_traces(uri, "shared")
    real = [t for t in traces if not _is_symbolic(t)]
    # 20 gathered calls + 1 inside a user's @mlflow.trace, per process.
    questions = set()
    for trace in real:
        names = sorted(s.name for s in trace.data.spans)
        if "handler" in names:
            assert names == ["Functional:proc", "Step:one", "Step:two", "handler"], render(trace)
        else:
            assert names == ["Functional:proc", "Step:one", "Step:two"], render(trace)
        program_span = next(s for s in trace.data.spans if s.name == "Functional:proc")
        questions.add(program_span.inputs["question"])
    expected = {f"{tag}-{i}" for tag in "ab" for i in range(20)} | {"a-handler", "b-handler"}
    assert questions == expected, f"missing {sorted(expected - questions)}"
    assert len(real) == 42 and len({t.info.trace_id for t in real}) == 42


OPENER = textwrap.dedent(
    """
    import os, sys, time
    from synalinks_obs.store.schema_lock import guard_schema_setup

    guard_schema_setup()  # what tracing does in an app's process
    import mlflow

    open(sys.argv[2] + f".ready-{os.getpid()}", "w").close()
    while not os.path.exists(sys.argv[2]):  # all start the open at the same moment
        time.sleep(0.005)
    client = mlflow.MlflowClient(sys.argv[1])  # MLflow's own path: creates the schema
    client.create_experiment(f"from_{os.getpid()}")
    print("opened")
    """
)


def test_processes_creating_one_new_database_store_take_turns(tmp_path):
    """MLflow creates a new database's schema in the first process that opens it, with
    no lock; in processes synalinks-obs runs in, that step takes turns (README, known
    limits), whatever code opens the store: here MLflow's own client, eight at once
    (without the lock, such a start prints MLflow's failed migrations: "duplicate column
    name", "Online migration expected to match one row")."""
    uri = f"sqlite:///{tmp_path}/new.db"
    go = tmp_path / "go"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER, uri, str(go)], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(8)
    ]
    import time

    deadline = time.monotonic() + 240
    while len(list(tmp_path.glob("go.ready-*"))) < len(procs) and time.monotonic() < deadline:
        time.sleep(0.05)  # their imports
    go.touch()
    outputs = [proc.communicate(timeout=300) for proc in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0 and "opened" in out, err[-3000:]
        assert "Traceback" not in err and "Error" not in err, err[-3000:]
    import mlflow

    names = {e.name for e in mlflow.MlflowClient(uri).search_experiments()}
    assert names == {"Default"} | {f"from_{proc.pid}" for proc in procs}


def _is_symbolic(trace):
    return any(s.attributes.get("synalinks.is_symbolic") is True for s in trace.data.spans)


def test_import_hook_is_idempotent_removable_and_never_fails_an_import(tmp_path, caplog, lenient):
    from synalinks_obs import importhook

    package = tmp_path / "obs_hook_target"
    package.mkdir()
    (package / "__init__.py").write_text("VALUE = 42\n")
    sys.path.insert(0, str(tmp_path))
    seen = []

    def broken(module):
        seen.append(module.__name__)
        raise RuntimeError("callback bug")

    try:
        first = importhook.when_imported("obs_hook_target", broken)
        second = importhook.when_imported("obs_hook_target", broken)
        assert first is second
        assert sum(f is first for f in sys.meta_path) == 1
        with caplog.at_level("WARNING", logger="synalinks_obs"):
            import obs_hook_target

        assert obs_hook_target.VALUE == 42  # the import worked despite the callback
        assert seen == ["obs_hook_target"]
        assert first not in sys.meta_path  # fired once, then out of the way
        assert any("the import hook of obs_hook_target" in r.getMessage() for r in caplog.records)

        # Already imported: the callback runs at once.
        importhook.remove_hook("obs_hook_target")
        late = []
        importhook.when_imported("obs_hook_target", lambda m: late.append(m.VALUE))
        assert late == [42]
    finally:
        importhook.remove_hook("obs_hook_target")
        sys.modules.pop("obs_hook_target", None)
        sys.path.remove(str(tmp_path))


def test_enable_twice_installs_one_hook_and_one_patch(sqlite_uri):
    import synalinks  # noqa: F401
    from synalinks.src.modules.module import Module

    import synalinks_obs

    synalinks_obs.enable(tracking_uri=sqlite_uri, experiment_name="twice")
    first = Module.__call__
    synalinks_obs.enable(tracking_uri=sqlite_uri, experiment_name="twice")
    try:
        assert Module.__call__ is first
        assert not hasattr(first.__wrapped__, "__wrapped__")  # wrapped once, not twice
    finally:
        synalinks_obs.disable()

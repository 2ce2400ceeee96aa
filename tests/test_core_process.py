"""Core tracing across process boundaries and import order.

- ``enable()`` before ``import synalinks``: the import hook patches Synalinks the moment
  it is imported; nothing else is needed in the app, and every span is in the store when
  the process exits normally (flush before interpreter shutdown).
- Two processes writing into one store at once do not collide (``import synalinks``
  seeds ``random``; our ids and MLflow's own come from private generators).
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
    env = dict(os.environ, URI=uri, PYTHONUNBUFFERED="1")
    # Create the store first: processes creating the same new sqlite database at once
    # can break MLflow's schema migration in MLflow's own code paths (see the README).
    import mlflow

    mlflow.MlflowClient(uri).create_experiment("shared")
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
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, err[-3000:]
        assert "done" in out
        assert "Exception ignored" not in err, err[-3000:]
        assert "synalinks-obs" not in err, err[-3000:]  # no warning, nothing dropped

    traces = load_traces(uri, "shared")
    real = [t for t in traces if not _is_symbolic(t)]
    # 20 gathered calls + 1 inside a user's @mlflow.trace, per process.
    assert len(real) == 42, [render(t) for t in real[:3]]
    assert len({t.info.trace_id for t in real}) == 42
    questions = set()
    for trace in real:
        names = sorted(s.name for s in trace.data.spans)
        if "handler" in names:
            assert names == ["Functional:proc", "Step:one", "Step:two", "handler"], render(trace)
        else:
            assert names == ["Functional:proc", "Step:one", "Step:two"], render(trace)
        program_span = next(s for s in trace.data.spans if s.name == "Functional:proc")
        questions.add(program_span.inputs["data"][0]["question"])
    expected = {f"{tag}-{i}" for tag in "ab" for i in range(20)} | {"a-handler", "b-handler"}
    assert questions == expected


def _is_symbolic(trace):
    return any(s.attributes.get("synalinks.is_symbolic") is True for s in trace.data.spans)


def test_import_hook_is_idempotent_removable_and_never_fails_an_import(tmp_path, caplog):
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
        assert any("instrumenting obs_hook_target failed" in r.getMessage() for r in caplog.records)

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
    import synalinks_obs
    from synalinks.src.modules.module import Module

    synalinks_obs.enable(tracking_uri=sqlite_uri, experiment_name="twice")
    first = Module.__call__
    synalinks_obs.enable(tracking_uri=sqlite_uri, experiment_name="twice")
    try:
        assert Module.__call__ is first
        assert not hasattr(first.__wrapped__, "__wrapped__")  # wrapped once, not twice
    finally:
        synalinks_obs.disable()

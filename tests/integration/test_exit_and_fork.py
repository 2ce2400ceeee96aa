"""Real app processes at the edges of their life: spans finished after ``main`` returns,
and a ``fork()`` while the exporter thread is busy inside a slow store write.

- Worker threads and ``concurrent.futures`` tasks still running when the interpreter
  exits finish module calls after the exit flush: those spans are written by the last
  pass, within the same budget (defect 4).
- ``os.fork()`` waits at most ``FORK_PARK_TIMEOUT`` for our thread, even when it is stuck
  in a store write that takes seconds (defect 8).
"""

import os
import subprocess
import sys
import textwrap

from traces import load_traces

LATE_APP = textwrap.dedent(
    """
    import asyncio, concurrent.futures, os, threading, time
    import synalinks, synalinks_obs

    synalinks_obs.enable(tracking_uri=os.environ["URI"], experiment_name="late")

    class Q(synalinks.DataModel):
        question: str

    class Echo(synalinks.Module):
        async def call(self, inputs, training=False):
            return inputs.clone()

    echo = Echo(name="echo")

    def later(tag, delay):
        time.sleep(delay)
        asyncio.run(echo(Q(question=tag)))

    asyncio.run(echo(Q(question="main")))
    threading.Thread(target=later, args=("thread", 1.0)).start()  # non-daemon
    pool = concurrent.futures.ThreadPoolExecutor(2)
    pool.submit(later, "pool", 1.5)
    print("main returns", flush=True)
    """
)


def test_spans_finished_after_main_returns_are_written(tmp_path):
    uri = f"sqlite:///{tmp_path}/late.db"
    app = tmp_path / "app.py"
    app.write_text(LATE_APP)
    out = subprocess.run(
        [sys.executable, str(app)], env=dict(os.environ, URI=uri), cwd=tmp_path,
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "main returns" in out.stdout
    assert "synalinks-obs" not in out.stderr, out.stderr[-3000:]  # nothing dropped
    questions = sorted(
        t.data.spans[0].inputs["question"] for t in load_traces(uri, "late")
        if not t.data.spans[0].attributes["synalinks.is_symbolic"]
    )
    assert questions == ["main", "pool", "thread"]


FORK_APP = textwrap.dedent(
    """
    import asyncio, os, time
    import synalinks, synalinks_obs
    from synalinks_obs.store import writer

    # The store answers a write after 4 s: our thread is inside it when the app forks.
    slow = writer.Writer._write
    def slow_write(self, *args):
        time.sleep(4)
        return slow(self, *args)
    writer.Writer._write = slow_write

    synalinks_obs.enable(tracking_uri=os.environ["URI"], experiment_name="fork",
                         export_process=False, export_interval=0.05)

    class Q(synalinks.DataModel):
        question: str

    class Echo(synalinks.Module):
        async def call(self, inputs, training=False):
            return inputs.clone()

    echo = Echo(name="echo")
    asyncio.run(echo(Q(question="before")))
    time.sleep(1.0)  # the exporter thread is now in the slow write
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    waited = time.monotonic() - started
    os.waitpid(pid, 0)
    print(f"fork took {waited:.3f}", flush=True)
    """
)


def test_fork_never_waits_long_for_our_thread(tmp_path):
    from synalinks_obs.export.service import FORK_PARK_TIMEOUT

    uri = f"sqlite:///{tmp_path}/fork.db"
    app = tmp_path / "app.py"
    app.write_text(FORK_APP)
    out = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", str(app)],
        env=dict(os.environ, URI=uri), cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    waited = float(out.stdout.split("fork took ")[1])
    # The bound, plus a named allowance for a loaded 2-core machine.
    scheduling_allowance = 0.5
    assert waited < FORK_PARK_TIMEOUT + scheduling_allowance, out.stdout
    # The parent's span is still written (the slow write finishes after the fork).
    (trace,) = [t for t in load_traces(uri, "fork") if not t.data.spans[0].attributes["synalinks.is_symbolic"]]
    assert trace.data.spans[0].inputs["question"] == "before"

"""Real app processes for the reliability tests, and how to compare them with their untraced run.

``APP`` is a small Synalinks app (Input -> Step "a" -> Step "b", ``CALLS`` program calls
per phase, printing each result); its ``SCENARIO`` chooses how it runs and ends (see the
script). ``TRACED=1`` makes it call ``synalinks_obs.enable()`` (settings from the
environment); otherwise it never mentions tracing, so it is also the app that the
``.pth`` activation and the launcher trace with zero code changes. ``PACE=S`` waits S
seconds after each call (an app that keeps working for a while); ``PAYLOAD=N`` makes
each call carry N more characters, and each module return a new string that long
(memory tests). ``CONTROL=URL`` lets the app ask the test to act at chosen points of its
run (take the store down, kill the exporter process...): a GET of ``URL/<action>`` that
returns once the test has acted (``store_faults.Control``). ``END_MARK=PATH``: the time
its own work ended (then its exit starts). ``AUDIT=PATH`` writes, at the very end of the
process, the databases it opened (``sqlite3.connect``), the subprocesses it started and
the connections its calls made (from its main thread, before its exit), as JSON
(``process_watch`` reads it).

``Zygote`` runs the app without paying ``import synalinks`` (15-30 s) per run: a process
imports Synalinks and synalinks-obs once, then forks one child per run. A child sets its
environment, working directory and standard streams, runs the app as ``__main__`` and
exits exactly as ``python app.py`` would (through the interpreter's normal shutdown,
where the exit flush happens); each traced child starts its own exporter process.
``Run.exit_seconds``: from the end of the app's own work to the end of its process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from process_watch import started_exporter

# The app's program (Input -> Step "a" -> Step "b", named "app"), with the names it
# needs (``os``, ``synalinks``): shared by APP and by apps of other shapes (pool workers).
PROGRAM = textwrap.dedent(
    '''
    PAYLOAD = int(os.environ.get("PAYLOAD", "0"))

    class Question(synalinks.DataModel):
        question: str

    class Step(synalinks.Module):
        async def call(self, inputs, training=False):
            if not PAYLOAD:
                return inputs.clone()
            text = inputs.get("question")  # a new string as long as the input, per call
            return Question(question=text[:-PAYLOAD] + self.name[0] * PAYLOAD)

        async def compute_output_spec(self, inputs, training=False):
            return inputs.clone()

    async def build():
        x = synalinks.Input(data_model=Question)
        y = await Step(name="b")(await Step(name="a")(x))
        return synalinks.Program(inputs=x, outputs=y, name="app")

    '''
).lstrip("\n")

APP = textwrap.dedent(
    '''
    """A small Synalinks app: N program calls of Input -> A -> B, printing each result."""
    import asyncio, atexit, json, os, signal, sys, threading, time, urllib.request

    _ended = []  # set when the app's own work is over (its exit starts)
    if os.environ.get("AUDIT"):  # the test watches what this process opens and starts
        _seen = []

        def _audit(event, args):
            if event == "sqlite3.connect":
                _seen.append(["sqlite3.connect", str(args[0])])
            elif event == "subprocess.Popen":
                _seen.append(["subprocess.Popen", [str(a) for a in (args[1] or ())]])
            elif event == "socket.connect" and isinstance(args[1], tuple) and not _ended and (
                threading.current_thread() is threading.main_thread()
            ):
                _seen.append(["socket.connect from the app's calls", [str(args[1][0]), args[1][1]]])

        sys.addaudithook(_audit)
        atexit.register(lambda: open(os.environ["AUDIT"], "w").write(json.dumps(_seen)))

    import synalinks

    if os.environ.get("TRACED") == "1":
        import synalinks_obs

        synalinks_obs.enable()

    '''
) + PROGRAM + textwrap.dedent(
    '''\
    program = asyncio.run(build())
    tag = os.environ.get("TAG", "main")

    PACE = float(os.environ.get("PACE", "0"))  # seconds between two calls (a server's pace)

    def calls(phase, count):
        async def run():
            for i in range(count):
                question = f"{tag}-{phase}-{i}" + "q" * PAYLOAD
                result = await program(Question(question=question))
                print(result.get("question")[:40])
                if PACE:
                    await asyncio.sleep(PACE)
        asyncio.run(run())

    def control(action):
        if os.environ.get("CONTROL"):
            urllib.request.urlopen(os.environ["CONTROL"] + "/" + action, timeout=600).read()

    def main_done():  # when the app's own work ended (its exit starts here)
        _ended.append(True)
        if os.environ.get("END_MARK"):
            with open(os.environ["END_MARK"], "w") as mark:
                mark.write(repr(time.time()))

    scenario = os.environ.get("SCENARIO", "plain")
    count = int(os.environ.get("CALLS", "5"))
    if scenario == "outage":  # the store goes down mid-run, then comes back
        calls("before", count)
        control("down")
        calls("during", count)
        time.sleep(3)
        control("up")
        calls("after", count)
    elif scenario == "warm-start":  # a few calls, the exporter process up, then many
        calls("warm", 3)
        control("exporter-ready")
        calls("run", count)
        time.sleep(float(os.environ.get("HOLD", "0")))  # still alive: its peak is measured
    elif scenario == "kill-exporter":  # the exporter process dies mid-run
        calls("before", count)
        control("kill-exporter")
        calls("after", count)
    elif scenario == "sigterm":  # the app's own handler replaces Python's default
        def stop(signum, frame):
            print("stopping on signal", signum)
            sys.exit(0)

        signal.signal(signal.SIGTERM, stop)
        calls("run", count)
        print("ready", flush=True)
        time.sleep(120)
        print("never here")
    elif scenario == "fork":  # os.fork workers, as a pre-fork server does
        calls("parent", count)  # still queued at fork time (long export interval)
        for n in range(2):  # one after the other: a deterministic output
            pid = os.fork()
            if pid == 0:
                tag = f"child{n}"
                calls("run", count)
                sys.exit(0)
            assert os.waitpid(pid, 0)[1] == 0
        calls("parent-after", count)
    elif scenario == "pool":  # multiprocessing workers with the fork start method
        import multiprocessing

        def work(i):
            async def run():
                result = await program(Question(question=f"{tag}-pool-{i}"))
                return result.get("question")
            return asyncio.run(run())

        calls("parent", count)
        pool = multiprocessing.get_context("fork").Pool(2)
        print(sorted(pool.map(work, range(2 * count))))
        pool.close()
        pool.join()
    else:
        calls("run", count)
        if scenario == "exit3":
            main_done()
            sys.exit(3)
        if scenario == "raise":
            main_done()
            raise RuntimeError("the app failed")
    print("end of app", flush=True)
    main_done()
    '''
)

ZYGOTE = textwrap.dedent(
    '''
    """Import Synalinks once, then fork a child per request (one JSON line on stdin)."""
    import json, os, runpy, select, sys, time

    import synalinks  # noqa: F401  (the expensive part, shared by every child)
    import mlflow  # noqa: F401
    import synalinks_obs  # noqa: F401
    from synalinks_obs import activation, patching  # noqa: F401
    from synalinks_obs.export import exporter, service, sinks, wire  # noqa: F401
    from synalinks_obs.store import writer  # noqa: F401
    from synalinks_obs.tracing import records, tracer  # noqa: F401

    def say(message):
        os.write(1, (json.dumps(message) + "\\n").encode())

    # What is imported here lives as long as each child: keep the collector off it, so a
    # child's exit does not walk (and copy, page by page) the whole inherited heap.
    import gc

    gc.collect()
    gc.freeze()
    say({"ready": True})
    started = {}
    buffer = b""
    request = None
    while request is None:
        readable, _, _ = select.select([0], [], [], 0.05)
        while started:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            say({
                "pid": pid, "exit": os.waitstatus_to_exitcode(status),
                "wall": time.monotonic() - started.pop(pid), "ended": time.time(),
            })
        if not readable:
            continue
        data = os.read(0, 65536)
        if not data:
            break
        buffer += data
        while b"\\n" in buffer and request is None:
            line, buffer = buffer.split(b"\\n", 1)
            job = json.loads(line)
            start = time.monotonic()
            pid = os.fork()
            if pid == 0:
                request = job  # the child leaves the loop and runs the app below
                break
            started[pid] = start
            say({"id": job["id"], "pid": pid})

    if request is not None:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        sys.argv = [request["script"]]
        sys.path[0] = os.path.dirname(request["script"])
        runpy.run_path(request["script"], run_name="__main__")
    '''
)


def read_text(path) -> str:
    """A file the app creates: empty until the app has opened it."""
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        return ""


def app_environment(traced: bool, **env) -> dict:
    """The test's environment minus anything of ours or MLflow's, plus ``env``."""
    environment = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("SYNALINKS_OBS_", "MLFLOW_", "PYTEST_", "SYNALINKS_OBSERVABILITY"))
    }
    environment.update({k: str(v) for k, v in env.items()}, TRACED="1" if traced else "0")
    return environment


class Run:
    """One app run: its files, then (after ``wait``) exit status and wall time."""

    def __init__(self, zygote, job):
        self.zygote = zygote
        self.job = job
        self.pid = None
        self.exit = self.wall = self.ended = None

    @property
    def stdout(self):
        return read_text(self.job["stdout"])

    @property
    def stderr(self):
        return read_text(self.job["stderr"])

    def wait(self, timeout=600):
        result = self.zygote.result(self.pid, timeout)
        self.exit, self.wall, self.ended = result["exit"], result["wall"], result["ended"]
        return self

    @property
    def exit_seconds(self) -> float:
        """From the end of the app's own work to the end of its process (its exit)."""
        mark = read_text(Path(self.job["cwd"]) / "end-mark")
        assert mark, f"the app did not get to its end:\n{self.stderr[-3000:]}"
        return self.ended - float(mark)

    def audit(self) -> list:
        """What the app recorded with ``AUDIT=audit.json`` (see the module)."""
        text = read_text(Path(self.job["cwd"]) / "audit.json")
        assert text, f"no audit record:\n{self.stderr[-3000:]}"
        return json.loads(text)

    def started_exporter(self) -> bool:
        return started_exporter(self.audit())

    def wait_for_output(self, text, timeout=300):
        deadline = time.monotonic() + timeout
        while text not in self.stdout:
            assert time.monotonic() < deadline, f"{text!r} never printed:\n{self.stderr}"
            time.sleep(0.1)


class Zygote:
    """Forks app runs from one process that imported Synalinks (see the module)."""

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.app = self.workdir / "app.py"
        self.app.write_text(APP)
        script = self.workdir / "zygote.py"
        script.write_text(ZYGOTE)
        self.process = subprocess.Popen(
            [sys.executable, str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(self.workdir / "zygote.err", "wb"),
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            cwd=self.workdir,
        )
        self._results: dict = {}
        self._pids: dict = {}
        self._cond = threading.Condition()
        self._ids = 0
        first = json.loads(self.process.stdout.readline() or "{}")
        assert first.get("ready"), (self.workdir / "zygote.err").read_text()[-3000:]
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            message = json.loads(line)
            with self._cond:
                if "id" in message:
                    self._pids[message["id"]] = message["pid"]
                else:
                    self._results[message["pid"]] = message
                self._cond.notify_all()

    def run(self, name, traced, **env):
        """Start the app (``traced`` or not) with extra environment ``env``."""
        self._ids += 1
        out = self.workdir / f"{name}-{'traced' if traced else 'plain'}-{self._ids}"
        out.mkdir()
        job = {
            "id": self._ids, "script": str(self.app), "cwd": str(out),
            "env": app_environment(traced, END_MARK=out / "end-mark", **env),
            "stdout": str(out / "stdout"), "stderr": str(out / "stderr"),
        }
        run = Run(self, job)
        with self._cond:
            self.process.stdin.write((json.dumps(job) + "\n").encode())
            self.process.stdin.flush()
            assert self._cond.wait_for(lambda: job["id"] in self._pids, 60)
            run.pid = self._pids[job["id"]]
        return run

    def result(self, pid, timeout):
        with self._cond:
            assert self._cond.wait_for(lambda: pid in self._results, timeout), f"{pid} hangs"
            return self._results[pid]

    def close(self):
        self.process.stdin.close()
        self.process.kill()  # nothing of its own to finish (it never traced anything)
        self.process.wait()


# -- comparing a traced run with the untraced one -------------------------------------------


def extra_stderr(traced, plain) -> list[str]:
    """Lines the traced run wrote to stderr that the untraced one did not."""
    plain_lines = set(plain.stderr.splitlines())
    return [line for line in traced.stderr.splitlines() if line not in plain_lines]


def assert_same_app_behaviour(traced, plain) -> None:
    assert traced.exit == plain.exit, (traced.exit, traced.stderr[-3000:])
    assert traced.stdout == plain.stdout


def read_traces(uri, experiment) -> list:
    """Every trace of the experiment with its spans (pages of 500, one query each); none
    when the experiment was never created (no write reached the store)."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    experiment_id = found.experiment_id
    traces, token = [], None
    while True:
        page = client.search_traces(
            locations=[experiment_id], max_results=500, page_token=token, include_spans=True
        )
        traces.extend(page)
        token = page.token
        if not token:
            return traces


def root(trace):
    ids = {s.span_id for s in trace.data.spans}
    roots = [s for s in trace.data.spans if s.parent_id is None or s.parent_id not in ids]
    assert len(roots) == 1, [s.name for s in trace.data.spans]
    return roots[0]


def children_of(trace, span) -> list:
    return sorted(
        (s for s in trace.data.spans if s.parent_id == span.span_id), key=lambda s: s.start_time_ns
    )


def real_traces(uri, experiment) -> list:
    """The traces of real (not symbolic) calls."""
    return [t for t in read_traces(uri, experiment) if not root(t).attributes["synalinks.is_symbolic"]]


def questions(traces) -> list[str]:
    """The question each trace's program call was asked (sorted; payload padding cut)."""
    return sorted(root(t).inputs["question"].rstrip("q") for t in traces)


def assert_complete(traces) -> None:
    """Each trace is one program call: the program's span and exactly its two modules."""
    for trace in traces:
        top = root(trace)
        assert top.name == "Functional:app"
        assert [k.name for k in children_of(trace, top)] == ["Step:a", "Step:b"]
        assert len(trace.data.spans) == 3, [s.name for s in trace.data.spans]


def sqlite_store(tmp_path, name) -> str:
    """A sqlite store with the experiment ``apps`` (schema set up once, up front)."""
    import mlflow

    uri = f"sqlite:///{tmp_path / name}.db"
    mlflow.MlflowClient(uri).create_experiment("apps")
    return uri

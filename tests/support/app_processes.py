"""Real app processes for the reliability tests, and stores that misbehave on purpose.

``APP`` is a small Synalinks app (Input -> Step "a" -> Step "b", ``CALLS`` program calls
per phase, printing each result); its ``SCENARIO`` chooses how it runs and ends (see the
script). ``TRACED=1`` makes it call ``synalinks_obs.enable()`` (settings from the
environment); otherwise it never mentions tracing, so it is also the app that the
``.pth`` activation and the launcher trace with zero code changes. ``PACE=S`` waits S seconds after each call (an app that keeps working for a while);
``PAYLOAD=N`` makes each call carry N more characters, and each module return a new string that long
(memory tests). ``CONTROL=URL`` lets the app ask the test to act at chosen points of its
run (take the store down, kill the exporter process...): a GET of ``URL/<action>`` that
returns once the test has acted. ``END_MARK=PATH``: the time its own work ended
(then its exit starts). ``AUDIT=PATH`` writes, at the very end of the process,
the databases it opened (``sqlite3.connect``), the subprocesses it started and the
connections its calls made (from its main thread, before its exit), as JSON.

``Zygote`` runs the app without paying ``import synalinks`` (15-30 s) per run: a process
imports Synalinks and synalinks-obs once, then forks one child per run. A child sets its
environment, working directory and standard streams, runs the app as ``__main__`` and
exits exactly as ``python app.py`` would (through the interpreter's normal shutdown,
where the exit flush happens); each traced child starts its own exporter process.

``FaultyStore``: a tracking URL whose behaviour the test chooses, as a whole (nothing
listening, HTTP 500, answers after a delay, or a proxy to a real ``mlflow server``) and
for span writes alone (``writes``: failing with 500, slow, hanging, or held until the
test releases them) while ``/health`` and everything else pass through. ``Control``
serves the app's ``CONTROL`` requests. ``PeakMemory`` samples the peak RSS (``VmHWM``)
of an app process and of its exporter process until they exit.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

EXPORTER_MARK = b"synalinks_obs.store.worker"  # in the exporter process's command line

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


# -- processes ----------------------------------------------------------------------------


def started_exporter(audit) -> bool:
    """Whether an app's audit record shows it started the exporter process."""
    return any(
        event == "subprocess.Popen" and any(EXPORTER_MARK.decode() in arg for arg in args)
        for event, args in audit
    )


def calls_connecting_to(audit, url) -> list:
    """Connections the app's calls (its main thread, before its exit) made to ``url``."""
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    return [args for event, args in audit if event == "socket.connect from the app's calls" and args[1] == port]


def store_connections(audit, path) -> list:
    """The ``sqlite3.connect`` calls of an app's audit record that opened ``path``."""
    target = os.path.realpath(path)
    return [args for event, args in audit
            if event == "sqlite3.connect" and os.path.realpath(args) == target]


def children(pid) -> list[int]:
    """The direct children of a process (every thread's)."""
    found = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
            except OSError:
                pass
    except OSError:
        pass
    return found


def exporter_processes(pid) -> list[int]:
    """The exporter processes an app process started (its children running store.worker)."""
    found = []
    for child in children(pid):
        try:
            if EXPORTER_MARK in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
        except OSError:
            pass
    return found


def peak_rss_kb(pid) -> int | None:
    """``VmHWM`` (peak resident set) of a live process, in kB; None once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def alive(pid) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


class PeakMemory:
    """Samples the peak RSS of an app process and of its exporter process(es) until the
    app exits (``VmHWM`` only grows, so a late sample is exact for what came before)."""

    def __init__(self, pid, every=0.05):
        self.pid = pid
        self.app_kb = 0
        self.exporter_kb: dict[int, int] = {}
        self._every = every
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self):
        while True:
            value = peak_rss_kb(self.pid)
            if value is None:
                return
            self.app_kb = max(self.app_kb, value)
            for child in exporter_processes(self.pid):
                peak = peak_rss_kb(child)
                if peak is not None:
                    self.exporter_kb[child] = max(self.exporter_kb.get(child, 0), peak)
            time.sleep(self._every)

    def join(self, timeout=60):
        self._thread.join(timeout)
        return self

    @property
    def exporter_peak_kb(self) -> int:
        assert self.exporter_kb, "no exporter process was seen"
        return max(self.exporter_kb.values())


# -- the app's control requests -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Control:
    """``URL/<action>`` runs ``actions[action]()`` in the test process, then answers."""

    def __init__(self, actions: dict):
        self.actions = dict(actions)
        self.errors: list = []
        control = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                try:
                    control.actions[self.path.strip("/")]()
                except BaseException as exc:  # reported by the test (control.errors)
                    control.errors.append(exc)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self):
        self._server.shutdown()
        self._server.server_close()


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout} s")
        time.sleep(0.05)


def kill_exporter_process(app_pid, timeout=240):
    """SIGKILL the exporter process of an app process (waits for it to exist)."""
    wait_until(lambda: exporter_processes(app_pid), timeout, "an exporter process")
    (pid,) = exporter_processes(app_pid)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), 30, f"the end of exporter process {pid}")
    return pid


# -- stores that misbehave ------------------------------------------------------------------


class FaultyStore:
    """A tracking store URL whose behaviour the test (or the app) chooses.

    ``mode`` (the whole store): ``proxy`` (forward to ``upstream``, a real server's port),
    ``error`` (HTTP 500 to every request, ``/health`` included), ``slow`` (answer 503
    after ``delay`` seconds), ``down`` (nothing listens: connection refused).
    ``writes`` (span writes only, in ``proxy`` mode; everything else passes through):
    ``pass``, ``error`` (HTTP 500), ``slow`` (forwarded, answered after ``delay``),
    ``hang`` (never answered while the store lives), ``hold`` (kept until ``release()``,
    then forwarded)."""

    SPAN_WRITE = "/v1/traces"  # MLflow's REST store sends log_spans there (OTLP)

    def __init__(self, mode, upstream=None, delay=10.0, writes="pass"):
        self.mode = mode
        self.writes = writes
        self.upstream = upstream
        self.delay = delay
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests = 0
        self.span_writes = 0  # span writes forwarded and answered 200
        self.held = 0  # span writes held (``hold``)
        self._release = threading.Event()
        self._closed = threading.Event()
        self._server = None
        self._switching = threading.Lock()
        self.set_mode(mode)

    def down_once_spans_landed(self):
        """Go down once a span write went through (the app's first spans landed)."""
        wait_until(lambda: self.span_writes, 240, "a span write")
        self.set_mode("down")

    def set_mode(self, mode):
        with self._switching:
            self.mode = mode
            if mode == "down" and self._server is not None:
                self._server.shutdown()
                self._server.server_close()
                self._server = None
            elif mode != "down" and self._server is None:
                self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
                self._server.daemon_threads = True
                threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def release(self):
        """Forward the held span writes, and pass the next ones through."""
        self.writes = "pass"
        self._release.set()

    def close(self):
        self._closed.set()
        self._release.set()
        self.set_mode("down")

    def _handler(self):
        store = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self):
                store.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if store.mode == "proxy":
                    if store.SPAN_WRITE in self.path and store.writes != "pass":
                        return self._span_write_fault(body)
                    return self._forward(body)
                if store.mode == "slow":
                    time.sleep(store.delay)
                    return self._reply(503, b'{"error_code": "TEMPORARILY_UNAVAILABLE"}')
                return self._reply(500, b'{"error_code": "INTERNAL_ERROR", "message": "boom"}')

            def _span_write_fault(self, body):
                writes = store.writes
                if writes == "error":
                    return self._reply(500, b'{"error_code": "INTERNAL_ERROR", "message": "no spans"}')
                if writes == "hang":
                    store._closed.wait()
                    return None
                if writes == "hold":
                    store.held += 1
                    store._release.wait()
                elif writes == "slow":
                    time.sleep(store.delay)
                return self._forward(body)

            def _reply(self, status, body, headers=()):
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _forward(self, body):
                connection = http.client.HTTPConnection("127.0.0.1", store.upstream, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                connection.request(self.command, self.path, body=body, headers=headers)
                reply = connection.getresponse()
                data = reply.read()
                keep = [
                    (k, v) for k, v in reply.getheaders()
                    if k.lower() not in ("content-length", "transfer-encoding", "connection")
                ]
                connection.close()
                if reply.status == 200 and store.SPAN_WRITE in self.path:
                    store.span_writes += 1
                try:
                    self._reply(reply.status, data, keep)
                except OSError:  # the writer is gone (killed): the write landed anyway
                    pass

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

        return Handler


# -- comparing a traced run with the untraced one -------------------------------------------


def extra_stderr(traced, plain) -> list[str]:
    """Lines the traced run wrote to stderr that the untraced one did not."""
    plain_lines = set(plain.stderr.splitlines())
    return [line for line in traced.stderr.splitlines() if line not in plain_lines]


def assert_same_app_behaviour(traced, plain) -> None:
    assert traced.exit == plain.exit, (traced.exit, traced.stderr[-3000:])
    assert traced.stdout == plain.stdout


def read_traces(uri, experiment) -> list:
    """Every trace of the experiment with its spans (pages of 500, one query each)."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
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
    return sorted(root(t).inputs["data"][0]["question"].rstrip("q") for t in traces)


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

"""Tracing under real faults, across processes: store outages, fork, every way to exit.

Each scenario is a small app (``APP`` below) run as its own process, traced and
untraced, and compared: the traced run prints exactly the same, exits with the same
status, writes at most one extra line on stderr (how many spans were not written and
why), and every span it finished is in the store when the store is up.

``import synalinks`` costs 15-30 s per process on a busy machine, so the apps are not
started with a fresh interpreter each: a *zygote* process imports Synalinks and
synalinks-obs once, then forks one child per run (``Zygote.run``). A child sets its
environment, working directory and standard streams, and runs the app as ``__main__``;
it then exits exactly as ``python app.py`` would (``sys.exit``, an uncaught exception, a
signal), through the interpreter's normal shutdown, where the exit flush happens. Each
traced child starts its own exporter process, as a real app does.

Faulty stores are stdlib HTTP servers in this process (``FaultyStore``): answering 500,
answering after 10 s, or a proxy in front of a real ``mlflow server`` that the app itself
can take down and bring back through a control URL, at chosen points of its run.
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

import pytest

HERE = Path(__file__).parent
# Slack for a busy 2-core machine on top of what synalinks-obs may add by design (the
# exit flush budget). MLflow's own retry policy alone would take minutes.
WALL_SLACK = 25.0

APP = textwrap.dedent(
    '''
    """A small Synalinks app: N program calls of Input -> A -> B, printing each result."""
    import asyncio, os, signal, sys, time, urllib.request

    import synalinks

    if os.environ.get("TRACED") == "1":
        import synalinks_obs

        synalinks_obs.enable()

    class Question(synalinks.DataModel):
        question: str

    class Step(synalinks.Module):
        async def call(self, inputs, training=False):
            return inputs.clone()

        async def compute_output_spec(self, inputs, training=False):
            return inputs.clone()

    async def build():
        x = synalinks.Input(data_model=Question)
        y = await Step(name="b")(await Step(name="a")(x))
        return synalinks.Program(inputs=x, outputs=y, name="app")

    program = asyncio.run(build())
    tag = os.environ.get("TAG", "main")

    def calls(phase, count):
        async def run():
            for i in range(count):
                result = await program(Question(question=f"{tag}-{phase}-{i}"))
                print(result.get("question"))
        asyncio.run(run())

    def control(mode):
        urllib.request.urlopen(os.environ["CONTROL"] + "/" + mode, timeout=300).read()

    scenario = os.environ.get("SCENARIO", "plain")
    count = int(os.environ.get("CALLS", "5"))
    if scenario == "outage":  # the store goes down mid-run, then comes back
        calls("before", count)
        control("down-once-spans-landed" if os.environ.get("TRACED") == "1" else "down")
        calls("during", count)
        time.sleep(3)
        control("up")
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
            sys.exit(3)
        if scenario == "raise":
            raise RuntimeError("the app failed")
    print("end of app")
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
                "wall": time.monotonic() - started.pop(pid), "maxrss_kb": usage.ru_maxrss,
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


def _read(path):
    """A file the forked app creates: empty until the app has opened it."""
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        return ""


class Run:
    """One app run: its files, then (after ``wait``) exit status, wall time, peak RSS."""

    def __init__(self, zygote, job):
        self.zygote = zygote
        self.job = job
        self.pid = None
        self.exit = self.wall = self.maxrss_kb = None

    @property
    def stdout(self):
        return _read(self.job["stdout"])

    @property
    def stderr(self):
        return _read(self.job["stderr"])

    def wait(self, timeout=300):
        result = self.zygote.result(self.pid, timeout)
        self.exit, self.wall, self.maxrss_kb = result["exit"], result["wall"], result["maxrss_kb"]
        return self

    def wait_for_output(self, text, timeout=300):
        deadline = time.monotonic() + timeout
        while text not in self.stdout:
            assert time.monotonic() < deadline, f"{text!r} never printed:\n{self.stderr}"
            time.sleep(0.1)


class Zygote:
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
        environment = {
            k: v for k, v in os.environ.items()
            if not k.startswith(("SYNALINKS_OBS_", "MLFLOW_", "PYTEST_", "SYNALINKS_OBSERVABILITY"))
        }
        environment.update({k: str(v) for k, v in env.items()}, TRACED="1" if traced else "0")
        job = {
            "id": self._ids, "script": str(self.app), "cwd": str(out), "env": environment,
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


@pytest.fixture(scope="module")
def zygote(tmp_path_factory):
    zygote = Zygote(tmp_path_factory.mktemp("zygote"))
    yield zygote
    zygote.close()


# -- faulty stores ------------------------------------------------------------------------


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FaultyStore:
    """A tracking store URL whose behaviour the test (or the app) chooses.

    modes: ``proxy`` (forward to ``upstream``, a real server), ``error`` (HTTP 500 to
    every request, ``/health`` included), ``slow`` (answer 503 after ``delay`` seconds),
    ``down`` (nothing listens: connection refused). ``control_url`` + ``/<mode>``
    switches the mode from anywhere (the app under test uses it)."""

    def __init__(self, mode, upstream=None, delay=10.0):
        self.mode = mode
        self.upstream = upstream
        self.delay = delay
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests = 0
        self.span_writes = 0  # OTLP span exports forwarded and answered 200
        self._server = None
        self._switching = threading.Lock()  # the test and the app both switch modes
        self._control = ThreadingHTTPServer(("127.0.0.1", 0), self._control_handler())
        self._control.daemon_threads = True
        threading.Thread(target=self._control.serve_forever, daemon=True).start()
        self.control_url = f"http://127.0.0.1:{self._control.server_address[1]}"
        self.set_mode(mode)

    def set_mode(self, mode):
        mode = "proxy" if mode == "up" else mode
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

    def close(self):
        self.set_mode("down")
        self._control.shutdown()
        self._control.server_close()

    def _control_handler(self):
        store = self

        class Control(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                mode = self.path.strip("/")
                if mode == "down-once-spans-landed":  # blocks the app until then
                    deadline = time.monotonic() + 240
                    while not store.span_writes and time.monotonic() < deadline:
                        time.sleep(0.05)
                    mode = "down"
                store.set_mode(mode)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        return Control

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
                    return self._forward(body)
                if store.mode == "slow":
                    time.sleep(store.delay)
                    return self._reply(503, b'{"error_code": "TEMPORARILY_UNAVAILABLE"}')
                return self._reply(500, b'{"error_code": "INTERNAL_ERROR", "message": "boom"}')

            def _reply(self, status, body, headers=()):
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _forward(self, body):
                connection = http.client.HTTPConnection("127.0.0.1", store.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                connection.request(self.command, self.path, body=body, headers=headers)
                reply = connection.getresponse()
                data = reply.read()
                keep = [
                    (k, v) for k, v in reply.getheaders()
                    if k.lower() not in ("content-length", "transfer-encoding", "connection")
                ]
                connection.close()
                if reply.status == 200 and "/v1/traces" in self.path:
                    store.span_writes += 1
                self._reply(reply.status, data, keep)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _answer

        return Handler


# -- helpers ------------------------------------------------------------------------------


def extra_stderr(traced, plain):
    """Lines the traced run wrote to stderr that the untraced one did not."""
    plain_lines = set(plain.stderr.splitlines())
    return [line for line in traced.stderr.splitlines() if line not in plain_lines]


def assert_same_app_behaviour(traced, plain):
    assert traced.exit == plain.exit, (traced.exit, traced.stderr[-3000:])
    assert traced.stdout == plain.stdout


def real_traces(uri, experiment):
    from test_reliability import read_traces, root

    return [t for t in read_traces(uri, experiment) if not root(t).attributes["synalinks.is_symbolic"]]


def questions(traces):
    from test_reliability import root

    return sorted(root(t).inputs["question"] for t in traces)


def assert_complete(traces):
    from test_reliability import children, root

    for trace in traces:
        top = root(trace)
        assert top.name == "Functional:app"
        assert [k.name for k in children(trace, top)] == ["Step:a", "Step:b"]


def sqlite_store(tmp_path, name):
    import mlflow

    uri = f"sqlite:///{tmp_path / name}.db"
    mlflow.MlflowClient(uri).create_experiment("apps")  # schema set up once, up front
    return uri


# -- store outages ------------------------------------------------------------------------


def test_store_down_failing_or_slow_never_touches_the_app(zygote):
    """Nothing listening, HTTP 500 everywhere, answers after 10 s: same output and exit
    status, a bounded delay at exit, bounded memory, one line saying what was lost."""
    calls = 400  # 1,200 spans; the buffers hold 300
    stores = {
        "down": FaultyStore("down"),
        "error": FaultyStore("error"),
        "slow": FaultyStore("slow", delay=10.0),
    }
    common = dict(
        CALLS=calls, MLFLOW_EXPERIMENT_NAME="apps", SYNALINKS_OBS_FLUSH_TIMEOUT=5,
        SYNALINKS_OBS_MAX_QUEUE_SPANS=300,
    )
    try:
        plain = zygote.run("outage-plain", False, CALLS=calls)
        runs = {
            name: zygote.run(f"outage-{name}", True, MLFLOW_TRACKING_URI=store.url, **common)
            for name, store in stores.items()
        }
        # The same without the exporter process: the app's own thread meets the faults.
        runs["down-in-process"] = zygote.run(
            "outage-local", True, MLFLOW_TRACKING_URI=stores["down"].url,
            SYNALINKS_OBS_EXPORT_PROCESS=0, **common,
        )
        plain.wait()
        for run in runs.values():
            run.wait()
    finally:
        for store in stores.values():
            store.close()
    expected = {
        "down": f"tracking store {stores['down'].url} unreachable",
        "down-in-process": f"tracking store {stores['down'].url} unreachable",
        "error": f"tracking store {stores['error'].url} answered HTTP 500",
        "slow": f"tracking store {stores['slow'].url} did not answer within",
    }
    for name, run in runs.items():
        assert_same_app_behaviour(run, plain)
        (line,) = extra_stderr(run, plain)  # one line, not one per span
        assert line.startswith(f"synalinks-obs: {3 * calls + 2} span(s) were not written"), line
        assert expected[name] in line, (name, line)
        assert run.wall <= plain.wall + 5 + WALL_SLACK, (name, run.wall, plain.wall)
        assert run.maxrss_kb - plain.maxrss_kb < 60_000, (name, run.maxrss_kb, plain.maxrss_kb)
    assert stores["error"].requests and stores["slow"].requests


@pytest.mark.server
def test_store_killed_mid_run_then_back(zygote, mlflow_server):
    """The app's store goes away once its first spans have landed, and comes back: spans
    made before, during and after the outage all land (kept and retried), nothing is
    reported lost."""
    store = FaultyStore("proxy", upstream=mlflow_server.port)
    experiment = f"outage_{os.getpid()}_{time.time_ns()}"
    try:
        plain = zygote.run("mid-plain", False, SCENARIO="outage", CALLS=10, CONTROL=store.control_url)
        plain.wait()
        traced = zygote.run(
            "mid-traced", True, SCENARIO="outage", CALLS=10, CONTROL=store.control_url,
            MLFLOW_TRACKING_URI=store.url, MLFLOW_EXPERIMENT_NAME=experiment,
            SYNALINKS_OBS_FLUSH_TIMEOUT=60,
        ).wait()
    finally:
        store.close()
    assert_same_app_behaviour(traced, plain)
    assert extra_stderr(traced, plain) == []
    traces = real_traces(mlflow_server.uri, experiment)
    assert questions(traces) == sorted(
        f"main-{phase}-{i}" for phase in ("before", "during", "after") for i in range(10)
    )
    assert_complete(traces)


# -- fork -------------------------------------------------------------------------------------


def test_forked_workers_trace_without_duplicates_or_losses(zygote, tmp_path):
    uri = sqlite_store(tmp_path, "fork")
    env = dict(
        MLFLOW_TRACKING_URI=uri, MLFLOW_EXPERIMENT_NAME="apps", CALLS=4,
        SYNALINKS_OBS_EXPORT_INTERVAL=30,  # the parent's spans are still queued at fork
    )
    forked = zygote.run("fork", True, SCENARIO="fork", **env)
    pool_uri = sqlite_store(tmp_path, "pool")
    pooled = zygote.run(
        "pool", True, SCENARIO="pool", SYNALINKS_OBS_EXPORT_PROCESS=0,
        **dict(env, MLFLOW_TRACKING_URI=pool_uri),
    )
    plain_fork = zygote.run("fork", False, SCENARIO="fork", CALLS=4)
    plain_pool = zygote.run("pool", False, SCENARIO="pool", CALLS=4)
    for run in (forked, pooled, plain_fork, plain_pool):
        run.wait()
    assert_same_app_behaviour(forked, plain_fork)
    assert_same_app_behaviour(pooled, plain_pool)
    assert extra_stderr(forked, plain_fork) == [] and extra_stderr(pooled, plain_pool) == []

    traces = real_traces(uri, "apps")
    assert questions(traces) == sorted(
        [f"main-parent-{i}" for i in range(4)]
        + [f"main-parent-after-{i}" for i in range(4)]
        + [f"child{n}-run-{i}" for n in range(2) for i in range(4)]
    )
    assert_complete(traces)
    assert len({t.info.trace_id for t in traces}) == len(traces) == 16
    traces = real_traces(pool_uri, "apps")
    assert questions(traces) == sorted(
        [f"main-parent-{i}" for i in range(4)] + [f"main-pool-{i}" for i in range(8)]
    )
    assert_complete(traces)


# -- exit -------------------------------------------------------------------------------------


def test_every_way_to_exit_flushes_every_finished_span(zygote, tmp_path):
    """Normal end, sys.exit(3), an uncaught exception, SIGTERM with the app's own
    handler (two with the exporter process, two without): all spans are in the store."""
    runs = {}
    for scenario, process in (("plain", 1), ("exit3", 0), ("raise", 1), ("sigterm", 0)):
        uri = sqlite_store(tmp_path, scenario)
        runs[scenario, process] = (uri, zygote.run(
            f"exit-{scenario}", True, SCENARIO=scenario, CALLS=6, MLFLOW_TRACKING_URI=uri,
            MLFLOW_EXPERIMENT_NAME="apps", SYNALINKS_OBS_EXPORT_PROCESS=process,
            SYNALINKS_OBS_EXPORT_INTERVAL=30,  # everything is still queued at exit
        ))
        runs[scenario, "plain"] = (None, zygote.run(f"exit-{scenario}", False, SCENARIO=scenario, CALLS=6))
    for (scenario, _kind), (_uri, run) in runs.items():
        if scenario == "sigterm":
            run.wait_for_output("ready")
            os.kill(run.pid, signal.SIGTERM)
    for _, run in runs.values():
        run.wait()
    for (scenario, kind), (uri, run) in runs.items():
        if kind == "plain":
            continue
        plain = runs[scenario, "plain"][1]
        assert_same_app_behaviour(run, plain)
        assert extra_stderr(run, plain) == [], (scenario, kind, run.stderr[-2000:])
        traces = real_traces(uri, "apps")
        assert questions(traces) == sorted(f"main-run-{i}" for i in range(6)), (scenario, kind)
        assert_complete(traces)
    assert runs["exit3", 0][1].exit == 3 and runs["raise", 1][1].exit == 1
    assert "RuntimeError: the app failed" in runs["raise", 1][1].stderr


def test_exit_flush_is_bounded_when_the_store_hangs(zygote):
    """A store that answers nothing for 60 s: the app exits within its flush budget
    (SYNALINKS_OBS_FLUSH_TIMEOUT) and says what it could not write."""
    store = FaultyStore("slow", delay=60.0)
    try:
        plain = zygote.run("hang", False, CALLS=6)
        runs = [
            zygote.run(
                "hang", True, CALLS=6, MLFLOW_TRACKING_URI=store.url, MLFLOW_EXPERIMENT_NAME="apps",
                SYNALINKS_OBS_FLUSH_TIMEOUT=2, SYNALINKS_OBS_EXPORT_PROCESS=process,
            )
            for process in (1, 0)
        ]
        plain.wait()
        for run in runs:
            run.wait()
    finally:
        store.close()
    for run in runs:
        assert_same_app_behaviour(run, plain)
        (line,) = extra_stderr(run, plain)
        # 6 calls of 3 modules, and the 2 symbolic calls that built the program
        assert line.startswith("synalinks-obs: 20 span(s) were not written"), line
        assert run.wall <= plain.wall + 2 + WALL_SLACK, (run.wall, plain.wall)

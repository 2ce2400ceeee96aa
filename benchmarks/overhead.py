"""What tracing costs a Synalinks app: untraced vs Synalinks' built-in observability vs
synalinks-obs, side by side, in one run.

    LITELLM_LOCAL_MODEL_COST_MAP=True .venv/bin/python benchmarks/overhead.py

Workloads (each configuration runs in a fresh interpreter, one after the other):

  (a) a program of 10 trivial custom modules (11 module calls per program call, no LM):
      the worst case for a tracer, nothing to hide its cost behind;
  (b) a QA program (Input -> Generator) whose LM answers after ~20 ms: an offline
      OpenAI-compatible server on 127.0.0.1 (examples/_offline_lm.py), priced by litellm.

Row "untraced, other core kept busy" (workload a) is a control of the machine, not of
tracing: the same untraced loop while another process spins on the second core. On
small VMs (2 vCPUs sharing a physical core) that alone slows the loop down; exporting
"on the other core" pays the same price, so compare synalinks-obs with both rows.

For each: per program call (median, p95) and the ratio of the median to untraced; CPU
seconds of the whole process (user + system, the exporter process included, since the
app waits for it); the calling thread's extra CPU per span; the exit time after the
loop; peak RSS; spans landed in the store / expected. Then a start-up benchmark:
``python -c pass`` in a venv without the package, and with its wheel installed,
``SYNALINKS_OBSERVABILITY`` unset and set (plus ``-X importtime`` of what we import).

Options: ``--calls-a N --calls-b N`` (program calls per run), ``--builtin-calls-a N
--builtin-calls-b N`` (the built-in observability is ~40x slower on (a)), ``--down``
(also (a) into a store that is down: memory stays bounded), ``--server`` (also (a)
into a local ``mlflow server`` on 127.0.0.1, built-in and synalinks-obs: the client's
CPU per span), ``--faults`` (also ``benchmarks/faults.py``: what a store that is down
costs the app's own MLflow calls, the exporter's writer, a ``fit()`` with a ``Monitor``
and ``doctor``, in seconds), ``--no-startup``, ``--only a|b|startup|faults``. Timings on
a shared machine are noisy: run it twice.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# As pytest's pythonpath (pyproject): conftest (MlflowServer) and the offline LM server.
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "support"), str(ROOT / "examples")]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import cpu_apps  # noqa: E402

APP = textwrap.dedent(
    r'''
    import asyncio, atexit, json, os, resource, sys, time

    workload, config, calls, uri, base_url = sys.argv[1:6]
    calls = int(calls)
    started = time.perf_counter()

    def children_at_exit():  # registered first: runs last, after synalinks-obs' exit flush
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        print(json.dumps({"exit": True, "children_maxrss_kb": usage.ru_maxrss,
                          "children_cpu": usage.ru_utime + usage.ru_stime}), flush=True)

    atexit.register(children_at_exit)
    import synalinks

    experiment = os.environ.get("BENCH_EXPERIMENT", "bench")
    if config == "builtin":
        synalinks.enable_observability(tracking_uri=uri, experiment_name=experiment)
    elif config == "obs":
        import synalinks_obs

        synalinks_obs.enable(tracking_uri=uri, experiment_name=experiment)

    class Question(synalinks.DataModel):
        question: str

    class Answer(synalinks.DataModel):
        answer: str

    class Step(synalinks.Module):
        async def call(self, inputs, training=False):
            return inputs.clone()

        async def compute_output_spec(self, inputs, training=False):
            return inputs.clone()

    async def build():
        x = synalinks.Input(data_model=Question)
        if workload == "a":
            y = x
            for i in range(10):
                y = await Step(name=f"step_{i}")(y)
        else:
            lm = synalinks.LanguageModel(
                model="openai/gpt-4o-mini", api_base=base_url, api_key="sk-bench"
            )
            y = await synalinks.Generator(data_model=Answer, language_model=lm, name="answer")(x)
        return synalinks.Program(inputs=x, outputs=y, name=f"bench_{workload}")

    program = asyncio.run(build())

    async def loop(n, times):
        for i in range(n):
            begin = time.perf_counter()
            await program(Question(question=f"question {i}?"))
            times.append(time.perf_counter() - begin)

    # Warm-up: at least 5 calls and WARMUP seconds (tracing's one-off start-up work,
    # e.g. opening the store and starting the exporter process, is not the steady
    # state), then a full collection, as a long-running app has had its first one.
    warm_calls, warm_start = 0, time.perf_counter()
    while warm_calls < 5 or time.perf_counter() - warm_start < float(os.environ["WARMUP"]):
        asyncio.run(loop(1, []))
        warm_calls += 1
    warm_backlog = 0.0
    if config == "obs":  # the loop starts in the steady state: the warm-up's spans written
        flushed = time.perf_counter()
        synalinks_obs.flush(120)
        warm_backlog = time.perf_counter() - flushed
    import gc

    gc.collect()
    gc_stats = {"seconds": 0.0, "full": 0}
    gc_started = [0.0]

    def on_gc(phase, info):
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            gc_stats["seconds"] += time.perf_counter() - gc_started[0]
            gc_stats["full"] += info["generation"] == 2

    gc.callbacks.append(on_gc)
    burner = None
    if os.environ.get("BURN_OTHER_CORE") == "1":  # the machine control: no tracing at all
        import subprocess

        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
    times = []
    cpu0, thread0, wall0 = time.process_time(), time.thread_time(), time.perf_counter()
    asyncio.run(loop(calls, times))
    cpu1, thread1, wall1 = time.process_time(), time.thread_time(), time.perf_counter()
    if burner is not None:
        burner.kill()
        burner.wait()
    exporter_hwm_kb = None  # the exporter process's peak RSS so far (spans in flight now)
    if config == "obs":
        try:
            from synalinks_obs.runtime import RUNTIME

            with open(f"/proc/{RUNTIME.exporter.sinks.process.process.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        exporter_hwm_kb = int(line.split()[1])
        except Exception:
            pass
    print(json.dumps({
        "times": times, "loop_cpu": cpu1 - cpu0, "thread_cpu": thread1 - thread0,
        "loop_wall": wall1 - wall0, "loop_end": time.time(),
        "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "startup": wall0 - started, "warm_calls": warm_calls,
        "gc_seconds": gc_stats["seconds"], "gc_full": gc_stats["full"],
        "load": os.getloadavg()[0], "warm_backlog_s": warm_backlog,
        "exporter_hwm_kb": exporter_hwm_kb,
    }), flush=True)
    '''
)

SPANS_PER_CALL = {"a": 11, "b": 3}
CONFIGS = ("untraced", "builtin", "obs")
LABELS = {"untraced": "untraced", "builtin": "built-in enable_observability()",
          "obs": "synalinks-obs", "down": "synalinks-obs, store down",
          "builtin-server": "built-in, local mlflow server",
          "obs-server": "synalinks-obs, local mlflow server",
          "busy": "untraced, other core kept busy"}
# what the app runs for each configuration
APP_CONFIG = {"down": "obs", "obs-server": "obs", "builtin-server": "builtin",
              "busy": "untraced"}


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SYNALINKS_OBS", "MLFLOW_", "_SYNALINKS_OBS"))}
    env.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    env.update(extra)
    return env


def run_app(app, workload, config, calls, uri, base_url, env):
    # stderr goes to a file: a pipe read only at the end fills up (64 KB) with the
    # warnings of a noisy configuration, and the app then blocks writing the next one
    with tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(
            [sys.executable, str(app), workload, APP_CONFIG.get(config, config),
             str(calls), uri, base_url],
            stdout=subprocess.PIPE, stderr=errors, env=env, text=True,
        )
        out_lines = []
        for line in process.stdout:
            out_lines.append(line)
        _, status, usage = os.wait4(process.pid, 0)
        exited = time.time()
        process.returncode = os.waitstatus_to_exitcode(status)
        errors.seek(0)
        stderr = errors.read()
    result = at_exit = None
    for line in out_lines:
        if line.startswith("{"):
            message = json.loads(line)
            if message.get("exit"):
                at_exit = message
            else:
                result = message
    if process.returncode != 0 or result is None:
        raise RuntimeError(f"{workload}/{config} failed ({process.returncode}):\n{stderr[-3000:]}")
    result["cpu"] = usage.ru_utime + usage.ru_stime  # this process + what it reaped
    if config == "busy":  # the burner is not the app's
        result["cpu"] = float("nan")
    result["maxrss_kb"] = usage.ru_maxrss
    # (not the exporter process's: a child's RSS before its exec is the app's)
    result["children_maxrss_kb"] = at_exit["children_maxrss_kb"] if at_exit else None
    result["exit_time"] = exited - result["loop_end"]
    result["stderr"] = [l for l in stderr.splitlines() if "synalinks-obs" in l][-2:]
    return result


def spans_landed(uri, experiment="bench"):
    import mlflow

    # Traces whose spans a server keeps as artifacts (mlflow-artifacts:/) are read
    # through MLflow's global tracking URI.
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return 0
    total, token = 0, None
    while True:
        page = client.search_traces(locations=[found.experiment_id], max_results=500,
                                    page_token=token, include_spans=True)
        for trace in page:
            spans = trace.data.spans
            if not any(s.attributes.get("synalinks.is_symbolic") is True for s in spans):
                total += len(spans)
        token = page.token
        if not token:
            return total


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def workload_table(workload, results, calls_by_config):
    base = results["untraced"]
    base_median = statistics.median(base["times"])
    per_call = SPANS_PER_CALL[workload]
    rows = []
    header = (f"{'':34} {'calls':>6} {'median':>9} {'p95':>9} {'ratio':>6} {'CPU s':>7} "
              f"{'CPU/span':>9} {'thread/span':>11} {'GC s':>5} {'exit s':>7} {'RSS MB':>7} {'spans landed':>16}")
    rows.append(header)
    for config, result in results.items():
        calls = calls_by_config[config]
        median = statistics.median(result["times"])
        p95 = percentile(result["times"], 0.95)
        ratio = median / base_median
        spans = calls * per_call
        if config in ("untraced", "busy"):
            cpu_span = thread_span = "-"
            landed = "-"
        else:
            # extra CPU of the whole process (exporter process included) per span, scaled
            # to this run's number of calls; extra CPU of the calling thread per span
            base_cpu = base["cpu"] * calls / calls_by_config["untraced"]
            base_thread = base["thread_cpu"] * calls / calls_by_config["untraced"]
            cpu_span = f"{(result['cpu'] - base_cpu) / spans * 1e3:.2f} ms"
            thread_span = f"{(result['thread_cpu'] - base_thread) / spans * 1e6:.0f} us"
            landed = f"{result.get('landed', 0)}/{(calls + result['warm_calls']) * per_call}"
        rows.append(
            f"{LABELS[config]:34} {calls:>6} {median * 1e3:>7.2f}ms {p95 * 1e3:>7.2f}ms "
            f"{ratio:>5.2f}x {result['cpu']:>7.1f} {cpu_span:>9} {thread_span:>11} "
            f"{result['gc_seconds']:>5.2f} {result['exit_time']:>7.2f} {result['maxrss_kb'] / 1024:>7.0f} {landed:>16}"
        )
        if config == "down":
            held = (calls + result["warm_calls"]) * per_call
            growth = (result["maxrss_kb"] - base["maxrss_kb"]) / 1024
            rows.append(f"{'':34} peak RSS {growth:+.0f} MB vs untraced with {held} spans "
                        "made while the store was down (queue capped at max_queue_spans)")
        for line in result["stderr"]:
            rows.append(f"{'':34} stderr: {line[:150]}")
    return "\n".join(rows)


# -- CPU clocks: the calling thread, the export ----------------------------------------------


def _run_json(script, *args, env):
    done = subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True,
                          text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{script.name} {args} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def calling_thread(workdir, rounds, per_round, warmup, processes=3):
    """The calling thread's CPU per span: untraced, floor, synalinks-obs (interleaved
    rounds, split over ``processes`` processes one after the other, pooled: one process's
    figure moves by several microseconds with the machine's state) and untraced vs
    built-in (another process, the same way)."""
    script = workdir / "thread_app.py"
    script.write_text(cpu_apps.THREAD_APP)
    env = clean_env(WARMUP=str(warmup))
    runs = [
        _run_json(script, "obs", f"sqlite:///{workdir / f'thread-obs-{n}.db'}",
                  max(1, rounds // processes), per_round, env=env)
        for n in range(processes)
    ]
    obs = {"per_span_ns": {config: [value for run in runs for value in run["per_span_ns"][config]]
                           for config in runs[0]["per_span_ns"]},
           "load": [load for run in runs for load in run["load"]]}
    # the built-in writes on the calling thread (~1 ms a span): fewer calls per round
    builtin = _run_json(script, "builtin", f"sqlite:///{workdir / 'thread-builtin.db'}", rounds,
                        max(2, per_round // 25), env=env)

    def paired(run, config, base):
        return statistics.median(c - b for c, b in zip(run["per_span_ns"][config], run["per_span_ns"][base], strict=True)) / 1e3

    def median(run, config):
        return statistics.median(run["per_span_ns"][config]) / 1e3

    untraced = median(obs, "untraced")
    out = {
        "untraced_us_per_module_call": untraced,
        "floor_us_per_module_call": median(obs, "floor"),
        "traced_us_per_module_call": median(obs, "traced"),
        "floor_extra_us_per_span": paired(obs, "floor", "untraced"),
        "traced_extra_us_per_span": paired(obs, "traced", "untraced"),
        "traced_over_floor_us_per_span": paired(obs, "traced", "floor"),
        "builtin_untraced_us_per_module_call": median(builtin, "untraced"),
        "builtin_us_per_module_call": median(builtin, "builtin"),
        "builtin_extra_us_per_span": paired(builtin, "builtin", "untraced"),
        "rounds": len(obs["per_span_ns"]["traced"]), "processes": processes,
        "traced_extra_us_per_process": [paired(run, "traced", "untraced") for run in runs],
        "calls_per_round": per_round,
        "builtin_calls_per_round": builtin["calls_per_round"],
        "load": {"obs": obs["load"], "builtin": builtin["load"]},
        "per_span_ns": {"obs": obs["per_span_ns"], "builtin": builtin["per_span_ns"]},
    }
    out["traced_extra_percent_of_untraced"] = 100 * out["traced_extra_us_per_span"] / untraced
    return out


def export_cpu(workdir, server, calls, batch):
    """Export CPU per span (thread clocks): the app's exporter thread (Wire tuples, their
    pickle) and the exporter process (unpickle, MLflow spans, log_spans), per store."""
    produce, write = workdir / "produce_app.py", workdir / "write_app.py"
    produce.write_text(cpu_apps.PRODUCE_APP)
    write.write_text(cpu_apps.WRITE_APP)
    wires = workdir / "wires.pickle"
    env = clean_env()
    app_side = _run_json(produce, calls, wires, env=env)
    out = {"app_thread": app_side, "stores": {}}
    stores = {"sqlite": f"sqlite:///{workdir / 'export.db'}"}
    if server is not None:
        stores["server"] = server.uri
    for name, uri in stores.items():
        side = _run_json(write, uri, wires, batch, env=env)
        total = (app_side["record_to_wire_ns"] + app_side["pickle_ns"] + side["unpickle_ns"]
                 + side["wire_to_span_ns"] + side["log_spans_ns"]) / 1e6
        ours = (app_side["record_to_wire_ns"] + app_side["pickle_ns"] + side["unpickle_ns"]
                + side["wire_to_span_ns"]) / 1e6
        out["stores"][name] = dict(side, total_ms_per_span=total, ours_ms_per_span=ours,
                                   mlflow_log_spans_ms_per_span=side["log_spans_ns"] / 1e6)
    return out


def export_table(export) -> str:
    app = export["app_thread"]
    lines = [f"{'export CPU per span (thread clocks)':36} {'Wire+JSON':>10} {'pickle':>8} "
             f"{'unpickle':>9} {'MLflow Span':>12} {'log_spans':>10} {'total':>9}"]
    for name, side in export["stores"].items():
        lines.append(
            f"{'into ' + name:36} {app['record_to_wire_ns'] / 1e3:>8.1f}us {app['pickle_ns'] / 1e3:>6.1f}us "
            f"{side['unpickle_ns'] / 1e3:>7.1f}us {side['wire_to_span_ns'] / 1e3:>10.1f}us "
            f"{side['log_spans_ns'] / 1e3:>8.0f}us {side['total_ms_per_span']:>7.3f}ms"
        )
    return "\n".join(lines)


def thread_table(thread) -> str:
    t = thread
    return "\n".join([
        f"calling thread, CPU per module call (thread clock, medians of {t['rounds']} interleaved rounds"
        + (f" in {t['processes']} processes" if t.get("processes", 1) > 1 else "") + ")",
        f"  untraced {t['untraced_us_per_module_call']:.1f} us; floor (bare wrapper) "
        f"{t['floor_us_per_module_call']:.1f} us (+{t['floor_extra_us_per_span']:.1f}); synalinks-obs "
        f"{t['traced_us_per_module_call']:.1f} us: +{t['traced_extra_us_per_span']:.1f} us per span "
        f"({t['traced_extra_percent_of_untraced']:.1f}% of an untraced call; "
        f"+{t['traced_over_floor_us_per_span']:.1f} us over the floor)"
        + ("; by process: " + ", ".join(f"+{x:.1f}" for x in t["traced_extra_us_per_process"]) + " us"
           if t.get("traced_extra_us_per_process") else ""),
        f"  built-in (its own process): untraced {t['builtin_untraced_us_per_module_call']:.1f} us, "
        f"built-in {t['builtin_us_per_module_call']:.1f} us: +{t['builtin_extra_us_per_span']:.0f} us per span",
    ])


def summarize(results, calls_by_config, workload):
    """The JSON form of a workload's rows (medians, not every timing)."""
    per_call = SPANS_PER_CALL[workload]
    out = {}
    base = results["untraced"]
    for config, result in results.items():
        calls = calls_by_config[config]
        row = {
            "label": LABELS[config], "calls": calls, "spans": calls * per_call,
            "median_ms": statistics.median(result["times"]) * 1e3,
            "p95_ms": percentile(result["times"], 0.95) * 1e3,
            "ratio": statistics.median(result["times"]) / statistics.median(base["times"]),
            "process_cpu_s": result["cpu"], "thread_cpu_s": result["thread_cpu"],
            "loop_wall_s": result["loop_wall"], "exit_s": result["exit_time"],
            "exit_vs_untraced_s": result["exit_time"] - base["exit_time"],
            "maxrss_mb": result["maxrss_kb"] / 1024,
            "exporter_maxrss_mb": (result.get("exporter_hwm_kb") or 0) / 1024,
            "gc_s": result["gc_seconds"], "load": result.get("load"),
            "warm_calls": result["warm_calls"], "stderr": result["stderr"],
            "warm_backlog_flush_s": result.get("warm_backlog_s"),
        }
        if "landed" in result:
            row["landed"] = result["landed"]
            row["expected"] = (calls + result["warm_calls"]) * per_call
        out[config] = row
    return out


def memory(a_rows, max_queue_spans=100_000):
    """Peak RSS per 10,000 spans in flight with the store down: the app (against untraced)
    and the exporter process (its VmHWM at the loop's end, against the exporter process of
    the server run: the same HTTP client and no SQL store, its backlog flushed before its
    loop; the sqlite run's opens MLflow's SQL store, a larger base)."""
    down = a_rows.get("down")
    if down is None:
        return None
    held = min(down["spans"] + down["warm_calls"] * SPANS_PER_CALL["a"], max_queue_spans)
    app = (down["maxrss_mb"] - a_rows["untraced"]["maxrss_mb"]) / (held / 10_000)
    base = a_rows.get("obs-server") or a_rows.get("obs") or {}
    small = base.get("exporter_maxrss_mb") or 0
    exporter = (down["exporter_maxrss_mb"] - small) / (held / 10_000) if small else None
    return {"spans_in_flight": held, "app_mb_per_10k": app, "exporter_mb_per_10k": exporter,
            "app_peak_mb": down["maxrss_mb"], "exporter_peak_mb": down["exporter_maxrss_mb"],
            "exporter_peak_small_backlog_mb": small, "exporter_base_run": base.get("label")}


def goals(report):
    """Each goal of issue 19 beside the figure of this run."""
    out = {}
    thread = report.get("calling_thread")
    if thread:
        out["calling thread <= 10% of an untraced module call"] = (
            f"{thread['traced_extra_us_per_span']:.1f} us = "
            f"{thread['traced_extra_percent_of_untraced']:.1f}%",
            thread["traced_extra_percent_of_untraced"] <= 10)
    export = report.get("export", {}).get("stores", {})
    for name, bound in (("sqlite", 0.4), ("server", 0.2)):
        if name in export:
            value = export[name]["total_ms_per_span"]
            out[f"export into {name} <= {bound} ms CPU per span"] = (f"{value:.3f} ms", value <= bound)
    a = report.get("a", {})
    for config, bound in (("obs", 2.0), ("obs-server", 1.0)):
        row = a.get(config)
        if row:
            landed = row.get("landed") == row.get("expected")
            out[f"{row['label']}: exit within {bound:g} s of untraced, every span landed"] = (
                f"{row['exit_vs_untraced_s']:+.2f} s, {row.get('landed')}/{row.get('expected')}",
                row["exit_vs_untraced_s"] <= bound and landed)
    mem = report.get("memory")
    if mem:
        out["peak RSS <= 10 MB per 10,000 spans in flight (store down): app"] = (
            f"{mem['app_mb_per_10k']:.1f} MB", mem["app_mb_per_10k"] <= 10)
        if mem["exporter_mb_per_10k"] is not None:
            out["peak RSS <= 10 MB per 10,000 spans in flight (store down): exporter process"] = (
                f"{mem['exporter_mb_per_10k']:.1f} MB", mem["exporter_mb_per_10k"] <= 10)
    return {goal: {"measured": text, "met": met} for goal, (text, met) in out.items()}


# -- start-up -----------------------------------------------------------------------------


def startup_benchmark(workdir, repeats=40):
    """``python -c pass``: a venv without synalinks-obs, one with its wheel (unset / set)."""
    wheel_dir = workdir / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
         "-w", str(wheel_dir), str(ROOT)],
        check=True, capture_output=True,
    )
    wheel = next(wheel_dir.glob("synalinks_obs-*.whl"))
    base_python = getattr(sys, "_base_executable", sys.executable)
    pythons = {}
    for name in ("without", "with"):
        venv = workdir / f"venv-{name}"
        subprocess.run([base_python, "-m", "venv", "--without-pip", str(venv)], check=True)
        pythons[name] = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(pythons["with"]), "install", "-q",
         "--no-deps", str(wheel)],
        check=True, capture_output=True,
    )
    cases = {
        "venv without synalinks-obs": (pythons["without"], {}),
        "with it, SYNALINKS_OBSERVABILITY unset": (pythons["with"], {}),
        "with it, SYNALINKS_OBSERVABILITY=1": (pythons["with"], {"SYNALINKS_OBSERVABILITY": "1"}),
    }
    env = {k: v for k, v in os.environ.items() if k != "SYNALINKS_OBSERVABILITY"}
    timings = {case: [] for case in cases}
    for _ in range(repeats):  # interleaved, so load changes hit every case alike
        for case, (python, extra) in cases.items():
            begin = time.perf_counter()
            subprocess.run([str(python), "-c", "pass"], env=dict(env, **extra), check=True)
            timings[case].append(time.perf_counter() - begin)
    importtime = subprocess.run(
        [str(pythons["with"]), "-X", "importtime", "-c", "pass"],
        env=dict(env, SYNALINKS_OBSERVABILITY="1"), capture_output=True, text=True,
    ).stderr
    ours = []
    for line in importtime.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and "synalinks_obs" in parts[2]:
            ours.append((int(parts[0].split(":")[1]), int(parts[1]), parts[2].strip()))
    modules = sorted({
        line.split("|")[2].strip() for line in importtime.splitlines() if line.count("|") == 2
    })
    heavy = [m for m in modules if m.split(".")[0] in ("mlflow", "synalinks", "pydantic", "litellm")]
    base = statistics.median(timings["venv without synalinks-obs"])
    lines = [f"{'python -c pass':44} {'median':>9} {'min':>9} {'vs without':>11}"]
    for case, values in timings.items():
        median = statistics.median(values)
        lines.append(f"{case:44} {median * 1e3:>7.2f}ms {min(values) * 1e3:>7.2f}ms "
                     f"{(median - base) * 1e3:>+9.2f}ms")
    lines.append(
        "-X importtime, SYNALINKS_OBSERVABILITY=1: "
        + ", ".join(f"{name.lstrip()} {self_us} us (cumulative {cum_us} us)"
                    for self_us, cum_us, name in ours)
    )
    lines.append(f"heavy modules imported at start-up: {heavy or 'none'}")
    return "\n".join(lines)


# -- main ---------------------------------------------------------------------------------


def machine():
    try:
        model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if "model name" in l)
    except Exception:
        model = platform.processor() or "?"
    load = os.getloadavg()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import importlib.metadata as md

    import mlflow

    return (f"{model}, {os.cpu_count()} cores, {mem:.0f} GB RAM, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}, synalinks "
            f"{md.version('synalinks')}, mlflow {mlflow.__version__}; load average at start "
            f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls-a", type=int, default=1000)
    parser.add_argument("--calls-b", type=int, default=200)
    parser.add_argument("--builtin-calls-a", type=int, default=100)
    parser.add_argument("--builtin-calls-b", type=int, default=100)
    parser.add_argument("--only", choices=("a", "b", "startup", "faults", "thread", "export"))
    parser.add_argument("--faults", action="store_true", help="also benchmarks/faults.py")
    parser.add_argument("--down", action="store_true", help="also (a) into a store that is down")
    parser.add_argument("--calls-down", type=int, default=10000,
                        help="program calls of the store-down run (11 spans each)")
    parser.add_argument("--server", action="store_true",
                        help="also (a) into a local mlflow server (started here)")
    parser.add_argument("--no-startup", action="store_true")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of warm-up calls")
    parser.add_argument("--json", nargs="?", const="", default=None, metavar="PATH",
                        help="also write the figures as JSON (default path: "
                        "benchmarks/results/<UTC date>.json)")
    parser.add_argument("--rounds", type=int, default=90,
                        help="interleaved rounds of the calling-thread measurement")
    parser.add_argument("--thread-processes", type=int, default=3,
                        help="processes the calling-thread rounds are split over (pooled)")
    parser.add_argument("--round-calls", type=int, default=40,
                        help="program calls per round of the calling-thread measurement")
    parser.add_argument("--export-calls", type=int, default=300,
                        help="program calls whose spans the export measurement writes")
    parser.add_argument("--export-batch", type=int, default=1000,
                        help="spans per log_spans call in the export measurement")
    args = parser.parse_args(argv)
    report = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(sys.argv), "load_start": os.getloadavg()}

    workdir = Path(tempfile.mkdtemp(prefix="synalinks-obs-bench-"))
    os.environ.setdefault("SYNALINKS_HOME", str(workdir / "synalinks-home"))
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    report["machine"] = machine()
    print(f"machine: {report['machine']}", flush=True)
    app = workdir / "app.py"
    app.write_text(APP)

    from _offline_lm import OfflineServer

    if args.only == "startup":
        print("start-up\n" + startup_benchmark(workdir), flush=True)
        return
    if args.only == "faults":
        run_faults()
        return
    if args.only in (None, "thread"):
        print("calling thread: interleaved rounds...", flush=True)
        report["calling_thread"] = calling_thread(workdir, args.rounds, args.round_calls, args.warmup,
                                                  args.thread_processes)
        print(thread_table(report["calling_thread"]) + "\n", flush=True)
    llm = OfflineServer().start()
    llm.inject_latency(0.02)
    server = None
    if args.server and args.only in (None, "a", "export"):
        from conftest import MlflowServer

        (workdir / "server").mkdir()
        print("starting a local mlflow server...", flush=True)
        server = MlflowServer(workdir / "server").start()
    try:
        if args.only in (None, "export"):
            print("export CPU per span...", flush=True)
            report["export"] = export_cpu(workdir, server, args.export_calls, args.export_batch)
            print(export_table(report["export"]) + "\n", flush=True)
        for workload in ("a", "b"):
            if args.only and workload != args.only:
                continue
            calls = {
                "untraced": getattr(args, f"calls_{workload}"),
                "builtin": getattr(args, f"builtin_calls_{workload}"),
                "obs": getattr(args, f"calls_{workload}"),
            }
            configs = list(CONFIGS)
            if workload == "a":  # the machine's own share (see the docstring)
                configs.insert(1, "busy")
                calls["busy"] = calls["untraced"]
            if args.down and workload == "a":
                configs.append("down")
                calls["down"] = args.calls_down
            if server is not None and workload == "a":
                configs += ["builtin-server", "obs-server"]
                calls["builtin-server"] = calls["builtin"]
                calls["obs-server"] = calls["obs"]
            results = {}
            for config in configs:
                store = workdir / f"{workload}-{config}.db"
                uri = f"sqlite:///{store}"
                experiment = "bench"
                if config == "down":
                    with socket.socket() as sock:
                        sock.bind(("127.0.0.1", 0))
                        uri = f"http://127.0.0.1:{sock.getsockname()[1]}"
                elif config.endswith("-server"):
                    uri, experiment = server.uri, f"bench-{workload}-{config}"
                print(f"running ({workload}) {LABELS[config]}, {calls[config]} calls...", flush=True)
                env = clean_env(WARMUP=str(args.warmup), BENCH_EXPERIMENT=experiment,
                                BURN_OTHER_CORE="1" if config == "busy" else "0")
                result = run_app(app, workload, config, calls[config], uri, llm.base_url, env)
                if config not in ("untraced", "down", "busy"):
                    try:
                        result["landed"] = spans_landed(uri, experiment)
                    except Exception as exc:  # report the timings anyway
                        print(f"  cannot count the spans landed: {exc}"[:300], flush=True)
                        result["landed"] = "?"
                results[config] = result
            title = ("(a) 10 trivial custom modules (11 spans per call)" if workload == "a"
                     else "(b) QA program, LM answering after ~20 ms (3 spans per call)")
            print(f"\n{title}\n" + workload_table(workload, results, calls) + "\n", flush=True)
            report[workload] = summarize(results, calls, workload)
            if workload == "a":
                report["memory"] = memory(report["a"])
    finally:
        llm.stop()
        if server is not None:
            server.stop()
    if not args.no_startup and args.only is None:
        report["startup"] = startup_benchmark(workdir)
        print("start-up\n" + report["startup"], flush=True)
    if args.faults:
        run_faults()
    report["load_end"] = os.getloadavg()
    report["goals"] = goals(report)
    print("goals (issue 19):", flush=True)
    for goal, verdict in report["goals"].items():
        print(f"  {'met' if verdict['met'] else 'NOT met':7} {goal}: {verdict['measured']}", flush=True)
    print(f"load average: start {report['load_start'][0]:.1f}, end {report['load_end'][0]:.1f}", flush=True)
    if args.json is not None:
        path = Path(args.json) if args.json else (
            ROOT / "benchmarks" / "results" / f"{report['date'][:10]}.json")
        path.write_text(json.dumps(report, indent=1, default=str) + "\n")
        print(f"figures written to {path}", flush=True)
    shutil.rmtree(workdir, ignore_errors=True)


def run_faults():
    """``benchmarks/faults.py`` in a fresh interpreter (a store that is down, in seconds)."""
    subprocess.run([sys.executable, str(Path(__file__).with_name("faults.py"))], env=clean_env(), check=False)


if __name__ == "__main__":
    main()

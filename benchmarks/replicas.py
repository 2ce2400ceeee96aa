"""How many spans per second one authenticated MLflow server takes from many app replicas.

    LITELLM_LOCAL_MODEL_COST_MAP=True .venv-test/bin/python benchmarks/replicas.py \
        [--replicas 4] [--calls 400] [--server-workers 4] [--output benchmarks/results/replicas.txt]

The production set-up of the README, on 127.0.0.1: a throw-away PostgreSQL (Debian's
binaries, tests/support/postgres.py), ``mlflow server --app-name basic-auth --workers N``
on it with the artifact proxy, and ``--replicas`` app processes started at once, each
with ``SYNALINKS_OBSERVABILITY=1`` and its own user's ``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD``. Each replica builds a program of 10 trivial modules (11
spans per call, no LM: the spans come faster than any server takes them), waits until
all are ready, calls it ``--calls`` times as fast as it can, then waits for its spans to be
written (``synalinks_obs.flush``).

Printed: the spans each replica made and how fast (its own loop), and the rate the server
sustained: all spans / (last replica's flush done - first replica's first call). The
spans are then counted in PostgreSQL (every one must be there once). Timings on a shared
machine are noisy: run it twice.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "support"))

REPLICA = textwrap.dedent(
    r'''
    import asyncio, json, os, sys, time

    calls, ready, go = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    import synalinks
    import synalinks_obs

    class Question(synalinks.DataModel):
        question: str

    class Step(synalinks.Module):
        async def call(self, inputs, training=False):
            return inputs.clone()

        async def compute_output_spec(self, inputs, training=False):
            return inputs.clone()

    async def build():
        x = synalinks.Input(data_model=Question)
        y = x
        for i in range(10):
            y = await Step(name=f"step_{i}")(y)
        return synalinks.Program(inputs=x, outputs=y, name="replica")

    program = asyncio.run(build())
    assert synalinks_obs.flush(120)  # the program's build, before the clock starts
    open(ready, "w").close()
    while not os.path.exists(go):
        time.sleep(0.01)

    async def loop():
        for i in range(calls):
            await program(Question(question=f"{os.getpid()}-{i}"))

    first = time.time()
    asyncio.run(loop())
    made = time.time()
    flushed_ok = synalinks_obs.flush(600)
    print(json.dumps({"pid": os.getpid(), "spans": calls * 11, "first": first, "made": made,
                      "flushed": time.time(), "flushed_ok": flushed_ok}))
    '''
)


def count_spans(pg, uri) -> tuple[int, int]:
    """(spans, distinct (trace, span) ids) of the replicas' experiments, in PostgreSQL."""
    connection = pg.connect(uri)
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT count(*), count(DISTINCT (s.trace_id, s.span_id)) FROM spans s "
                       "JOIN experiments e ON s.experiment_id = e.experiment_id "
                       "WHERE e.name LIKE 'replica%'")
        return cursor.fetchone()
    finally:
        connection.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--calls", type=int, default=400, help="program calls per replica (11 spans each)")
    parser.add_argument("--server-workers", type=int, default=4)
    parser.add_argument("--output", help="also write the report to this file")
    args = parser.parse_args(argv)

    import mlflow_servers
    import postgres as pg

    reason = pg.unavailable() or mlflow_servers.auth_unavailable()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="synalinks-obs-replicas-"))
    database = pg.PostgresServer().start()
    server = mlflow_servers.MlflowServer(basic_auth=True, backend_store_uri=database.uri,
                                         workers=args.server_workers)
    report = []
    try:
        server.start()
        script = work / "replica.py"
        script.write_text(REPLICA)
        processes = []
        for n in range(args.replicas):
            user, password = f"replica{n}", f"replica-{n}-password-x9"
            server.create_user(user, password)
            env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
            env.update({"SYNALINKS_OBSERVABILITY": "1", "MLFLOW_TRACKING_URI": server.url,
                        "MLFLOW_EXPERIMENT_NAME": f"replica{n}", "MLFLOW_TRACKING_USERNAME": user,
                        "MLFLOW_TRACKING_PASSWORD": password, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                        "SYNALINKS_HOME": str(work / "home")})
            processes.append(subprocess.Popen(
                [sys.executable, str(script), str(args.calls), str(work / f"ready{n}"), str(work / "go")],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=work))
        while not all((work / f"ready{n}").exists() for n in range(args.replicas)):
            if any(p.poll() not in (None, 0) for p in processes):
                print(next(p for p in processes if p.poll()).stderr.read()[-3000:], file=sys.stderr)
                return 1
            time.sleep(0.1)
        before = count_spans(pg, database.uri)  # the programs' builds (symbolic calls)
        (work / "go").touch()
        results = []
        for process in processes:
            out, err = process.communicate(timeout=1800)
            if process.returncode != 0:
                print(err[-3000:], file=sys.stderr)
                return 1
            results.append(json.loads(out.strip().splitlines()[-1]))
        total = sum(r["spans"] for r in results)
        first = min(r["first"] for r in results)
        last = max(r["flushed"] for r in results)
        after = count_spans(pg, database.uri)
        stored, distinct = after[0] - before[0], after[1] - before[1]
        report.append(f"synalinks-obs replicas benchmark, {time.strftime('%Y-%m-%d')}, "
                      f"{platform.python_version()}, {os.cpu_count()} CPUs ({platform.machine()})")
        report.append(f"server: mlflow server --app-name basic-auth --workers {args.server_workers}, "
                      f"PostgreSQL, 127.0.0.1; {args.replicas} replicas x {args.calls} calls x 11 spans")
        for r in results:
            report.append(f"  replica {r['pid']}: {r['spans']} spans made in {r['made'] - r['first']:.1f} s "
                          f"({r['spans'] / (r['made'] - r['first']):.0f}/s), written {r['flushed'] - r['first']:.1f} s "
                          f"after its first call{'' if r['flushed_ok'] else ' (flush timed out)'}")
        report.append(f"server sustained: {total} spans in {last - first:.1f} s = "
                      f"{total / (last - first):.0f} spans/s")
        report.append(f"in PostgreSQL: {stored} spans, {distinct} distinct (expected {total})")
        report.append("machine load average (1, 5, 15 min) at the end: "
                      + ", ".join(f"{x:.1f}" for x in os.getloadavg())
                      + " (the server, PostgreSQL and the replicas share these CPUs)")
    finally:
        server.stop()
        database.stop()
    text = "\n".join(report)
    print(text)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text + "\n")
    return 0 if stored == distinct == total else 1


if __name__ == "__main__":
    sys.exit(main())

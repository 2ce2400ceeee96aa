"""Instructions and cache misses a span costs the calling thread, counted by callgrind.

The thread-clock figures of ``overhead.py`` move by microseconds between runs on this
shared VM; valgrind's callgrind counts instructions and simulated L1 misses instead,
which do not depend on the machine's load. One process runs workload (a) (10 trivial
custom modules, 11 spans a program call) in phases: untraced (the original
``__call__``s), the floor (a bare wrapper that only awaits the original) and
synalinks-obs (its wrapper, tracing on, into a new SQLite store), each phase ``--calls``
program calls after a warm-up, the phases repeated ``--repeat`` times, and only the
app's main thread counted (``--separate-threads``; the exporter thread and process are
not). Printed: per span, each phase minus the untraced mean. Needs ``valgrind``
(``apt-get install valgrind``); runs ~4 minutes for the defaults.

    LITELLM_LOCAL_MODEL_COST_MAP=True .venv-test/bin/python benchmarks/callgrind_spans.py

``--compile tracing.child_calls`` (repeatable) counts a variant instead: a copy of the
installed package with those modules compiled by Cython (``pip install cython
setuptools``), put first on ``PYTHONPATH``; the app checks that the compiled modules
are the ones it imported.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

from cpu_apps import PHASES, WORKLOAD_A

SPANS_PER_CALL = 11
EVENTS = ("Ir", "I1mr", "D1mr", "D1mw")

APP = r'''
import asyncio, functools, importlib, os, subprocess, sys, tempfile
import synalinks
''' + WORKLOAD_A + r'''
program = asyncio.run(build("bench_a"))
import synalinks_obs
from synalinks_obs.runtime import RUNTIME

synalinks_obs.enable(tracking_uri=f"sqlite:///{tempfile.mkdtemp()}/m.db", experiment_name="callgrind")
for name in os.environ.get("COMPILED", "").split():
    loaded = importlib.import_module("synalinks_obs." + name).__file__
    if not loaded.endswith(".so"):
        sys.exit(f"callgrind_spans: synalinks_obs.{name} was not the compiled copy: {loaded}")
''' + PHASES + r'''
async def loop(n):
    for i in range(n):
        await program(Question(question=f"question {i}?"))

def callgrind(*args):
    subprocess.run(["callgrind_control", *args, str(os.getpid())], capture_output=True, check=True)

calls = int(os.environ["CALLS"])
for phase in os.environ["PHASES"].split():
    use_phase(phase)
    asyncio.run(loop(20))
    callgrind("-i", "on")
    asyncio.run(loop(calls))
    callgrind("-d", phase)
    callgrind("-i", "off")
use_phase("traced")
sys.stdout.flush()
os.system(f"pkill -9 -P {os.getpid()}")
os._exit(0)
'''


def totals(path: str) -> tuple[str, dict[str, int]]:
    text = open(path, encoding="utf-8").read()
    phase = re.search(r"^desc: Trigger: dump (\S+)", text, re.M).group(1)
    names = re.search(r"^events: (.*)$", text, re.M).group(1).split()
    values = [int(v) for v in re.search(r"^totals: (.*)$", text, re.M).group(1).split()]
    return phase, dict(zip(names, values, strict=True))


def compiled_copy(work: str, modules: list[str]) -> str | None:
    """A copy of the installed ``synalinks_obs`` with ``modules`` compiled in place by
    Cython; the directory to put on ``PYTHONPATH``, or None (a line says why)."""
    import importlib.util

    if importlib.util.find_spec("Cython") is None or importlib.util.find_spec("setuptools") is None:
        print("callgrind_spans: --compile needs Cython; fix: pip install cython setuptools", file=sys.stderr)
        return None
    import synalinks_obs

    root = os.path.join(work, "variant")
    shutil.copytree(os.path.dirname(synalinks_obs.__file__), os.path.join(root, "synalinks_obs"))
    for name in modules:
        source = os.path.join(root, "synalinks_obs", *name.split(".")) + ".py"
        if not os.path.exists(source):
            print(f"callgrind_spans: --compile {name}: no {source}; fix: name a module of synalinks_obs",
                  file=sys.stderr)
            return None
        built = subprocess.run([sys.executable, "-m", "Cython.Build.Cythonize", "-3", "-i", source],
                               capture_output=True, text=True)
        if built.returncode != 0:
            print(built.stderr[-3000:], file=sys.stderr)
            return None
    return root


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=120, help="program calls a phase (11 spans each)")
    parser.add_argument("--repeat", type=int, default=2, help="times the three phases run")
    parser.add_argument("--compile", action="append", default=[], metavar="MODULE",
                        help="count a copy with synalinks_obs.MODULE compiled by Cython (repeatable)")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("callgrind_spans: valgrind is not installed; fix: apt-get install valgrind", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="callgrind-spans-")
    app = os.path.join(work, "app.py")
    with open(app, "w", encoding="utf-8") as out:
        out.write(APP)
    env = dict(os.environ, CALLS=str(args.calls), PHASES=" ".join(["untraced", "floor", "traced"] * args.repeat),
               LITELLM_LOCAL_MODEL_COST_MAP="True", SYNALINKS_HOME=os.path.join(work, "home"))
    if args.compile:
        variant = compiled_copy(work, args.compile)
        if variant is None:
            shutil.rmtree(work, ignore_errors=True)
            return 2
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [variant, env.get("PYTHONPATH")]))
        env["COMPILED"] = " ".join(args.compile)
        print(f"variant: synalinks_obs with {', '.join(args.compile)} compiled by Cython")
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", "--cache-sim=yes", "--separate-threads=yes", "--instr-atstart=no",
         f"--callgrind-out-file={work}/cg.out", sys.executable, app],
        env=env, capture_output=True, text=True,
    )
    dumps = sorted(glob.glob(f"{work}/cg.out.*-01"))  # thread 1 (the app's main thread), one per phase
    if not dumps:
        print(done.stderr[-3000:], file=sys.stderr)
        return 1
    phases: dict[str, list[dict[str, int]]] = {}
    for path in dumps:
        phase, counts = totals(path)
        phases.setdefault(phase, []).append(counts)
    spans = args.calls * SPANS_PER_CALL
    base = {e: sum(c[e] for c in phases["untraced"]) / len(phases["untraced"]) for e in EVENTS}
    print(f"per span, minus untraced ({args.calls} program calls x {SPANS_PER_CALL} spans a phase, "
          f"{args.repeat} times each; main thread)")
    print(f"{'':10}" + "".join(f"{e:>10}" for e in EVENTS) + "   each phase (instructions)")
    for phase in ("floor", "traced"):
        runs = phases[phase]
        mean = {e: sum(c[e] for c in runs) / len(runs) for e in EVENTS}
        each = ", ".join(f"{(c['Ir'] - base['Ir']) / spans:+.0f}" for c in runs)
        print(f"{phase:10}" + "".join(f"{(mean[e] - base[e]) / spans:>+10.0f}" for e in EVENTS) + f"   {each}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

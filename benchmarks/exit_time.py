"""How much later does a short traced script exit than the same script untraced?

    LITELLM_LOCAL_MODEL_COST_MAP=True .venv-test/bin/python benchmarks/exit_time.py [--rounds N] [--calls N]

A throw-away app of a user's own (Input -> Generator -> Generator, the examples' offline
LM, ``--calls`` program calls, 3 by default) runs in fresh interpreters, in rounds: each
round runs it untraced, then with ``SYNALINKS_OBSERVABILITY=1``, then under
``python -m synalinks_obs.run``, each into a store that already exists (a copy made by a
first traced run) and, with ``--fresh``, also into a new one. Per run it takes the whole
process's wall time and the time from the app's last line (it prints ``time.time()``) to
the moment the process has exited: what a user waits for after the output. Differences
are taken round by round against the untraced run of the same round (the machine's
speed drifts), then the median is printed. Standard library only; not part of the test
suite (timings are not pass/fail).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

APP = textwrap.dedent(
    f'''
    import asyncio, os, sys, time
    sys.path.insert(0, {str(EXAMPLES)!r})
    import synalinks
    from _offline_lm import language_model

    class Question(synalinks.DataModel):
        question: str

    class Answer(synalinks.DataModel):
        answer: str

    async def main():
        lm = language_model()
        x = synalinks.Input(data_model=Question)
        y = await synalinks.Generator(data_model=Answer, language_model=lm, name="first")(x)
        z = await synalinks.Generator(data_model=Answer, language_model=lm, name="second")(y)
        program = synalinks.Program(inputs=x, outputs=z, name="two_generators")
        for i in range(int(os.environ["CALLS"])):
            await program(Question(question=f"q{{i}}"))

    asyncio.run(main())
    print("last line at", time.time(), flush=True)
    '''
)


def run(argv, env, cwd):
    started = time.monotonic()
    out = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True)
    ended_wall, wall = time.time(), time.monotonic() - started
    lines = [line for line in out.stdout.splitlines() if line.startswith("last line at ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{argv} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return wall, ended_wall - float(lines[-1].split()[-1]), out.stderr.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--fresh", action="store_true", help="also trace into a new store each round")
    args = parser.parse_args()
    python = sys.executable
    work = Path(tempfile.mkdtemp(prefix="exit-time-"))
    app = work / "app.py"
    app.write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNALINKS_OBS", "MLFLOW_"))}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", CALLS=str(args.calls), SYNALINKS_OBSERVABILITY="0")
    warm = work / "warm.db"
    run([python, app], {**env, "SYNALINKS_OBSERVABILITY": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{warm}"}, work)
    configs = {
        "untraced": lambda db: ([python, app], env),
        "SYNALINKS_OBSERVABILITY=1": lambda db: (
            [python, app], {**env, "SYNALINKS_OBSERVABILITY": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{db}"}),
        "launcher": lambda db: ([python, "-m", "synalinks_obs.run", "--tracking-uri", f"sqlite:///{db}", app], env),
    }
    if args.fresh:
        configs["launcher, new store"] = configs["launcher"]
    results = {name: [] for name in configs}
    for round_ in range(args.rounds):
        for name, make in configs.items():
            db = work / f"r{round_}-{len(results[name])}.db"
            if "new store" not in name:
                shutil.copy(warm, db)
            argv, run_env = make(db)
            wall, exit_after, stderr = run(argv, run_env, work)
            results[name].append((wall, exit_after))
            print(f"round {round_ + 1} {name:28s} wall {wall:6.2f} s  exit after last line {exit_after:5.2f} s"
                  + (f"  stderr: {stderr[:120]!r}" if stderr else ""), flush=True)
    base = results["untraced"]
    print(f"\nmedians over {args.rounds} rounds, {args.calls} program calls (Python {sys.version.split()[0]}):")
    print(f"{'':28s} {'wall':>8s} {'exit after last line':>22s} {'extra exit vs untraced (paired)':>32s}")
    for name, rows in results.items():
        extra = [rows[i][1] - base[i][1] for i in range(len(rows))]
        print(f"{name:28s} {statistics.median(r[0] for r in rows):7.2f}s {statistics.median(r[1] for r in rows):21.2f}s"
              f" {statistics.median(extra):+31.2f}s")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

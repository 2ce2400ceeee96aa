"""What a tracking store that is down costs the app, in seconds: the wall-clock figures the
tests do not assert (timings on a shared machine are not pass/fail; the tests count the
requests instead).

    LITELLM_LOCAL_MODEL_COST_MAP=True .venv-test/bin/python benchmarks/faults.py
    (or: benchmarks/overhead.py --faults)

In one interpreter (Synalinks imported once), against a port where nothing listens:

- the app's own MLflow code while tracing into that store: 5 calls of an
  ``@mlflow.trace`` function around a program whose module opens an ``mlflow.start_span``
  (MLflow asks synalinks-obs for its default experiment; one probe, not one per call);
- ``Writer`` (the exporter's) given 4 spans for that store, then drained at exit;
- a one-epoch ``fit()`` with a training ``Monitor`` on that store, against the same
  ``fit()`` without it (one probe, no run, training goes on);
- ``python -m synalinks_obs doctor`` on that store (``doctor.main``, ``--timeout 3``).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "support"), str(ROOT / "examples")]


def down_uri() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"  # nothing listens there


def timed(function):
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def apps_own_mlflow_code(synalinks, Question) -> float:
    import mlflow

    import synalinks_obs

    uri = down_uri()
    os.environ.update(MLFLOW_TRACKING_URI=uri, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
                      MLFLOW_HTTP_REQUEST_TIMEOUT="2")

    class WithUserSpan(synalinks.Module):
        async def call(self, inputs, training=False):
            with mlflow.start_span(name="user_span"):
                pass
            return inputs.clone()

        async def compute_output_spec(self, inputs, training=False):
            return inputs.clone()

    async def build():
        x = synalinks.Input(data_model=Question)
        return synalinks.Program(inputs=x, outputs=await WithUserSpan(name="u")(x), name="p")

    synalinks_obs.enable(tracking_uri=uri, experiment_name="down_store")
    try:
        program = asyncio.run(build())

        @mlflow.trace(name="handler")
        def handler(question):
            return asyncio.run(program(Question(question=question)))

        seconds, _ = timed(lambda: [handler(f"q{i}") for i in range(5)])
    finally:
        synalinks_obs.disable()
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
            os.environ.pop(name, None)
    return seconds


def writer_on_a_down_store() -> float:
    from synalinks_obs.export.wire import Wire
    from synalinks_obs.store.writer import Writer
    from synalinks_obs.tracing.records import Destination

    now = time.time_ns()
    wires = [
        Wire(4, f"tr-{4:032x}", i + 1, None if i == 0 else 1, f"Step:s{i}", now, now + 1000, "CHAIN",
             i + 1, None if i == 0 else 1, "Step", f"s{i}", "", False, 0.0, None, None, "{}", "{}",
             None, None, i == 0, False)
        for i in range(4)
    ]
    writer = Writer(max_spans=100)
    writer.add(Destination(down_uri(), "writer"), 4, wires)

    def pump_and_drain():
        writer.pump()
        writer.drain(time.monotonic() + 60)

    seconds, _ = timed(pump_and_drain)
    return seconds


def fit_with_a_monitor_on_a_down_store(synalinks, Question, base_url) -> tuple[float, float]:
    import numpy as np

    from synalinks_obs.callbacks import Monitor

    class Answer(synalinks.DataModel):
        answer: str

    lm = synalinks.LanguageModel(model="openai/gpt-4o-mini", api_base=base_url, api_key="sk-bench")
    x = np.array([Question(question=f"Question {i}?") for i in range(4)], dtype="object")
    y = np.array([Answer(answer="Example answer.") for _ in range(4)], dtype="object")

    async def fit(callbacks):
        inputs = synalinks.Input(data_model=Question)
        outputs = await synalinks.Generator(data_model=Answer, language_model=lm)(inputs)
        program = synalinks.Program(inputs=inputs, outputs=outputs, name="offline_program")
        program.compile(reward=synalinks.rewards.ExactMatch(in_mask=["answer"]),
                        optimizer=synalinks.optimizers.RandomFewShot())
        await program.fit(x=x, y=y, epochs=1, batch_size=2, callbacks=callbacks, verbose=0)

    asyncio.run(fit([]))  # warm-up: the first fit() of a process pays for imports
    without, _ = timed(lambda: asyncio.run(fit([])))
    with_monitor, _ = timed(lambda: asyncio.run(fit([Monitor(tracking_uri=down_uri())])))
    return without, with_monitor


def doctor_on_a_down_store() -> float:
    import contextlib
    import io

    from synalinks_obs.cli import doctor

    with contextlib.redirect_stdout(io.StringIO()):
        seconds, _ = timed(lambda: doctor.main(["--tracking-uri", down_uri(), "--timeout", "3"]))
    return seconds


def main() -> None:
    import tempfile

    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("SYNALINKS_HOME", tempfile.mkdtemp(prefix="synalinks-obs-faults-"))
    os.environ["SYNALINKS_OBS_LOG_LEVEL"] = "ERROR"  # the warnings these faults are expected to give
    import logging

    logging.getLogger("synalinks_obs").setLevel(logging.ERROR)
    import synalinks
    from _offline_lm import OfflineServer

    class Question(synalinks.DataModel):
        question: str

    rows = [("5 @mlflow.trace calls of the app while tracing into it",
             f"{apps_own_mlflow_code(synalinks, Question):.2f} s")]
    rows.append(("Writer: 4 spans, pump, then drain at exit", f"{writer_on_a_down_store():.2f} s"))
    with OfflineServer() as llm:
        without, with_monitor = fit_with_a_monitor_on_a_down_store(synalinks, Question, llm.base_url)
    rows.append(("fit(), 1 epoch: without a Monitor / with a Monitor on it",
                 f"{without:.2f} s / {with_monitor:.2f} s"))
    rows.append(("doctor --timeout 3", f"{doctor_on_a_down_store():.2f} s"))
    width = max(len(label) for label, _ in rows)
    print("a tracking store that is down (nothing listens on its port):")
    for label, figure in rows:
        print(f"  {label:<{width}}  {figure}")


if __name__ == "__main__":
    main()

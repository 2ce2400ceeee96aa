"""A traced Synalinks app, its launcher, ``doctor`` and ``traces``, run as subprocesses.

Import with ``tests/support`` on ``sys.path`` (``import traced_app``). ``APP`` is a small
QA program (Input -> Generator on the fake LLM, its input carrying an ``access_token``
field) that makes two calls and, with ``APP_TRAIN=1``, one ``fit()`` epoch (logged by
autolog into the experiment named after the program, ``auth_qa``); it prints ``DONE
<unix time>`` last, so a test can time the exit. With ``APP_DEBUG_LOGS=1`` every logger
of the process prints at DEBUG level.

``run(kind, tmp_path, env, *args)`` runs ``kind`` in a fresh interpreter with
``SYNALINKS_OBSERVABILITY=1`` and the MLflow tracking variables of the tests' own process
removed, then ``env`` added: ``"app"`` (the script itself), ``"launcher"`` (``python -m
synalinks_obs.run app.py``), ``"doctor"`` and ``"traces"`` (``python -m synalinks_obs ...
args``). Returns the ``CompletedProcess`` (text) with ``.seconds`` (wall time) and
``.exit_after_done`` (seconds between ``DONE`` and the process' end, app kinds only).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

APP = r'''
import asyncio, logging, os, sys, time
if os.environ.get("APP_DEBUG_LOGS"):
    logging.basicConfig(level=logging.DEBUG)
import numpy as np
import synalinks


class Question(synalinks.DataModel):
    question: str
    access_token: str = ""


class Answer(synalinks.DataModel):
    answer: str


async def main():
    lm = synalinks.LanguageModel(model="openai/gpt-4o-mini", api_base=os.environ["FAKE_LLM_URL"])
    inputs = synalinks.Input(data_model=Question)
    outputs = await synalinks.Generator(data_model=Answer, language_model=lm, name="gen")(inputs)
    program = synalinks.Program(inputs=inputs, outputs=outputs, name="auth_qa")
    token = os.environ.get("APP_ACCESS_TOKEN", "")
    for question in ("What is the capital of France?", "And of Italy?"):
        answer = await program(Question(question=question, access_token=token))
        assert answer.get("answer"), answer
    if os.environ.get("APP_TRAIN"):
        program.compile(reward=synalinks.rewards.ExactMatch(in_mask=["answer"]),
                        optimizer=synalinks.optimizers.RandomFewShot())
        x = np.array([Question(question=f"Question {i}?", access_token=token) for i in range(2)], dtype="object")
        y = np.array([Answer(answer="Example answer.") for _ in range(2)], dtype="object")
        await program.fit(x=x, y=y, epochs=1, batch_size=2, verbose=0)
    print("DONE", time.time(), flush=True)


asyncio.run(main())
'''

# Variables of the tests' own process that must not reach the app.
_DROPPED = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID")


def base_env(extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MLFLOW_TRACKING_") and k not in _DROPPED}
    env.update({"SYNALINKS_OBSERVABILITY": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"})
    env.update(extra)
    return env


def run(kind: str, tmp_path: Path, env: dict, *args: str, timeout: float = 600):
    script = tmp_path / "auth_app.py"
    if not script.exists():
        script.write_text(APP)
    env = base_env({"SYNALINKS_HOME": str(tmp_path / "synalinks-home"), **env})
    command = {
        "app": [sys.executable, str(script)],
        "launcher": [sys.executable, "-m", "synalinks_obs.run", str(script)],
        "doctor": [sys.executable, "-m", "synalinks_obs", "doctor", *args],
        "traces": [sys.executable, "-m", "synalinks_obs", "traces", *args],
    }[kind]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=tmp_path)
    ended = time.time()
    done.seconds = time.monotonic() - started
    done.exit_after_done = None
    for line in done.stdout.splitlines():
        if line.startswith("DONE "):
            done.exit_after_done = ended - float(line.split()[1])
    return done


def obs_lines(stderr: str) -> list[str]:
    """The lines synalinks-obs printed (not MLflow's, litellm's or Python's)."""
    return [line for line in stderr.splitlines() if "synalinks-obs" in line or "synalinks_obs" in line]

"""A Synalinks program served over HTTP by gunicorn: every worker is one app replica, and
all of them trace into the same MLflow server (no code of synalinks-obs in here).

    SYNALINKS_OBSERVABILITY=1 \\
    MLFLOW_TRACKING_URI=http://mlflow:5000 MLFLOW_TRACKING_USERNAME=app MLFLOW_TRACKING_PASSWORD=... \\
    gunicorn --workers 4 --preload --chdir examples/deploy replica_app:app

    curl -s localhost:8000/answer -d '{"question": "What is the capital of France?"}'
    -> {"answer": "...", "replica": 12345}

``--preload`` imports Synalinks (and turns tracing on) once in gunicorn's master; each
forked worker then writes its own spans through its own exporter. The language model is
made in each worker on its first request (an HTTP client must not cross a fork): the
offline one of the examples, or ``SYNALINKS_EXAMPLE_MODEL`` (see ``../_offline_lm.py``).
"""

import asyncio
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import synalinks  # noqa: E402
from _offline_lm import language_model  # noqa: E402


class Question(synalinks.DataModel):
    question: str = synalinks.Field(description="The user's question")


class Answer(synalinks.DataModel):
    answer: str = synalinks.Field(description="A short, correct answer")


_PROGRAMS: dict = {}  # process id -> this worker's program


async def _build():
    inputs = synalinks.Input(data_model=Question)
    outputs = await synalinks.Generator(
        data_model=Answer, language_model=language_model(), name="answer_generator"
    )(inputs)
    return synalinks.Program(inputs=inputs, outputs=outputs, name="replica_qa")


def _program():
    program = _PROGRAMS.get(os.getpid())
    if program is None:
        program = _PROGRAMS[os.getpid()] = asyncio.run(_build())
    return program


def _reply(start_response, status, payload):
    body = json.dumps(payload).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    """WSGI: ``GET /ping`` (ready), ``POST /answer`` with ``{"question": ...}``."""
    path = environ.get("PATH_INFO", "")
    if path == "/ping":
        return _reply(start_response, "200 OK", {"replica": os.getpid()})
    if path != "/answer" or environ.get("REQUEST_METHOD") != "POST":
        return _reply(start_response, "404 Not Found", {"error": "POST /answer"})
    length = int(environ.get("CONTENT_LENGTH") or 0)
    question = json.loads(environ["wsgi.input"].read(length) or b"{}").get("question", "")
    result = asyncio.run(_program()(Question(question=question)))
    return _reply(start_response, "200 OK", {"answer": result.get("answer"), "replica": os.getpid()})

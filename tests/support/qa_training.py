"""A question-answering program the training tests train, and the offline LM behind it.

The LM (`FakeLLM` with `answer_fields`) answers each question its own way: "Question 7?"
gets "Answer 7.". It answers the questions of a batch in reverse order: the call for a
question whose number leaves remainder 0 modulo 3 waits 0.3 s, remainder 1 waits 0.2 s,
remainder 2 waits 0.1 s, so the calls Synalinks runs concurrently for a batch of
consecutive questions finish in the opposite order they started. The expected answer
(`expected_of`) is that answer except for every third question, whose expected answer
the LM never gives: rewards are mixed, and a reward filed under the wrong trace shows.
The LM cannot answer `UNANSWERED` questions (HTTP 400): with ``retry=1`` the program
then returns nothing for them.

`build_program` / `compile_program` / `dataset` make the program (``Input`` -> one
``Generator``), compile it with ``ExactMatch`` on ``answer`` plus a per-example metric
(``answer_match``), and make its data.
"""

from __future__ import annotations

import json
import re
import time
import types

QUESTION = re.compile(r"Question (\d+)\?")
LATENCY_STEP = 0.1
REWARD = "exact_match"
UNANSWERED = {10}
METRIC = "answer_match"


def answer_of(number: int) -> str:
    return f"Answer {number}."


def expected_of(number: int) -> str:
    return "Something else." if number % 3 == 0 else answer_of(number)


def number_of(text: str) -> int | None:
    found = QUESTION.search(text or "")
    return int(found.group(1)) if found else None


def answer_fields(messages):
    """FakeLLM's ``fields``: the answer to the question of the last (user) message."""
    last = messages[-1].get("content") if messages else ""
    number = number_of(last if isinstance(last, str) else json.dumps(last))
    if number is None:
        return {}
    if number in UNANSWERED:
        raise ValueError(f"no answer to question {number}")
    time.sleep(LATENCY_STEP * (3 - number % 3))
    return {"answer": answer_of(number)}


def data_models():
    import synalinks

    class Question(synalinks.DataModel):
        question: str = synalinks.Field(description="The question to answer")

    class Answer(synalinks.DataModel):
        answer: str = synalinks.Field(description="The answer")

    return types.SimpleNamespace(synalinks=synalinks, Question=Question, Answer=Answer)


async def build_program(models, lm, name="qa_program"):
    synalinks = models.synalinks
    inputs = synalinks.Input(data_model=models.Question)
    outputs = await synalinks.Generator(
        data_model=models.Answer, language_model=lm, name="answerer"
    )(inputs)
    return synalinks.Program(inputs=inputs, outputs=outputs, name=name, description="Answers questions")


def compile_program(models, program, optimizer=None):
    synalinks = models.synalinks
    program.compile(
        reward=synalinks.rewards.ExactMatch(in_mask=["answer"]),
        optimizer=optimizer or synalinks.optimizers.RandomFewShot(),
        metrics=[synalinks.metrics.MeanMetricWrapper(
            synalinks.rewards.exact_match, name=METRIC, in_mask=["answer"]
        )],
    )


def dataset(models, numbers):
    import numpy as np

    x = np.array([models.Question(question=f"Question {n}?") for n in numbers], dtype="object")
    y = np.array([models.Answer(answer=expected_of(n)) for n in numbers], dtype="object")
    return x, y


def lm_for(models, server, **options):
    return models.synalinks.LanguageModel(
        model="openai/gpt-4o-mini", api_base=server.base_url, api_key="sk-test", **options
    )

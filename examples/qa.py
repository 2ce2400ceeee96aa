"""Question answering: Input -> Generator.

    python examples/qa.py ["your question"]

Runs offline out of the box (see _offline_lm.py); set SYNALINKS_EXAMPLE_MODEL (and the
provider's key) to ask a real model.
"""

import asyncio
import sys

import synalinks
from _offline_lm import language_model


class Question(synalinks.DataModel):
    question: str = synalinks.Field(description="The user's question")


class Answer(synalinks.DataModel):
    answer: str = synalinks.Field(description="A short, correct answer")


async def main(question):
    inputs = synalinks.Input(data_model=Question)
    outputs = await synalinks.Generator(
        data_model=Answer,
        language_model=language_model(),
        name="answer_generator",
        description="Answers the user's question",
    )(inputs)
    program = synalinks.Program(
        inputs=inputs,
        outputs=outputs,
        name="qa_program",
        description="A simple question answering program",
    )
    result = await program(Question(question=question))
    print(result.prettify_json())


if __name__ == "__main__":
    asyncio.run(main(" ".join(sys.argv[1:]) or "What is the capital of France?"))

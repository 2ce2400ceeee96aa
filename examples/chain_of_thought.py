"""Step-by-step answering: Input -> ChainOfThought (a thinking field, then the answer).

    python examples/chain_of_thought.py ["your question"]

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
    answer: str = synalinks.Field(description="The correct answer")


async def main(question):
    inputs = synalinks.Input(data_model=Question)
    outputs = await synalinks.ChainOfThought(
        data_model=Answer,
        language_model=language_model(),
        # Let the model write its reasoning into a `thinking` field: works with any
        # model, including those without native reasoning.
        reasoning_effort="none",
        name="step_by_step",
    )(inputs)
    program = synalinks.Program(
        inputs=inputs,
        outputs=outputs,
        name="chain_of_thought_program",
        description="Answers step by step",
    )
    result = await program(Question(question=question))
    print(result.prettify_json())


if __name__ == "__main__":
    asyncio.run(main(" ".join(sys.argv[1:]) or "What is the capital of France?"))

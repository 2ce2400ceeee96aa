"""An agent with a tool: Input -> FunctionCallingAgent(tools=[calculate]).

    python examples/agent.py ["your math question"]

Runs offline out of the box (see _offline_lm.py); set SYNALINKS_EXAMPLE_MODEL (and the
provider's key) to use a real model.
"""

import asyncio
import sys

import synalinks
from _offline_lm import language_model


class Query(synalinks.DataModel):
    query: str = synalinks.Field(description="The user's math question")


class FinalAnswer(synalinks.DataModel):
    answer: str = synalinks.Field(description="The answer, with the computed value")


@synalinks.saving.register_synalinks_serializable()
async def calculate(expression: str):
    """Calculate the result of a mathematical expression.

    Args:
        expression (str): The expression to calculate, such as '2 + 2'. It can contain
            numbers, the operators + - * /, parentheses and spaces.
    """
    if not all(char in "0123456789+-*/(). " for char in expression):
        return {"result": None, "log": "Error: invalid characters in expression"}
    try:
        result = round(float(eval(expression, {"__builtins__": None}, {})), 2)
    except Exception as exc:
        return {"result": None, "log": f"Error: {exc}"}
    return {"result": result, "log": "Successfully executed"}


async def main(query):
    inputs = synalinks.Input(data_model=Query)
    outputs = await synalinks.FunctionCallingAgent(
        data_model=FinalAnswer,
        tools=[synalinks.Tool(calculate)],
        language_model=language_model(),
        max_iterations=3,
        name="math_agent",
    )(inputs)
    agent = synalinks.Program(
        inputs=inputs,
        outputs=outputs,
        name="calculator_agent",
        description="A math agent that can use a calculator",
    )
    result = await agent(Query(query=query))
    print(result.prettify_json())


if __name__ == "__main__":
    asyncio.run(main(" ".join(sys.argv[1:]) or "How much is 152648 + 485?"))

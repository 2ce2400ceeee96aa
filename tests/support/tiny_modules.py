"""The smallest Synalinks program parts, for tests that build a program in their own process.

``question_and_step()`` returns a data model with one ``question`` field and a module
that returns its input (one span a call). Synalinks is imported when it is called, not
at collection (``tests/conftest.py`` sets the environment it reads first).
"""

from __future__ import annotations


def question_and_step():
    """``(Q, Step)``: a data model and a module that returns its input."""
    import synalinks

    class Q(synalinks.DataModel):
        question: str

    class Step(synalinks.Module):
        async def call(self, inputs, training=False):
            return inputs.clone()

        async def compute_output_spec(self, inputs, training=False):
            return inputs.clone()

    return Q, Step

"""A user's own small Synalinks app, as a script text the tests run with a real python.

``APP``: Input -> Generator ("first") -> Generator ("second") as the program
``two_generators``, called ``CALLS`` times (default 3) with a language model at
``$FAKE_LLM`` (the fake OpenAI-compatible server); it prints each answer, then
``last line at <time.time()>`` (for exit-time measurements). ``FAIL=1``: the language
model raises ``RuntimeError("the provider is down")`` (a traceback through program ->
Generator -> LM). ``ENABLE_URI=...``: the app calls ``synalinks_obs.enable(tracking_uri=...)``
itself. Nothing else in it mentions tracing.
"""

import textwrap

APP = textwrap.dedent(
    '''
    """A user's own app: Input -> Generator -> Generator over an LLM, CALLS calls."""
    import asyncio, os, sys, time

    import synalinks

    if os.environ.get("ENABLE_URI"):
        import synalinks_obs

        synalinks_obs.enable(tracking_uri=os.environ["ENABLE_URI"])


    class Question(synalinks.DataModel):
        question: str


    class Answer(synalinks.DataModel):
        answer: str


    class FailingLM(synalinks.LanguageModel):
        async def call(self, messages, **kwargs):
            raise RuntimeError("the provider is down")


    async def main():
        kind = FailingLM if os.environ.get("FAIL") else synalinks.LanguageModel
        lm = kind(model="openai/gpt-4o-mini", api_base=os.environ["FAKE_LLM"], api_key="sk-test", retry=1)
        x = synalinks.Input(data_model=Question)
        y = await synalinks.Generator(data_model=Answer, language_model=lm, name="first")(x)
        z = await synalinks.Generator(data_model=Answer, language_model=lm, name="second")(y)
        program = synalinks.Program(inputs=x, outputs=z, name="two_generators")
        for i in range(int(os.environ.get("CALLS", "3"))):
            result = await program(Question(question=f"q{i}"))
            print(result.get("answer"))


    asyncio.run(main())
    print("last line at", time.time(), flush=True)
    '''
)

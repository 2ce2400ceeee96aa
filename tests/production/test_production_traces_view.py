"""``python -m synalinks_obs traces``: recent traces as trees in the terminal.

Traces are recorded in process into a sqlite store (a QA program, an agent-like nested
custom module, a failing call), then the real command prints them; the tree, each span's
type, duration, cost, tokens, status and the exception of the failed call are asserted
on the printed text.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys

import pytest


@pytest.fixture
def recorded(sqlite_uri, lm):
    """Three traces in experiment 'view': qa (3 spans), a failure, a nested custom chain."""
    import synalinks

    import synalinks_obs

    class Question(synalinks.DataModel):
        question: str

    class Answer(synalinks.DataModel):
        answer: str

    class Exploding(synalinks.Module):
        async def call(self, inputs, training=False):
            raise ValueError("boom from a module\nsecond line is not shown")

        async def compute_output_spec(self, inputs, training=False):
            return inputs.clone()

    class Outer(synalinks.Module):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.inner = Exploding(name="exploding")

        async def call(self, inputs, training=False):
            return await self.inner(inputs)

        async def compute_output_spec(self, inputs, training=False):
            return inputs.clone()

    synalinks_obs.enable(tracking_uri=sqlite_uri, experiment_name="view")
    try:

        async def main():
            inputs = synalinks.Input(data_model=Question)
            outputs = await synalinks.Generator(data_model=Answer, language_model=lm, name="gen")(inputs)
            program = synalinks.Program(inputs=inputs, outputs=outputs, name="qa")
            await program(Question(question="What is the capital of France?"))
            with pytest.raises(ValueError):
                await Outer(name="outer")(Question(question="x"))

        asyncio.run(main())
        assert synalinks_obs.flush(60)
    finally:
        synalinks_obs.disable()
    return sqlite_uri


def test_traces_command_prints_trees(recorded, tmp_path):
    env = {**os.environ, "COLUMNS": "40"}  # piped output is never wrapped anyway
    result = subprocess.run(
        [sys.executable, "-m", "synalinks_obs", "traces", "--tracking-uri", recorded,
         "--experiment", "view", "--last", "5"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    lines = out.splitlines()
    assert lines[0] == f"2 traces of real (non-symbolic) calls in experiment 'view' at {recorded}"
    assert "\x1b[" not in out  # no colour codes when piped
    duration = r"\d+(\.\d+)? m?s"
    qa = [
        rf"^trace tr-[0-9a-f]{{32}}  \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d  {duration}  3 spans  \$0\.\d{{6}}  OK$",
        rf"^└── Functional:qa  CHAIN  {duration}  \$0\.\d{{6}}  OK$",
        rf"^    └── Generator:gen  LLM  {duration}  \$0\.\d{{6}}  OK$",
        rf"^        └── LanguageModel:language_model(_\d+)?  CHAT_MODEL  {duration}  \$0\.\d{{6}}  \d+\+\d+ tokens  OK$",
    ]
    failed = [
        rf"^trace tr-[0-9a-f]{{32}}  \S+ \S+  {duration}  2 spans  ERROR$",
        rf"^└── Outer:outer  CHAIN  {duration}  ERROR  ValueError: boom from a module$",
        rf"^    └── Exploding:exploding  CHAIN  {duration}  ERROR  ValueError: boom from a module$",
    ]
    blocks = out.split("\n\n")[1:]
    assert len(blocks) == 2, out
    for block, patterns in zip(blocks, (qa, failed), strict=True):
        block_lines = block.strip("\n").splitlines()
        assert len(block_lines) == len(patterns), block
        for line, pattern in zip(block_lines, patterns, strict=True):
            assert re.match(pattern, line), f"{line!r} !~ {pattern!r}\n{out}"
    assert "second line" not in out


def test_traces_last_and_missing_experiment(recorded, capsys):
    from synalinks_obs.cli import traces as traces_view

    assert traces_view.main(["--tracking-uri", recorded, "--experiment-name", "view", "--last", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("1 trace of real (non-symbolic) calls")
    assert "Outer:outer" in out and "Functional:qa" not in out  # the most recent one
    assert traces_view.main(["--tracking-uri", recorded, "--experiment", "nope"]) == 1
    assert "No experiment 'nope'" in capsys.readouterr().err
    # --symbolic also shows the program-building trace of the Generator, read from the
    # experiment's "-build" companion where it was written.
    assert traces_view.main(["--tracking-uri", recorded, "--experiment", "view", "--symbolic"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"3 traces in experiments 'view' and 'view-build' at {recorded}"), out
    assert re.search(r"^└── Generator:gen  LLM  .*  symbolic  OK$", out, re.MULTILINE), out

"""Secrets never land in the store: real Synalinks programs, real sqlite stores.

Recognisable secrets go into a program's inputs (under secret keys, in free text, as
credential patterns), into an exception message, into training data; then everything
MLflow holds (each trace as a whole: spans, attributes, events, trace info and previews;
run params, tags and artifacts) is read back through MLflow's client and searched.
The rules themselves are unit-tested in tests/unit/test_redaction.py.
"""

from __future__ import annotations

import asyncio
import json

import pytest

FLUSH = 60.0
TOKEN = "tok-Zq8Lw3Xv6Np2"
KEYS = ["key-one-Aa11Bb22", "key-two-Cc33Dd44"]
COOKIE = "ck-Ee55Ff66Gg77"
PASSWD = "pw-Hh88Ii99Jj00"
PRIVATE = "pk-Kk11Ll22Mm33"
CREDENTIAL = "cr-Nn44Oo55Pp66"
OPENAI = "sk-proj-Qq77Rr88Ss99Tt00Uu11"
BEARER = "bt-Vv22Ww33Xx44Yy55"
SECRETS = [TOKEN, *KEYS, COOKIE, PASSWD, PRIVATE, CREDENTIAL, OPENAI, BEARER]


def leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def first_arg(value):
    """A span's first argument, whatever the payload's envelope (``{"data": [...]}``)."""
    if isinstance(value, dict) and "data" in value:
        value = value["data"]
    return value[0] if isinstance(value, list) else value


def output(value):
    return value["data"] if isinstance(value, dict) and "data" in value else value


@pytest.fixture
def obs(sqlite_uri, request, monkeypatch):
    import synalinks_obs

    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_uri)

    class Obs:
        uri = sqlite_uri
        experiment = f"privacy_{request.node.name}"[:100]

        def enable(self, **options):
            synalinks_obs.enable(tracking_uri=self.uri, experiment_name=self.experiment, **options)

        def traces(self):
            assert synalinks_obs.flush(FLUSH)
            import mlflow

            client = mlflow.MlflowClient(self.uri)
            experiment = client.get_experiment_by_name(self.experiment)
            found = client.search_traces(locations=[experiment.experiment_id], max_results=500)
            return [t for t in found
                    if not any(s.attributes.get("synalinks.is_symbolic") for s in t.data.spans)]

    yield Obs()
    synalinks_obs.flush(FLUSH)
    synalinks_obs.disable()


def build(lm):
    """A program whose call carries secrets everywhere: a Generator (its inputs rendered
    into the LM prompt) and a module echoing the token under an ordinary key."""
    import synalinks

    class Request(synalinks.DataModel):
        question: str
        notes: str = ""
        access_token: str = ""
        api_keys: list[str] = []
        credentials: dict = {}
        cookie: str = ""
        passwd: str = ""
        private_key: str = ""

    class Answer(synalinks.DataModel):
        answer: str

    class Note(synalinks.DataModel):
        text: str

    class Leaky(synalinks.Module):
        async def call(self, inputs, training=False):
            return Note(text=f"used {inputs.get('access_token')} and {(inputs.get('api_keys') or ['-'])[0]}")

        async def compute_output_spec(self, inputs, training=False):
            return Note.to_symbolic_data_model()

    class Echo(synalinks.Module):
        """Its own inputs hold no secret key: only the trace knows the token."""

        async def call(self, inputs, training=False):
            return inputs.clone()

        async def compute_output_spec(self, inputs, training=False):
            return inputs.clone()

    class Failing(synalinks.Module):
        async def call(self, inputs, training=False):
            raise ValueError(f"upstream refused {inputs.get('access_token')} and {OPENAI}")

        async def compute_output_spec(self, inputs, training=False):
            return Note.to_symbolic_data_model()

    class Assistant(synalinks.Module):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.leaky = Leaky(name="leaky")
            self.echo = Echo(name="echo")
            self.first = Echo(name="first")
            self.generator = synalinks.Generator(data_model=Answer, language_model=lm, name="gen")

        async def call(self, inputs, training=False):
            # The first record exported: only its ancestors' inputs hold the token's key.
            await self.first(Note(text=f"first {inputs.get('access_token')}"))
            await self.echo(await self.leaky(inputs))
            return await self.generator(inputs)

        async def compute_output_spec(self, inputs, training=False):
            return Answer.to_symbolic_data_model()

    request = Request(
        question="What is the capital of France?",
        notes=f"my key is {OPENAI}, header Authorization: Bearer {BEARER}",
        access_token=TOKEN, api_keys=KEYS, credentials={"user": "bob", "value": CREDENTIAL},
        cookie=COOKIE, passwd=PASSWD, private_key=PRIVATE,
    )
    return Assistant(name="assistant"), Failing(name="failing"), request


def test_no_secret_lands_in_any_span_event_or_trace_info(obs, lm):
    obs.enable()
    assistant, failing, request = build(lm)
    answer = asyncio.run(assistant(request))
    assert answer.get("answer")
    with pytest.raises(ValueError) as raised:
        asyncio.run(failing(request))
    assert TOKEN in str(raised.value)  # the app's own exception is untouched

    traces = obs.traces()
    assert len(traces) == 2
    for trace in traces:
        text = json.dumps(trace.to_dict())
        assert not leaks(text), (leaks(text), text[:2000])
    spans = {s.name: s for t in traces for s in t.data.spans}
    # The LM call's prompt carried the secrets (rendered from the Generator's inputs):
    # stored, masked, not missing.
    lm_span = next(s for s in spans.values() if s.span_type == "CHAT_MODEL")
    prompt = json.dumps(lm_span.inputs["messages"])
    assert "capital of France" in prompt and "[REDACTED]" in prompt
    # A value redacted under its key is masked under any other key of the trace.
    assert output(spans["Leaky:leaky"].outputs) == {"text": "used [REDACTED] and [REDACTED]"}
    assert first_arg(spans["Echo:first"].inputs) == {"text": "first [REDACTED]"}
    assert output(spans["Echo:first"].outputs) == {"text": "first [REDACTED]"}
    echo = spans["Echo:echo"]
    assert first_arg(echo.inputs) == {"text": "used [REDACTED] and [REDACTED]"}
    assert output(echo.outputs) == {"text": "used [REDACTED] and [REDACTED]"}
    gen_inputs = first_arg(spans["Generator:gen"].inputs)
    assert gen_inputs["access_token"] == gen_inputs["api_keys"] == gen_inputs["credentials"] == "[REDACTED]"
    assert gen_inputs["notes"] == "my key is [REDACTED], header Authorization: [REDACTED]"
    # The exception event: message and stack trace masked.
    failed = spans["Failing:failing"]
    event = next(e for e in failed.events if e.name == "exception")
    assert event.attributes["exception.message"] == "upstream refused [REDACTED] and [REDACTED]"
    assert "ValueError" in event.attributes["exception.stacktrace"]
    assert failed.status.description and not leaks(failed.status.description)


def test_user_redact_function_and_its_failure(obs, lm, capfd):
    seen = []

    def mask(value):
        seen.append(value)
        if "boom" in json.dumps(value):
            raise RuntimeError("cannot mask boom")
        return json.loads(json.dumps(value).replace("France", "<country>"))

    obs.enable(redact=mask)
    assistant, _, request = build(lm)
    asyncio.run(assistant(request))
    asyncio.run(assistant(request.__class__(question="boom?")))
    traces = obs.traces()
    assert seen, "the redact function was never called"
    assert any("France" in json.dumps(v) for v in seen)  # it saw the values as they were
    by_question = {}
    for trace in traces:
        root = next(s for s in trace.data.spans if s.parent_id is None)
        by_question[json.dumps(root.inputs)] = root
    stored = "\n".join(by_question)
    assert "<country>" in stored and "France" not in stored
    dropped = [r for key, r in by_question.items() if "DROPPED" in key]
    assert len(dropped) == 1 and dropped[0].inputs == "[DROPPED: the redact function failed]"
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "redact function" in line]
    assert len(lines) == 1, err
    assert "raised RuntimeError" in lines[0] and "boom" not in lines[0]


def test_redactor_from_the_environment(obs, lm, tmp_path, monkeypatch):
    (tmp_path / "company_masks.py").write_text(
        "def mask(value):\n"
        "    import json\n"
        "    return json.loads(json.dumps(value).replace('capital', 'C*****'))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("SYNALINKS_OBS_REDACTOR", "company_masks:mask")
    obs.enable()
    assistant, _, request = build(lm)
    asyncio.run(assistant(request))
    text = json.dumps([t.to_dict() for t in obs.traces()])
    assert "C*****" in text and "capital" not in text


def test_training_run_params_tags_and_state_tree(obs, lm, tmp_path):
    """fit() with secrets in the training data and in a tag: the run's params, tags,
    artifacts (state tree, epoch states and diffs, the pyfunc model, dataset previews),
    feedback and prompts are masked; log_training_examples=False leaves examples out."""
    import mlflow
    import numpy as np
    import synalinks

    from synalinks_obs.callbacks import Monitor

    class Q(synalinks.DataModel):
        question: str
        access_token: str

    class A(synalinks.DataModel):
        answer: str

    async def train(monitor):
        inputs = synalinks.Input(data_model=Q)
        outputs = await synalinks.Generator(data_model=A, language_model=lm, name="gen")(inputs)
        program = synalinks.Program(inputs=inputs, outputs=outputs, name="private_qa")
        program.compile(reward=synalinks.rewards.ExactMatch(in_mask=["answer"]),
                        optimizer=synalinks.optimizers.RandomFewShot())
        x = np.array([Q(question=f"q{i}", access_token=TOKEN) for i in range(2)], dtype="object")
        y = np.array([A(answer="Example answer.") for _ in range(2)], dtype="object")
        await program.fit(x=x, y=y, epochs=1, batch_size=2, callbacks=[monitor], verbose=0)
        return monitor.run_id

    obs.enable()
    client = mlflow.MlflowClient(obs.uri)
    states = {}
    for keep in (True, False):
        monitor = Monitor(tracking_uri=obs.uri, experiment_name="private_training",
                          tags={"note": f"Authorization: Bearer {BEARER}", "api_key": OPENAI},
                          log_training_examples=keep)
        run_id = asyncio.run(train(monitor))
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["api_key"] == "[REDACTED]"
        assert run.data.tags["note"] == "Authorization: [REDACTED]"
        assert not leaks(json.dumps(run.to_dictionary()))
        folder = tmp_path / f"artifacts-{keep}"
        mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=str(folder), tracking_uri=obs.uri)
        for path in folder.rglob("*"):
            if path.is_file():
                assert not leaks(path.read_text(errors="replace")), path
        states[keep] = json.loads((folder / "model" / "state_tree.json").read_text())
        traces = mlflow.MlflowClient(obs.uri).search_traces(
            locations=[run.info.experiment_id], run_id=run_id)
        assert traces and not leaks(json.dumps([t.to_dict() for t in traces]))
        # The learned prompts render the few-shot examples: masked in the Prompt Registry,
        # and not registered at all when the examples are to be left out.
        listed = [ref for ref in run.data.tags.get("synalinks.prompts", "").split(",") if ref]
        if keep:
            assert listed, run.data.tags
        else:
            assert listed == [], listed
        for ref in listed:
            name, version = ref.rsplit("/", 1)
            template = client.load_prompt(f"prompts:/{name}/{version}").template
            assert not leaks(json.dumps(template)), (ref, template)

    def examples(tree):
        found = []
        if isinstance(tree, dict):
            for key, value in tree.items():
                if key == "examples" and isinstance(value, list):
                    found.extend(value)
                found.extend(examples(value))
        elif isinstance(tree, list):
            for item in tree:
                found.extend(examples(item))
        return found

    kept = examples(states[True])
    assert kept and all(e["inputs"]["access_token"] == "[REDACTED]" for e in kept)
    assert examples(states[False]) == []

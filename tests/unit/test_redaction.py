"""What is a secret and how it is masked (``synalinks_obs.redaction``, ``synalinks_obs.masking``), in isolation.

The rules: key fragments matched as whole words (singular or plural, any case, any
depth, in ``(name, value)`` pairs and ``{"name": ..., "value": ...}`` entries, and as
``key=value`` in text); values seen under a secret key masked wherever else they appear;
credential patterns whatever the key; the user's function last, an error in it dropping
the value. What lands in a real store is tested in tests/integration/test_privacy.py.
"""

from __future__ import annotations

import json

import pytest

from synalinks_obs import masking, redaction
from synalinks_obs.export.payloads import materialize, to_json
from synalinks_obs.masking import DROPPED, Policy
from synalinks_obs.redaction import REDACTED, Redactor
from synalinks_obs.settings import DEFAULT_REDACT_KEYS, load_settings

DEFAULT = Redactor(DEFAULT_REDACT_KEYS)
POLICY = Policy()


@pytest.mark.parametrize(
    "key",
    # the keys the issue found stored in clear, then the usual suspects
    ["api_keys", "access_token", "private_key", "credentials", "cookie", "passwd",
     "Set-Cookie", "privateKey", "AWS_SECRET_ACCESS_KEY", "aws_access_key_id",
     "X-Api-Keys", "clientCredentials", "basic_auth", "X-Auth", "Proxy-Authorization",
     "passphrase", "session_cookies", "refreshTokens"],
)
def test_key_fragments_match_whole_words_singular_or_plural(key):
    assert DEFAULT.is_secret(key, "value")
    assert materialize({key: "value", "keep": "x"}, DEFAULT) == {key: REDACTED, "keep": "x"}


def test_values_without_text_are_kept_under_any_key():
    """Counts are not secrets: max_tokens, total_tokens, an OpenAI usage block."""
    value = {"max_tokens": 256, "completion_tokens_details": {"reasoning_tokens": 0},
             "token": None, "cookies": [], "password": "hunter22"}
    assert materialize(value, DEFAULT) == {
        "max_tokens": 256, "completion_tokens_details": {"reasoning_tokens": 0},
        "token": None, "cookies": [], "password": REDACTED,
    }


def test_secrets_at_any_depth_in_pairs_and_header_entries():
    value = {"request": {"headers": [("Authorization", "Bearer abc"), ("Accept", "json")],
                         "form": [{"name": "api_key", "value": "v-123"}, {"name": "q", "value": "hi"}],
                         "deep": [[[{"x": {"client_secret": "s-1"}}]]]}}
    assert materialize(value, DEFAULT) == {"request": {
        "headers": [["Authorization", REDACTED], ["Accept", "json"]],
        "form": [{"name": "api_key", "value": REDACTED}, {"name": "q", "value": "hi"}],
        "deep": [[[{"x": {"client_secret": REDACTED}}]]],
    }}


@pytest.mark.parametrize(
    "text, masked",
    [
        ("GET https://api.example.com/v1?api_key=abc123xyz&page=2",
         "GET https://api.example.com/v1?api_key=[REDACTED]&page=2"),
        ('Input: {"question": "why?", "access_token": "tok ABC 123"}',
         'Input: {"question": "why?", "access_token": "[REDACTED]"}'),
        ('{\\"access_token\\": \\"tok-1\\"}', '{\\"access_token\\": \\"[REDACTED]\\"}'),
        ("{'password': 'hunter22', 'max_tokens': 256}", "{'password': '[REDACTED]', 'max_tokens': 256}"),
        ("Authorization: Bearer abcdefgh12345", "Authorization: [REDACTED]"),
        ("using key sk-proj-AbCdEfGhIjKlMnOpQr12 today", "using key [REDACTED] today"),
        ("curl -H 'X: Bearer zyxwvuts98765'", "curl -H 'X: Bearer [REDACTED]'"),
        ("db at postgresql://mlflow:pg-pass-9@db:5432/x", "db at postgresql://[REDACTED]@db:5432/x"),
        ("max_tokens=256 and tokens: 12", "max_tokens=256 and tokens: 12"),
        ("nothing secret here", "nothing secret here"),
    ],
)
def test_secrets_in_text_keys_and_default_patterns(text, masked):
    assert POLICY.text(text) == masked


@pytest.mark.parametrize(
    "secret",
    ["eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
     "AKIAABCDEFGHIJKLMNOP", "ghp_" + "a1" * 18, "xoxb-1234567890-abcdef", "AIza" + "B" * 35,
     "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----"],
)
def test_credential_patterns_whatever_the_key(secret):
    assert secret not in POLICY.text(f"the value is {secret} here")
    assert REDACTED in POLICY.text(f"the value is {secret} here")


def test_patterns_are_configurable_and_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("SYNALINKS_OBS_REDACT_PATTERNS", '["default", "acct-[0-9]{6}"]')
    settings = load_settings()
    policy = masking.policy_for(settings)
    assert policy.text("acct-123456 and sk-abcdefghijklmnopqrstu") == "[REDACTED] and [REDACTED]"
    off = masking.policy_for(load_settings(redact_patterns=[]))
    assert off.text("sk-abcdefghijklmnopqrstu") == "sk-abcdefghijklmnopqrstu"


def test_a_bad_pattern_is_one_line_and_the_defaults_are_kept(monkeypatch):
    lines = []
    monkeypatch.setenv("SYNALINKS_OBS_REDACT_PATTERNS", '["(unclosed"]')
    settings = load_settings(report=lines.append)
    assert settings.redact_patterns == list(redaction.DEFAULT_PATTERNS)
    assert len(lines) == 1 and "SYNALINKS_OBS_REDACT_PATTERNS" in lines[0]
    assert "not a regular expression" in lines[0] and "using the default" in lines[0]
    with pytest.raises(ValueError, match="redact_patterns"):
        load_settings(redact_patterns=["(x"])


def test_a_value_seen_under_a_secret_key_is_masked_everywhere_else():
    masker = POLICY.masker(known={"tok-ABCDEF-123456"})
    assert masker.text("prompt says tok-ABCDEF-123456.") == "prompt says [REDACTED]."
    # found while masking: the rest of the same payload is masked too
    fresh = POLICY.masker()
    payload = {"echo": "token tok-XYZ-987654 again", "creds": {"access_token": "tok-XYZ-987654"}}
    assert json.loads(to_json(payload, 0, fresh)) == {
        "echo": "token [REDACTED] again", "creds": {"access_token": REDACTED},
    }
    assert fresh.found == {"tok-XYZ-987654"}
    # its JSON-escaped form too (a value with quotes rendered into a JSON prompt)
    quoted = POLICY.masker(known={'pa"ss\\word'})
    assert quoted.text('{"x": "pa\\"ss\\\\word"}') == '{"x": "[REDACTED]"}'


def test_environment_secrets_are_known_everywhere(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "env-pass-4242")
    monkeypatch.setenv("MAX_TOKENS", "4096")
    policy = Policy()
    assert policy.text("error with env-pass-4242 in it") == "error with [REDACTED] in it"
    assert "4096" in policy.text("4096")
    assert redaction.scrub("http://alice:pw-1234@host:5000 env-pass-4242") == \
        "http://[REDACTED]@host:5000 [REDACTED]"


def test_user_function_sees_every_stored_value_and_its_errors_drop_it():
    seen, said = [], []

    def mask(value):
        seen.append(value)
        if value == "boom":
            raise ValueError("the value boom leaks in this message")
        return value.upper() if isinstance(value, str) else value

    policy = Policy(user=masking.user_function(mask, said.append))
    assert policy.param("note", "hello") == "HELLO"
    assert json.loads(to_json({"a": "b"}, 0, policy)) == {"a": "b"}
    assert seen[-1] == {"a": "b"}
    assert policy.param("note", "boom") == DROPPED
    assert policy.param("note", "boom") == DROPPED
    assert len(said) == 1 and "ValueError" in said[0] and "boom" not in said[0]


def test_user_function_by_import_path(tmp_path, monkeypatch):
    (tmp_path / "my_masks.py").write_text("def mask(v):\n    return 'masked' if isinstance(v, str) else v\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    said = []
    ok = Policy(user=masking.user_function("my_masks:mask", said.append))
    assert ok.param("x", "secret stuff") == "masked" and not said
    broken = Policy(user=masking.user_function("my_masks:missing", said.append))
    assert broken.param("x", "anything") == DROPPED
    assert len(said) == 1 and "SYNALINKS_OBS_REDACTOR='my_masks:missing'" in said[0]
    monkeypatch.setenv("SYNALINKS_OBS_REDACTOR", "my_masks:mask")
    assert load_settings().redact == "my_masks:mask"


def test_custom_key_fragments():
    custom = Redactor(["ssn", "pin_code"])
    assert materialize({"ssn": "1", "pinCodes": "2", "api_key": "3"}, custom) == {
        "ssn": REDACTED, "pinCodes": REDACTED, "api_key": "3",
    }


def test_state_tree_examples_masked_or_left_out():
    from synalinks_obs.training import privacy

    tree = {"trainable_variables": {"gen": {"state": {
        "instructions": "answer",
        "examples": [{"inputs": {"question": "q", "access_token": "tok-1"}, "outputs": {"a": "x"}}],
        "candidates": [{"examples": [{"inputs": {"api_keys": ["k1"]}}], "reward": 1.0}],
    }}}}
    kept = privacy.state_tree(POLICY, tree, keep_examples=True)
    state = kept["trainable_variables"]["gen"]["state"]
    assert state["examples"][0]["inputs"] == {"question": "q", "access_token": REDACTED}
    assert state["candidates"][0]["examples"][0]["inputs"] == {"api_keys": REDACTED}
    left_out = privacy.state_tree(POLICY, tree, keep_examples=False)["trainable_variables"]["gen"]["state"]
    assert left_out["examples"] == [] and left_out["candidates"][0]["examples"] == []
    assert left_out["instructions"] == "answer" and left_out["candidates"][0]["reward"] == 1.0


def test_run_params_and_tags():
    from synalinks_obs.training import privacy

    assert privacy.params(POLICY, {"api_key": "k", "epochs": 3, "note": "Bearer abcdefgh1234"}) == {
        "api_key": REDACTED, "epochs": "3", "note": "Bearer [REDACTED]",
    }


def _record(trace, parent=None, inputs=None, outputs=None, error=None, usage=None, span_type="CHAIN"):
    from synalinks_obs.tracing.records import CallRecord

    record = CallRecord(trace, parent)
    record.span_id, record.parent_span_id = 1, None
    record.call_id = 7
    record.names = ("M", "m", "", None)
    record.span_type, record.symbolic = span_type, False
    record.start_ns, record.end_ns = 1, 2
    record.inputs, record.kwargs, record.outputs = inputs, None, outputs
    record.error, record.usage = error, usage
    return record


def test_the_wire_masks_errors_lm_error_text_and_the_trace_remembers():
    """export.wire's hook: the exception's message and stack, an LM's error text, LM
    messages; a value seen under a key in an ancestor's inputs or an earlier record."""
    from synalinks_obs.export.wire import record_to_wire
    from synalinks_obs.settings import load_settings
    from synalinks_obs.tracing.records import Destination, TraceRecord

    settings = load_settings()
    trace = TraceRecord(1, Destination(None, "x"), True, None)
    root = _record(trace, inputs=[{"question": "q", "access_token": "tok-ROOT-123456"}])
    try:
        raise ValueError("refused tok-ROOT-123456 and sk-proj-Ab12Cd34Ef56Gh78Ij90")
    except ValueError as exc:
        failed = _record(trace, parent=root, inputs=["x"], error=exc)
    wire = record_to_wire(failed, settings)
    assert wire.error[1] == "refused [REDACTED] and [REDACTED]"
    assert "tok-ROOT" not in wire.error[2] and "sk-proj" not in wire.error[2] and "ValueError" in wire.error[2]
    lm = _record(trace, parent=root, span_type="CHAT_MODEL",
                 inputs=[{"messages": [{"role": "user", "content": "use tok-ROOT-123456"}]}],
                 usage={"error": "401: key sk-proj-Zz98Yy76Xx54Ww32Vv10 with tok-ROOT-123456"})
    wire = record_to_wire(lm, settings)
    assert wire.lm_error == "401: key [REDACTED] with [REDACTED]"
    assert json.loads(wire.inputs)["messages"] == [{"role": "user", "content": "use [REDACTED]"}]
    # Seen once in the trace (an output under a secret key), masked in later records.
    tool = _record(trace, inputs=["q"], outputs={"session_token": "sess-LATER-987654"})
    record_to_wire(tool, settings)
    later = _record(trace, inputs=["the session is sess-LATER-987654"])
    stored = record_to_wire(later, settings).inputs
    assert "the session is [REDACTED]" in stored and "sess-LATER" not in stored

"""What a training run stores, masked like a span: params, tags, the state tree.

The same ``masking.Policy`` as the traces (the settings of tracing when it is on, else
the environment's): a param or tag whose key names a secret is stored as ``[REDACTED]``,
every other value has its secret ``key=value`` pairs, credential patterns and secret
environment values masked, then goes through the user's redact function.

``model/state_tree.json`` holds the few-shot examples an optimizer picked from the
training data (``examples``, ``predictions``, ``current_predictions`` and the candidates'
``examples``): masked the same way, or left out (``log_training_examples=False``; the
restored program then has its instructions but no examples). The same masked state goes
everywhere a run stores the program's state (``stored_state``: the state tree, each
epoch's state and diff, the pyfunc model's program); a learned prompt renders those
examples, so its text is masked with the secret values found in the state
(``prompt_masker``), and with ``log_training_examples=False`` no prompt is registered.
"""

from __future__ import annotations

from synalinks_obs.masking import Policy, policy_for
from synalinks_obs.runtime import RUNTIME

# Fields of Synalinks' trainable variables that hold examples taken from training data.
EXAMPLE_FIELDS = ("examples", "predictions", "current_predictions")


def current_settings():
    """The settings of tracing when it is on, else the environment's."""
    tracer = RUNTIME.tracer
    if tracer is not None:
        return tracer.settings
    if RUNTIME.settings is not None:
        return RUNTIME.settings
    from synalinks_obs.settings import load_settings

    return load_settings()


def current_policy() -> Policy:
    return policy_for(current_settings())


def params(policy: Policy, values: dict) -> dict:
    """Run params or tags ``{key: str}``, masked."""
    return {str(key): policy.param(str(key), str(value)) for key, value in values.items()}


def text(policy: Policy, value: str) -> str:
    return policy.param("", value)


def without_examples(tree, _depth: int = 0):
    """A copy of a state tree with the examples taken from training data emptied."""
    if _depth > 50:
        return tree
    if isinstance(tree, dict):
        return {
            key: [] if key in EXAMPLE_FIELDS and isinstance(value, list)
            else without_examples(value, _depth + 1)
            for key, value in tree.items()
        }
    if isinstance(tree, list):
        return [without_examples(item, _depth + 1) for item in tree]
    return tree


def state_tree(policy: Policy, tree, keep_examples: bool):
    """The state tree as stored: examples kept (masked) or left out."""
    if not keep_examples:
        tree = without_examples(tree)
    return policy.value(tree)


def keep_examples(flag=None) -> bool:
    """A Monitor's ``log_training_examples`` (None: the setting)."""
    return current_settings().log_training_examples if flag is None else bool(flag)


def stored_state(policy: Policy, program, keep=None) -> dict:
    """The program's state as a run stores it, wherever it goes (masked; examples kept
    or left out)."""
    from synalinks_obs.training.state import program_state

    return state_tree(policy, program_state(program), keep_examples(keep))


def prompt_masker(policy: Policy, program):
    """``mask(text)`` for a prompt rendered from ``program``'s current state: the secret
    values under secret keys of that state are masked wherever they appear in it."""
    from synalinks_obs.training.state import program_state

    masker = policy.masker()
    masker.plain(program_state(program))  # collects the values found under secret keys

    def mask(text: str) -> str:
        masked = policy.finish(masker.text(text))
        return masked if isinstance(masked, str) else str(masked)

    return mask


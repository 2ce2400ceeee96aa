"""What the optimizer changed between two states, as a person reads it (state_diff, epochs).

Real Synalinks state trees: a Generator's trainable state (``synalinks.Instructions``)
before and after an optimizer-like change; the bookkeeping Synalinks' optimizers keep
(predictions, candidates, counters) never counts as a change.
"""

import copy

import pytest


@pytest.fixture
def tree():
    import synalinks

    state = synalinks.Instructions(
        instructions="Answer briefly.",
        examples=[{"inputs": {"q": "1?"}, "outputs": {"a": "1."}, "reward": 1.0}],
    ).get_json()
    return {"trainable_variables": {"program": {"answerer": {"state_answerer": state}}},
            "non_trainable_variables": {}}


def _variable(tree):
    return tree["trainable_variables"]["program"]["answerer"]["state_answerer"]


def test_bookkeeping_is_not_learned(tree):
    from synalinks_obs.training.state_diff import diff, learned

    after = copy.deepcopy(tree)
    _variable(after).update(
        predictions=[{"inputs": {"q": "2?"}, "outputs": {"a": "2."}, "reward": 0.0}],
        nb_visit=3, cumulative_reward=2.0, candidates=[{"instructions": "x"}],
    )
    _variable(after)["examples"][0]["reward"] = 0.5  # a re-scored example is the same example
    assert learned(tree) == {
        "program/answerer/state_answerer": {
            "examples": _variable(tree)["examples"], "instructions": "Answer briefly.",
        }
    }
    assert diff(learned(tree), learned(after)) == []


def test_instructions_rewritten_and_examples_added_and_removed(tree):
    from synalinks_obs.training.state_diff import diff, learned, render

    after = copy.deepcopy(tree)
    _variable(after)["instructions"] = "Answer with one word.\nNo punctuation."
    _variable(after)["examples"] = [{"inputs": {"q": "3?"}, "outputs": {"a": "3."}, "reward": 1.0}]
    changes = diff(learned(tree), learned(after))
    assert [(c["module"], c["field"], c["kind"]) for c in changes] == [
        ("program/answerer", "examples", "examples"),
        ("program/answerer", "instructions", "rewritten"),
    ]
    assert changes[0]["added"] == _variable(after)["examples"]
    assert changes[0]["removed"] == _variable(tree)["examples"]
    text = render(2, "epoch 0", changes, {"val_reward": 0.75})
    assert text.splitlines()[:5] == [
        "# Epoch 2: what the optimizer changed (since epoch 0)", "", "val_reward = 0.75", "",
        "## program/answerer",
    ]
    assert "- `state_answerer.examples`: 1 added, 1 removed" in text
    assert '  - added: {"q": "3?"} -> {"a": "3."} (reward 1)' in text
    assert "    > Answer briefly." in text
    assert "    > Answer with one word.\n    > No punctuation." in text


def test_the_epoch_log_stores_changed_epochs_and_follows_the_best(tree):
    from synalinks_obs.training.epochs import EpochLog

    log = EpochLog(tree)
    same = copy.deepcopy(tree)
    files, improved = log.epoch_ends(0, {"reward": 0.4, "val_reward": 0.5}, lambda: same)
    assert files is None and improved and log.best == (0, "val_reward", 0.5)
    changed = copy.deepcopy(tree)
    _variable(changed)["instructions"] = "New."
    log.validation_begins(changed)
    log.validation_begins(copy.deepcopy(tree))  # a second validation in the epoch: the first counts
    files, improved = log.epoch_ends(1, {"val_reward": 0.5}, lambda: pytest.fail("validated state used"))
    assert files.epoch == 1 and files.state is changed and not improved  # a tie keeps epoch 0
    assert files.diff["since"] == "the start of training"
    files, improved = log.epoch_ends(2, {"val_reward": 0.9}, lambda: changed)
    assert files is None and improved and log.best == (2, "val_reward", 0.9)
    files, _ = log.epoch_ends(3, {"reward": 1.0}, lambda: tree)  # back to the start: a change
    assert files.diff["since"] == "epoch 1" and files.diff["scores"] == {"reward": 1.0}

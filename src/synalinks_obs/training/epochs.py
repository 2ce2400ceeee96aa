"""What the optimizer changed, epoch by epoch, and which epoch was best.

``EpochLog`` follows one ``fit()``: the state before training, then for each epoch the
state that epoch's validation scored (taken when validation begins, since the optimizer
may swap candidates right after it; the state at the end of the epoch when there is no
validation). When what training learned changed since the last stored epoch, the epoch
gives ``EpochFiles``: ``state_tree.json`` (restorable with ``restore_state(epoch=n)``),
``diff.md`` (instructions rewritten, examples added or removed, per module, with the
epoch's validation reward beside it) and ``diff.json`` (the same, as data), which the
Monitor stores under ``model/epochs/<n>/``. The best epoch (highest ``val_reward``, else
``reward``; the first one on a tie) is tagged ``synalinks.best_epoch`` on the run.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

from synalinks_obs.training import state_diff

SCORE_KEYS = ("val_reward", "reward")


class EpochFiles(NamedTuple):
    epoch: int
    state: dict
    diff_text: str
    diff: dict


def epoch_score(logs) -> tuple[str, float] | None:
    """``(name, value)`` the best epoch is chosen by: ``val_reward``, else ``reward``."""
    for key in SCORE_KEYS:
        value = (logs or {}).get(key)
        if isinstance(value, numbers.Number) and not isinstance(value, bool):
            return key, float(value)
    return None


class EpochLog:
    def __init__(self, initial_state: dict):
        self._previous = state_diff.learned(initial_state)
        self._previous_label = "the start of training"
        self._validated = None
        self.best: tuple[int, str, float] | None = None  # (epoch, score name, value)

    def validation_begins(self, state: dict) -> None:
        """The state the epoch's validation scores (the first validation of the epoch)."""
        if self._validated is None:
            self._validated = state

    def epoch_ends(self, epoch: int, logs, state_now) -> tuple[EpochFiles | None, bool]:
        """``(files to store or None, whether this epoch is the new best)``.

        ``state_now`` is called for the state at the end of the epoch when no validation
        took a state earlier."""
        state = self._validated if self._validated is not None else state_now()
        self._validated = None
        score = epoch_score(logs)
        improved = False
        if score is not None and (self.best is None or score[1] > self.best[2]):
            self.best = (epoch, *score)
            improved = True
        learned = state_diff.learned(state)
        changes = state_diff.diff(self._previous, learned)
        if not changes:
            return None, improved
        scores = {k: float(logs[k]) for k in SCORE_KEYS if isinstance((logs or {}).get(k), numbers.Number)}
        text = state_diff.render(epoch, self._previous_label, changes, scores)
        data = {"epoch": epoch, "since": self._previous_label, "scores": scores, "changes": changes}
        self._previous = learned
        self._previous_label = f"epoch {epoch}"
        return EpochFiles(epoch, state, text, data), improved

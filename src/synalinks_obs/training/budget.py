"""A cost budget for a training run: ``Monitor(max_cost_usd=...)`` stops training cleanly.

The run's LM cost is the sum of the costs its traces already carry (each root span rolls
up the cost of the language-model calls under it: the program's, the reward's, the
optimizer's), added as each trace ends (``feedback.RunObserver`` hears it). Once the sum
passes the budget, ``program.stop_training`` is set, the way Synalinks' own callbacks stop
a ``fit()``: the batch in progress finishes (and the epoch's validation), then ``fit()``
returns normally. The run is tagged ``synalinks.stopped_by=max_cost_usd`` with the cost,
and one line says so. Calls that are not traced (sampled out) cost nothing here. With
tracing off, the program's own language models' usage is read instead when each batch
begins: training then stops after the batch that follows the one that passed the budget.
"""

from __future__ import annotations

import numbers
import threading

from synalinks_obs import reporting

_log = reporting.logger(__name__)
STOPPED_TAG = "synalinks.stopped_by"


def validated(value):
    """``max_cost_usd`` as a positive float, or None (one line for a bad value)."""
    if value is None:
        return None
    if not isinstance(value, bool) and isinstance(value, numbers.Number) and value > 0:
        return float(value)
    _log.warning(
        "synalinks-obs: Monitor(max_cost_usd=%r) must be a positive number of US dollars, "
        "e.g. max_cost_usd=5.0; training runs without a budget", value,
    )
    return None


class Budget:
    def __init__(self, max_cost_usd: float, program):
        self.max_cost_usd = float(max_cost_usd)
        self.program = program
        self.spent = 0.0
        self.exceeded = False
        self._lock = threading.Lock()

    def add(self, cost: float) -> None:
        """A finished trace's cost (any thread)."""
        with self._lock:
            self.spent += float(cost)
            over = not self.exceeded and self.spent > self.max_cost_usd
            if over:
                self.exceeded = True
        if over:
            self._stop()

    def set_spent(self, spent: float) -> None:
        """The run's cost so far, from another source (tracing off)."""
        with self._lock:
            self.spent = max(self.spent, float(spent))
            over = not self.exceeded and self.spent > self.max_cost_usd
            if over:
                self.exceeded = True
        if over:
            self._stop()

    def _stop(self) -> None:
        if self.program is not None:
            self.program.stop_training = True
        _log.warning(
            "synalinks-obs: the training run's LM cost ($%.4f) passed max_cost_usd=%s: "
            "training stops after the current batch",
            self.spent, self.max_cost_usd,
        )

    def tags(self) -> dict:
        if not self.exceeded:
            return {}
        return {
            STOPPED_TAG: "max_cost_usd",
            "synalinks.max_cost_usd": f"{self.max_cost_usd:g}",
            "synalinks.cost_usd_at_stop": f"{self.spent:.6f}",
        }

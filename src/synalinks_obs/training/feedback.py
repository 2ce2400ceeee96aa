"""Per-example rewards on the traces of a training run: which trace did each reward score?

Synalinks scores a batch after running it: ``predict_on_batch`` calls the program once per
example, concurrently (``asyncio.gather``), then ``compute_reward(x, y, y_pred)`` gets the
outputs in the order of the examples. The calls may start and finish in any order, so the
match is made by identity, never by order:

- every trace of the run starts and ends through the tracer, which tells the run's
  ``RunObserver`` (``RUNTIME.run_observers``) the root call's first argument and the very
  object the call returned;
- ``Trainer.compute_reward`` is wrapped: ``y_pred[i]`` *is* the object one call returned,
  so the i-th reward goes to that call's trace (a call that returned nothing is matched by
  its input object, ``x[i]``, instead);
- ``MeanMetricWrapper.update_state`` (the compiled metrics Synalinks computes per example)
  is wrapped the same way: matched by the output object it scores, its value for that one
  example read from the metric's total before and after.

Each match becomes MLflow feedback (named after the reward or metric, source ``CODE``) and
the example's ``y`` an expectation (``expected_output``), written by the run's
``assessments.AssessmentWriter``. A reward or metric is logged once per trace. Both
wrappers call the original exactly once with the caller's arguments; nothing of ours can
change its result or its exception. Both patches go through the patch registry.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections import OrderedDict

from synalinks_obs import reporting
from synalinks_obs.compat import synalinks as synalinks_compat
from synalinks_obs.runtime import RUNTIME
from synalinks_obs.tracing import context
from synalinks_obs.training.state import stored_data

GROUP = "training"
EXPECTATION_NAME = "expected_output"
# Outputs remembered until scored (the oldest are forgotten first): a few epochs of
# typical batches; calls that are never scored (predict(), an optimizer's own LM calls)
# cannot grow it without bound.
MAX_REMEMBERED = 10_000


class _Scored:
    """The trace of one program call, and what was already logged on it."""

    __slots__ = ("trace_id", "names")

    def __init__(self, trace_id):
        self.trace_id = trace_id
        self.names: set[str] = set()


def _leaves(value, depth=0):
    """The objects a reward or metric may be handed for one output (itself, its items)."""
    yield value
    if depth < 3 and isinstance(value, (list, tuple)):
        for item in value:
            yield from _leaves(item, depth + 1)
    elif depth < 3 and isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item, depth + 1)


def _json(value):
    get_json = getattr(value, "get_json", None)
    if get_json is not None:
        return get_json()
    if isinstance(value, (list, tuple)):
        return [_json(item) for item in value]
    return value


class RunObserver:
    """Matches a run's per-example scores to its traces (see the module docstring).

    ``on_scored(trace_id, assessments, epoch, phase)`` receives each match; ``on_cost(usd)``
    the cost of each finished trace of the run. ``phase`` and ``epoch`` are set by the
    Monitor as training goes (``training``, ``validation``, ``evaluation``)."""

    def __init__(self, program, run_id, on_scored, on_cost=None):
        self.program = program
        self.run_id = run_id
        self.on_scored = on_scored
        self.on_cost = on_cost
        self.phase = "training"
        self.epoch = 0
        self.unmatched = 0
        self._lock = threading.Lock()
        self._arguments: dict = {}  # trace id -> the root call's first argument, while it runs
        self._outputs: OrderedDict = OrderedDict()  # id(object) -> (object, _Scored)
        self._empty: dict = {}  # id(input) -> [(input, trace id)] of calls that returned None

    # -- told by the tracer (any thread) -------------------------------------------------
    def trace_started(self, trace, args) -> None:
        if args:
            with self._lock:
                self._arguments[trace.trace_id] = args[0]

    def trace_ended(self, trace, outputs, error, cost) -> None:
        with self._lock:
            argument = self._arguments.pop(trace.trace_id, None)
            if outputs is None:
                if argument is not None and error is None:
                    self._empty.setdefault(id(argument), []).append((argument, trace.trace_id))
            else:
                scored = _Scored(trace.trace_id)
                for leaf in _leaves(outputs):
                    if leaf is not None:
                        self._outputs[id(leaf)] = (leaf, scored)
            while len(self._outputs) > MAX_REMEMBERED:
                self._outputs.popitem(last=False)
            if len(self._empty) > MAX_REMEMBERED:
                self._empty.clear()
        if self.on_cost is not None and cost:
            self.on_cost(cost)

    # -- told by the wrapped compute_reward / metrics (the training task) ----------------
    def _scored_call(self, prediction, argument=None) -> _Scored | None:
        with self._lock:
            if prediction is not None:
                found = self._outputs.get(id(prediction))
                return found[1] if found is not None and found[0] is prediction else None
            calls = self._empty.get(id(argument)) if argument is not None else None
            while calls:
                candidate, trace_id = calls.pop()
                if candidate is argument:
                    return _Scored(trace_id)
            return None

    def rewards(self, x, y, y_pred, rewards) -> None:
        """One batch scored by ``compute_reward``: the i-th reward is ``y_pred[i]``'s."""
        reward = synalinks_compat.compiled_reward(self.program)
        if reward is None or y_pred is None or rewards is None:
            return
        name = getattr(reward, "name", None) or type(reward).__name__
        size = len(y_pred)
        if len(rewards) < size:
            return
        from mlflow.entities import AssessmentSource, AssessmentSourceType, Expectation, Feedback

        code = AssessmentSource(source_type=AssessmentSourceType.CODE, source_id=name)
        data = AssessmentSource(source_type=AssessmentSourceType.HUMAN, source_id="dataset")
        metadata = self._metadata()
        for i in range(size):
            argument = x[i] if x is not None and len(x) > i else None
            scored = self._scored_call(y_pred[i], argument)
            if scored is None:
                self.unmatched += 1
                continue
            if name in scored.names:
                continue
            scored.names.add(name)
            assessments = [Feedback(name=name, value=float(rewards[i]), source=code, metadata=metadata)]
            expected = y[i] if y is not None and len(y) > i else None
            if expected is not None and EXPECTATION_NAME not in scored.names:
                scored.names.add(EXPECTATION_NAME)
                assessments.append(Expectation(
                    name=EXPECTATION_NAME, value=stored_data(_json(expected)), source=data,
                    metadata=metadata,
                ))
            self.on_scored(scored.trace_id, assessments, self.epoch, self.phase)

    def metric(self, name, prediction, value) -> None:
        """One example scored by a compiled metric (matched by the output it scored)."""
        scored = self._scored_call(prediction) if prediction is not None else None
        if scored is None or name in scored.names:
            return
        scored.names.add(name)
        from mlflow.entities import AssessmentSource, AssessmentSourceType, Feedback

        source = AssessmentSource(source_type=AssessmentSourceType.CODE, source_id=name)
        feedback = Feedback(name=name, value=float(value), source=source, metadata=self._metadata())
        self.on_scored(scored.trace_id, [feedback], self.epoch, self.phase)

    def _metadata(self) -> dict:
        metadata = {
            "mlflow.assessment.sourceRunId": self.run_id,  # MLflow links it to the run
            "synalinks.phase": self.phase,
        }
        if self.phase != "evaluation":
            metadata["synalinks.epoch"] = str(self.epoch)
        return metadata


def observer_of(program=None) -> RunObserver | None:
    """The observer of the run the calling code works for (if ``program`` is given: only
    when that run trains or evaluates it, not a program nested in a reward)."""
    if not RUNTIME.run_observers:
        return None
    destination = context.run_destination()
    if destination is None or destination.run_id is None:
        return None
    observer = RUNTIME.run_observers.get(destination.run_id)
    if observer is None or (program is not None and observer.program is not program):
        return None
    return observer


# -- the wrappers ----------------------------------------------------------------------

def _wrap_compute_reward(original):
    signature = inspect.signature(original)

    @functools.wraps(original)
    async def compute_reward(self, *args, **kwargs):
        rewards = await original(self, *args, **kwargs)
        try:
            observer = observer_of(self)
            if observer is not None:
                bound = signature.bind(self, *args, **kwargs).arguments
                observer.rewards(bound.get("x"), bound.get("y"), bound.get("y_pred"), rewards)
        except Exception as exc:
            reporting.internal_error("matching rewards to traces", exc)
        return rewards

    return compute_reward


def _wrap_metric_update(original):
    @functools.wraps(original)
    async def update_state(self, *args, **kwargs):
        observer = before = None
        try:
            observer = observer_of()
            if observer is not None:
                before = synalinks_compat.mean_metric_state(self)
        except Exception as exc:
            reporting.internal_error("reading a metric before an example", exc)
            observer = None
        result = await original(self, *args, **kwargs)
        if observer is not None and before is not None:
            try:
                after = synalinks_compat.mean_metric_state(self)
                prediction = args[1] if len(args) > 1 else kwargs.get("y_pred")
                if after is not None and after[1] - before[1] == 1:
                    name = getattr(self, "name", None) or type(self).__name__
                    observer.metric(name, prediction, after[0] - before[0])
            except Exception as exc:
                reporting.internal_error("matching a metric to its trace", exc)
        return result

    return update_state


def install(registry) -> None:
    """Wrap ``Trainer.compute_reward`` and ``MeanMetricWrapper.update_state`` (idempotent)."""
    with RUNTIME.lock:
        trainer = synalinks_compat.trainer_class()
        original = trainer.__dict__.get("compute_reward") if trainer is not None else None
        if original is not None and not registry.is_patched(trainer, "compute_reward"):
            registry.apply(trainer, "compute_reward", _wrap_compute_reward(original), GROUP)
        metric = synalinks_compat.mean_metric_wrapper_class()
        original = metric.__dict__.get("update_state") if metric is not None else None
        if original is not None and not registry.is_patched(metric, "update_state"):
            registry.apply(metric, "update_state", _wrap_metric_update(original), GROUP)

"""What a Monitor logs beyond params, metrics and plots, for one run: ``RunSession``.

One session per run (a ``fit()`` or a standalone ``evaluate()``), driven by the Monitor's
callbacks: per-example feedback on the traces (``feedback``, ``assessments``), the
datasets as run inputs (``datasets``), the learned state and its diff epoch by epoch and
the best epoch (``epochs``), the learned prompts in the Prompt Registry (``prompts``), the
trained program as an MLflow model (``model``) and the cost budget (``budget``). Every
step is best effort through the Monitor's guards: a store that refuses a dataset, a
prompt, an assessment or the model costs one warning, never the training.
"""

from __future__ import annotations

import json
import os
import tempfile

from synalinks_obs.compat import synalinks as synalinks_compat
from synalinks_obs.runtime import RUNTIME
from synalinks_obs.training import datasets, privacy
from synalinks_obs.training.assessments import AssessmentWriter
from synalinks_obs.training.budget import Budget
from synalinks_obs.training.epochs import EpochLog
from synalinks_obs.training.feedback import RunObserver
from synalinks_obs.training.program import lm_usage, program_name
from synalinks_obs.training.prompts import PromptRegistrar
from synalinks_obs.training.state import EPOCHS_PATH

DATASETS_DIR = "datasets"
MODEL_DIR = "model"
FEEDBACK_DRAIN_TIMEOUT = 60.0  # seconds the end of a run waits for its feedback at most
FAILED_DRAIN_TIMEOUT = 5.0  # ... of a run that failed or was interrupted (Ctrl-C)
BEST_EPOCH_TAG = "synalinks.best_epoch"


def _data_of(monitor, kind: str) -> list[tuple]:
    """``[(x, y, context)]`` of the run: what Synalinks exposes to callbacks, else what the
    fit()/evaluate() call was given."""
    program = monitor.program
    exposed = synalinks_compat.training_inputs(program, "fit" if kind == "train" else "evaluate")
    if exposed is None:
        given = monitor._call_arguments or {}
        exposed = {"x": given.get("x"), "y": given.get("y")}
        validation = given.get("validation_data")
        if kind == "train" and isinstance(validation, (list, tuple)) and len(validation) == 2:
            exposed["val_x"], exposed["val_y"] = validation
    if kind != "train":
        return [(exposed.get("x"), exposed.get("y"), "evaluation")]
    return [
        (exposed.get("x"), exposed.get("y"), "training"),
        (exposed.get("val_x"), exposed.get("val_y"), "validation"),
    ]


class RunSession:
    def __init__(self, monitor, run):
        self.monitor = monitor
        self.run = run
        self.program = monitor.program
        self.observer = None
        self.writer = None
        self.budget = None
        self.epochs = None
        self.prompts = None
        self._usage_at_start = None

    # -- begin -------------------------------------------------------------------------
    def start(self) -> None:
        monitor, run = self.monitor, self.run
        training = run.kind == "train"
        if training and monitor.max_cost_usd is not None:
            self.budget = Budget(monitor.max_cost_usd, self.program)
            self._usage_at_start = monitor._guard("usage", lm_usage, self.program)
        if monitor.log_feedback and RUNTIME.tracer is not None:
            self.writer = AssessmentWriter(run.tracking_uri, run.run_id, monitor._warn)
        if self.writer is not None or self.budget is not None:
            self.observer = RunObserver(
                self.program, run.run_id,
                on_scored=self.writer.add if self.writer is not None else _ignore,
                on_cost=self.budget.add if self.budget is not None else None,
            )
            self.observer.phase = "training" if training else "evaluation"
            RUNTIME.run_observers[run.run_id] = self.observer
        if monitor.log_inputs:
            monitor._guard("datasets", self._log_datasets)
        if training and monitor.log_program_model:
            self.epochs = monitor._guard("epoch states", lambda: EpochLog(self._state()))
        if training and monitor.register_prompts and privacy.keep_examples(monitor.log_training_examples):
            self.prompts = PromptRegistrar(
                run.client, self.program, run.run_id, run.experiment_id, run.tracking_uri,
                mask=lambda text: privacy.prompt_masker(run.policy, self.program)(text),
                set_tag=lambda key, value: monitor._store("tags", run.client.set_tag, run.run_id, key, value, run=run),
            )
            monitor._guard("prompts", self.prompts.register, "initial")

    def _log_datasets(self) -> None:
        name = program_name(self.program)
        described = []
        for x, y, context in _data_of(self.monitor, self.run.kind):
            item = datasets.describe(
                x, y, f"{name}-{context}", context, name, self.monitor.dataset_preview_rows
            )
            if item is not None:
                described.append(item)
        if not described:
            return
        datasets.log(self.run.client, self.run.run_id, described)
        with tempfile.TemporaryDirectory(prefix="synalinks-obs-datasets-") as folder:
            for item in described:
                _write_json(os.path.join(folder, f"{item.context}.json"), item.preview)
            self.monitor._upload(folder, DATASETS_DIR)

    def _state(self) -> dict:
        """The program's state as the run stores it (masked; examples kept or not)."""
        return privacy.stored_state(self.run.policy, self.program, self.monitor.log_training_examples)

    # -- during training ---------------------------------------------------------------
    def epoch_begins(self, epoch: int) -> None:
        if self.observer is not None:
            self.observer.epoch = epoch

    def validation_begins(self) -> None:
        if self.observer is not None:
            self.observer.phase = "validation"
        if self.epochs is not None:
            self.monitor._guard("epoch states", lambda: self.epochs.validation_begins(self._state()))
        if self.prompts is not None:
            self.monitor._guard("prompts", self.prompts.validation_begins)

    def validation_ends(self) -> None:
        if self.observer is not None:
            self.observer.phase = "training"

    def batch_begins(self) -> None:
        """Without traces, the budget follows the program's own LMs' usage, read when a
        batch begins (a callback Synalinks calls in order, unlike a batch's end)."""
        if self.budget is None or RUNTIME.tracer is not None or not self._usage_at_start:
            return
        usage = lm_usage(self.program)
        if usage:
            self.budget.set_spent(usage["cost"] - self._usage_at_start["cost"])

    def epoch_ends(self, epoch: int, logs) -> None:
        monitor = self.monitor
        self.batch_begins()
        if self.epochs is not None:
            monitor._guard("epoch states", self._log_epoch, epoch, logs)
        if self.prompts is not None:
            scores = {k: float(v) for k, v in (logs or {}).items() if k in ("reward", "val_reward")}
            monitor._guard("prompts", self.prompts.register, epoch, scores)

    def _log_epoch(self, epoch: int, logs) -> None:
        files, improved = self.epochs.epoch_ends(epoch, logs, lambda: self._state())
        if files is not None:
            with tempfile.TemporaryDirectory(prefix="synalinks-obs-epoch-") as folder:
                _write_json(os.path.join(folder, "state_tree.json"), files.state)
                _write_json(os.path.join(folder, "diff.json"), files.diff)
                with open(os.path.join(folder, "diff.md"), "w", encoding="utf-8") as handle:
                    handle.write(files.diff_text)
                self.monitor._upload(folder, f"{EPOCHS_PATH}/{epoch}")
        if improved:
            best_epoch, name, value = self.epochs.best
            self.monitor._store(
                "the best epoch", self.run.client.set_tag, self.run.run_id, BEST_EPOCH_TAG, str(best_epoch)
            )
            self.monitor._store(
                "the best epoch", self.run.client.set_tag, self.run.run_id, f"synalinks.best_{name}", f"{value:.6g}"
            )

    # -- end ---------------------------------------------------------------------------
    def log_model(self) -> None:
        """The trained program as an MLflow pyfunc model under ``model/`` (and registered)."""
        from synalinks_obs.training.model import save_program_model

        with tempfile.TemporaryDirectory(prefix="synalinks-obs-pyfunc-") as folder:
            path = os.path.join(folder, MODEL_DIR)
            save_program_model(self.program, path, folder, self._state())
            if not self.monitor._upload(path, MODEL_DIR):
                return
        name = self.monitor.registered_model_name
        if name:
            self.monitor._guard("the registered model", self._register_model, name)

    def _register_model(self, name: str) -> None:
        client, run = self.run.client, self.run
        try:
            client.get_registered_model(name)
        except Exception:
            client.create_registered_model(name)
        client.create_model_version(
            name, source=f"{run.artifact_uri}/{MODEL_DIR}", run_id=run.run_id,
            tags={"synalinks.program": program_name(self.program)},
        )

    def finish_tags(self) -> dict:
        return self.budget.tags() if self.budget is not None else {}

    def close(self, finished: bool = True, traces_failed: bool = False) -> None:
        """The run ends: forget its observer, write the feedback left (the Monitor has
        flushed the traces); briefly when the fit failed or was interrupted, and at once
        and without a second warning when the traces could not be written (said already:
        feedback needs its trace in the store)."""
        if self.observer is not None:
            RUNTIME.run_observers.pop(self.run.run_id, None)
        if self.writer is not None:
            if traces_failed:
                self.writer.close(0.0, quiet=True)
            else:
                self.writer.close(FEEDBACK_DRAIN_TIMEOUT if finished else FAILED_DRAIN_TIMEOUT)


def _ignore(*_args) -> None:
    return None


def _write_json(path: str, value) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, ensure_ascii=False, default=str)

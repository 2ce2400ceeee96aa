"""Training runs in MLflow: ``synalinks_obs.callbacks.Monitor`` and the autolog of ``fit()``.

``Monitor`` is a Synalinks callback. Passed to ``program.fit(callbacks=[monitor])`` it
opens one MLflow run per ``fit()`` and logs:

- **params**: the fit arguments Synalinks hands to callbacks (``epochs``, ``batch_size``,
  ``optimizer``, ``validation_split``, dataset sizes...), and the program's
  ``program_name``, ``program_class``, ``num_modules``, ``num_trainable_variables``,
  ``reward`` and ``metrics``;
- **metrics**: every training and validation metric of an epoch (``reward``,
  ``val_reward``...) at ``step=epoch``, with ``epoch_duration_s`` (and ``epoch_cost`` /
  ``epoch_tokens`` when the program's language models report usage); with
  ``log_batch_metrics=True`` also ``train_batch_*`` / ``val_batch_*`` with their own step
  counters; ``fit_duration_s`` at the end;
- **artifacts**: ``program_plots/<program>.svg`` and ``.txt`` at the start of training
  (module names and types, input/output schemas, trainable flag; no system binary needed)
  plus ``<program>.png`` when Graphviz and pydot are installed; at the end
  ``model/state_tree.json`` (the program's variables, restorable with ``restore_state``)
  and ``model/model_info.json`` (name, description, number of trainable variables...);
- **tags**: yours, plus ``synalinks.program``, ``synalinks.run_type`` and the usual
  ``mlflow.source.*`` / ``mlflow.user``;
- and, through ``training.session``: each example's reward (and compiled metrics) as
  MLflow feedback on its trace, ``y`` as an expectation; the datasets as the run's
  inputs; the state and a readable diff of each epoch that changed it under
  ``model/epochs/<n>/`` and the best epoch tagged; the learned prompts in the Prompt
  Registry; the program as an MLflow pyfunc model under ``model/``; a cost budget.

Params, tags and artifacts are masked like spans (``training.privacy``): secret keys,
credential patterns, the user's redact function; the few-shot examples of the state tree
can be left out (``log_training_examples=False``).

The run ends ``FINISHED``, or ``FAILED`` when ``fit()`` raises or is interrupted, once
the traces of its calls are written (``training.run_end``: a run whose traces cannot be
written in time is ended when they are, at exit at the latest). A standalone
``program.evaluate(callbacks=[monitor])`` gets a run of its own.

While a run is active, the traces of module calls made during ``fit()`` go to the run's
experiment and carry MLflow's source-run metadata (``mlflow.search_traces(run_id=...)``
finds them), including calls made from callback threads, tagged
``synalinks.trace_kind=training`` (``evaluation`` for a standalone ``evaluate()``); traces
of program building (symbolic calls) stay on the tracing side (see ``tracing.tracer``).

While tracing is on, ``training.autolog`` adds a ``Monitor()`` with the defaults to a
``fit()`` that has none. ``SYNALINKS_OBS_AUTOLOG_TRAINING=0`` turns that off.

Nothing here ever breaks training: a store that is down or refuses artifacts gives one
warning (naming the missing ``--serve-artifacts`` flag in the seed's PermissionError
case) and training goes on.
"""

from __future__ import annotations

import numbers
import threading
import time

from synalinks_obs import reporting, uris
from synalinks_obs.compat import synalinks as synalinks_compat
from synalinks_obs.runtime import RUNTIME
from synalinks_obs.training import artifacts, autolog, budget, mlflow_run, privacy, run_end
from synalinks_obs.training.mlflow_run import TrainingRun, why
from synalinks_obs.training.program import (
    lm_usage,
    program_params,
)
from synalinks_obs.training.session import RunSession

__all__ = ["Monitor"]

_MAX_PARAM_CHARS = 6000
_LOCK = threading.Lock()  # step counters (batch callbacks may run on executor threads)
_log = reporting.logger(__name__)
Callback = synalinks_compat.callback_class()


class Monitor(Callback):
    """Log a ``fit()`` (or a standalone ``evaluate()``) to an MLflow run.

    Args:
        experiment_name (str): MLflow experiment of the run (default: the program's name).
        run_name (str): MLflow run name (default: ``<program>-train-<date>-<time>``, or
            ``-evaluate-`` for an evaluation run).
        tracking_uri (str): tracking store (default: the store tracing writes to when it
            is on, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``).
        log_batch_metrics (bool): also log metrics per batch (default False).
        log_epoch_metrics (bool): log metrics per epoch, ``step=epoch`` (default True).
        log_program_plot (bool): log the program plot under ``program_plots/`` at the start
            of training (default True).
        log_program_model (bool): log the program as an MLflow pyfunc model under
            ``model/`` (with ``state_tree.json`` and ``model_info.json``) at the end of
            training, and each epoch's changed state under ``model/epochs/<n>/``
            (default True).
        tags (dict): extra run tags (default ``{}``).
        log_training_examples (bool): keep the few-shot examples (taken from the training
            data, masked) in ``model/state_tree.json`` (default: the
            ``log_training_examples`` setting, true).
        registered_model_name (str): also register the logged model under this name in
            the Model Registry (default: not registered).
        register_prompts (bool): register each trainable module's learned prompt in the
            Prompt Registry, a new version when it changes (default True).
        log_inputs (bool): log the training, validation and evaluation data as the run's
            dataset inputs (default True).
        dataset_preview_rows (int): rows of each dataset stored as a preview under
            ``datasets/`` (default 20; None: every row).
        log_feedback (bool): log each example's reward and per-example metrics as MLflow
            feedback on its trace, ``y`` as an expectation (default True; needs tracing).
        max_cost_usd (float): stop training once the run's LM cost passes this many US
            dollars (default None: no budget).
    """

    # Our batch handlers are thread-safe: Synalinks may dispatch them on its executor.
    async_safe = True

    def __init__(
        self,
        experiment_name=None,
        run_name=None,
        tracking_uri=None,
        log_batch_metrics=False,
        log_epoch_metrics=True,
        log_program_plot=True,
        log_program_model=True,
        tags=None,
        log_training_examples=None,
        registered_model_name=None,
        register_prompts=True,
        log_inputs=True,
        dataset_preview_rows=20,
        log_feedback=True,
        max_cost_usd=None,
    ):
        super().__init__()
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.tracking_uri = tracking_uri
        self.log_batch_metrics = bool(log_batch_metrics)
        self.log_epoch_metrics = bool(log_epoch_metrics)
        self.log_program_plot = bool(log_program_plot)
        self.log_program_model = bool(log_program_model)
        self.tags = dict(tags or {})
        self.log_training_examples = None if log_training_examples is None else bool(log_training_examples)
        self.registered_model_name = registered_model_name or None
        self.register_prompts = bool(register_prompts)
        self.log_inputs = bool(log_inputs)
        self.dataset_preview_rows = None if dataset_preview_rows is None else max(0, int(dataset_preview_rows))
        self.log_feedback = bool(log_feedback)
        self.max_cost_usd = budget.validated(max_cost_usd)
        self._session: RunSession | None = None
        self._call_arguments = None  # fit()/evaluate()'s arguments (set by the wrapper)
        self.autolog = False  # True for the Monitor autolog adds
        self.run_id = None  # id of the last run this Monitor opened
        self._run: TrainingRun | None = None
        self._in_training = False
        self._steps = {"train": 0, "val": 0, "test": 0}
        self._epoch_t0 = None
        self._epoch_usage = None
        self._fit_usage = None
        self._warned: set[str] = set()
        _ensure_fit_wrapper()  # so a failing or interrupted fit() ends the run FAILED

    # -- fit() ------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._end_open_run("FAILED")  # a run left open by an earlier, broken fit()
        self._in_training = True
        self._steps = {"train": 0, "val": 0, "test": 0}
        if not self._start_run("train"):
            return
        self._store("params", self._log_params)
        self._fit_usage = self._guard("usage", lm_usage, self.program)
        if self.log_program_plot:
            self._guard("program plot", self._log_program_plot)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_t0 = time.perf_counter()
        self._epoch_usage = self._guard("usage", lm_usage, self.program)
        if self._session is not None:
            self._session.epoch_begins(epoch)

    def on_epoch_end(self, epoch, logs=None):
        run = self._run
        if run is None:
            return
        run.last_step = epoch
        if self.log_epoch_metrics:
            metrics = _numeric(logs)
            if self._epoch_t0 is not None:
                metrics["epoch_duration_s"] = time.perf_counter() - self._epoch_t0
            metrics.update(self._usage_delta("epoch", self._epoch_usage))
            self._store("metrics", self._log_metrics, metrics, epoch)
        if self._session is not None:
            self._session.epoch_ends(epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        session = self._session
        if session is not None:
            self._guard("the cost budget", session.batch_begins)

    def on_train_batch_end(self, batch, logs=None):
        self._log_batch("train", logs)

    def on_train_end(self, logs=None):
        run = self._run
        self._in_training = False
        if run is None:
            return
        if self.log_epoch_metrics:
            metrics = {"fit_duration_s": time.perf_counter() - run.t0}
            metrics.update(self._usage_delta("fit", self._fit_usage))
            self._store("metrics", self._log_metrics, metrics, run.last_step)
        if self.log_program_model:
            self._guard("program model", self._log_program_model)
            if self._session is not None:
                self._guard("the MLflow model", self._session.log_model)
        self._end_run("FINISHED")

    # -- evaluate() -------------------------------------------------------------------
    def on_test_begin(self, logs=None):
        if self._in_training:
            # Validation inside fit(): its metrics come with the epoch's, as val_*.
            if self._session is not None:
                self._session.validation_begins()
            return
        self._end_open_run("FAILED")
        self._steps = {"train": 0, "val": 0, "test": 0}
        if self._start_run("evaluate"):
            self._store("params", self._log_params)

    def on_test_batch_end(self, batch, logs=None):
        self._log_batch("val" if self._in_training else "test", logs)

    def on_test_end(self, logs=None):
        run = self._run
        if self._in_training and self._session is not None:
            self._session.validation_ends()
        if self._in_training or run is None:
            return
        metrics = _numeric(logs)
        metrics["eval_duration_s"] = time.perf_counter() - run.t0
        self._store("metrics", self._log_metrics, metrics, 0)
        self._end_run("FINISHED")

    # -- failure (called by the fit()/evaluate() wrapper) -----------------------------
    def _abort(self, error: BaseException) -> None:
        """End the open run FAILED: ``fit()`` raised or was interrupted."""
        self._in_training = False
        run = self._run
        if run is None:
            return
        try:
            message = reporting.first_line(error)
            self._store(
                "tags",
                run.client.set_tag,
                run.run_id,
                "synalinks.error",
                privacy.text(
                    run.policy,
                    f"{type(error).__name__}: {message}"[:5000] if message else type(error).__name__,
                ),
            )
        finally:  # the tag may fail; the run still ends FAILED
            self._end_run("FAILED")

    # -- the run ----------------------------------------------------------------------
    def _start_run(self, kind: str) -> bool:
        self.run_id = None
        try:
            self._run = self._create_run(kind)
        except Exception as exc:
            self._run = None
            self._warn(
                "start",
                f"synalinks-obs: cannot start the MLflow run for {kind} "
                f"({why(self._tracking_uri(), exc)}); training goes on unlogged",
            )
            return False
        self.run_id = self._run.run_id
        self._session = RunSession(self, self._run)
        mlflow_run.route_traces(self._run)
        self._session.start()
        return True

    def _create_run(self, kind: str) -> TrainingRun:
        return mlflow_run.create_run(
            self.program, kind, self._tracking_uri(), self.experiment_name, self.run_name, self.tags, self.autolog
        )

    def _tracking_uri(self) -> str:
        tracer = RUNTIME.tracer
        if self.tracking_uri or tracer is None:
            return uris.resolve(self.tracking_uri).uri
        return tracer.destination.tracking_uri  # the store tracing writes to

    def _end_run(self, status: str) -> None:
        """Mark the run ``status`` once its traces are written (``training.run_end``);
        whatever fails on the way, the run is ended (now or when they are written)."""
        run, self._run = self._run, None
        session, self._session = self._session, None
        if run is None:
            return
        written = None  # None: failed and reported; False: not written in time
        try:
            try:
                mlflow_run.unroute_traces(run)
            except Exception as exc:
                reporting.internal_error("ending a training run's trace routing", exc)
            written = run_end.flush_traces(run)
            if session is not None:  # its feedback needs the traces written
                try:
                    session.close(finished=status == "FINISHED", traces_failed=written is None)
                except Exception as exc:
                    reporting.internal_error("ending a training run's feedback", exc)
                for key, value in session.finish_tags().items():
                    self._store("tags", run.client.set_tag, run.run_id, key, value, run=run)
        finally:
            if written:
                run_end.terminate(run, status, self._warn)
            else:
                run_end.end_when_written(self, run, status, warned=written is None)

    def _end_open_run(self, status: str) -> None:
        if self._run is not None:
            self._end_run(status)

    # -- what is logged ---------------------------------------------------------------
    def _log_params(self) -> None:
        from mlflow.entities import Param

        params = {}
        for key, value in (self.params or {}).items():
            if value is None or isinstance(value, (str, bool, numbers.Number)):
                params[str(key)] = value
        params.update(program_params(self.program))
        params = privacy.params(self._run.policy, params)
        batch = [Param(k, str(v)[:_MAX_PARAM_CHARS]) for k, v in params.items()]
        if batch:
            self._run.client.log_batch(self._run.run_id, params=batch)

    def _log_metrics(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric

        run = self._run
        if run is None or not metrics:
            return
        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, int(step)) for key, value in metrics.items()]
        run.client.log_batch(run.run_id, metrics=batch)

    def _log_batch(self, phase: str, logs) -> None:
        if not self.log_batch_metrics or self._run is None:
            return
        with _LOCK:
            step = self._steps[phase]
            self._steps[phase] = step + 1
        metrics = {f"{phase}_batch_{key}": value for key, value in _numeric(logs).items()}
        self._store("metrics", self._log_metrics, metrics, step)

    def _usage_delta(self, prefix: str, before) -> dict:
        after = self._guard("usage", lm_usage, self.program)
        if not before or not after:
            return {}
        return {
            f"{prefix}_cost": after["cost"] - before["cost"],
            f"{prefix}_tokens": after["tokens"] - before["tokens"],
        }

    def _log_program_plot(self) -> None:
        if self.program is not None:
            artifacts.log_program_plot(self._run, self.program, self._guard, self._upload)

    def _log_program_model(self) -> None:
        if self.program is not None:
            artifacts.log_program_model(self._run, self.program, self.log_training_examples, self._upload)

    def _upload(self, folder: str, artifact_path: str) -> bool:
        return artifacts.upload(self._run, folder, artifact_path, self._warn)

    # -- never break training ---------------------------------------------------------
    def _store(self, what: str, function, *args, run: "TrainingRun | None" = None):
        """A call to the tracking store for the run. MLflow's client already retried: a
        failure means the store is gone, so the rest of the run is not sent."""
        run = run or self._run
        if run is None or run.broken:
            return None
        try:
            return function(*args)
        except Exception as exc:
            run.broken = True
            self._warn(
                "store",
                f"synalinks-obs: the tracking store at {uris.display(run.tracking_uri)} failed while "
                f"logging {what} of run {run.run_id} ({why(run.tracking_uri, exc)}); the rest "
                "of this run is not logged, training goes on",
            )
            return None

    def _guard(self, what: str, function, *args):
        try:
            return function(*args)
        except Exception as exc:
            self._warn(
                what,
                f"synalinks-obs: training Monitor could not log {what} "
                f"({type(exc).__name__}: {reporting.first_line(exc)}); training goes on",
            )
            return None

    def _warn(self, key: str, message: str, once: bool = True) -> None:
        if once and key in self._warned:
            return
        self._warned.add(key)
        _log.warning(message)


def _numeric(logs) -> dict:
    out = {}
    for key, value in (logs or {}).items():
        if isinstance(value, bool) or not isinstance(value, numbers.Number):
            continue
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def _ensure_fit_wrapper() -> None:
    """The fit()/evaluate() wrapper ends a failed run FAILED, tracing or not (never raises)."""
    try:
        autolog.install(RUNTIME.patches)
    except Exception as exc:
        reporting.internal_error("installing the fit() wrapper", exc)


autolog.register_monitor_class(Monitor)

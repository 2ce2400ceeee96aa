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
  ``mlflow.source.*`` / ``mlflow.user``.

The run ends ``FINISHED``, or ``FAILED`` when ``fit()`` raises or is interrupted. A
standalone ``program.evaluate(callbacks=[monitor])`` gets a run of its own.

While a run is active, the traces of module calls made during ``fit()`` go to the run's
experiment and carry MLflow's source-run metadata (``mlflow.search_traces(run_id=...)``
finds them), including calls made from callback threads; traces of program building
(symbolic calls) stay in the tracing experiment.

Autolog: while tracing is on, ``Trainer.fit`` and ``Trainer.evaluate`` are wrapped so a
``Monitor()`` with the defaults (and the tracing tracking URI) is added when the user
passed none. A Monitor the user passes wins (ours, or Synalinks' own
``synalinks.callbacks.Monitor``): one ``fit()`` is never two runs.
``SYNALINKS_OBS_AUTOLOG_TRAINING=0`` (or ``enable(autolog_training=False)``) turns it off.

Nothing here ever breaks training: a store that is down or refuses artifacts gives one
warning (naming the missing ``--serve-artifacts`` flag in the seed's PermissionError
case) and training goes on.
"""

from __future__ import annotations

import contextvars
import functools
import html
import inspect
import json
import logging
import numbers
import os
import sys
import tempfile
import threading
import time
from urllib.parse import urlparse

from synalinks.src.callbacks.callback import Callback

from synalinks_obs import spans

_logger = logging.getLogger("synalinks_obs")

__all__ = ["Monitor", "restore_state", "describe_program", "install", "uninstall"]

STATE_TREE_PATH = "model/state_tree.json"
MODEL_INFO_PATH = "model/model_info.json"
PLOTS_DIR = "program_plots"
_MAX_PARAM_CHARS = 6000
_LOCK = threading.Lock()  # step counters (batch callbacks may run on executor threads)


# == the callback =========================================================================


class _Run:
    """The MLflow run a Monitor is logging to (one fit() or one evaluate())."""

    def __init__(self, client, run, tracking_uri, experiment_name, kind):
        self.client = client
        self.run_id = run.info.run_id
        self.experiment_id = run.info.experiment_id
        self.artifact_uri = run.info.artifact_uri
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.kind = kind
        self.destination = None
        self.token = None
        self.t0 = time.perf_counter()
        self.artifacts_failed = False
        self.broken = False  # the store failed a call: nothing more is sent for this run
        self.last_step = 0


class Monitor(Callback):
    """Log a ``fit()`` (or a standalone ``evaluate()``) to an MLflow run.

    Args:
        experiment_name (str): MLflow experiment of the run (default: the program's name).
        run_name (str): MLflow run name (default: ``<program>-train-<date>-<time>``, or
            ``-evaluate-`` for an evaluation run).
        tracking_uri (str): tracking store (default: MLflow's default, i.e.
            ``MLFLOW_TRACKING_URI`` or the URI tracing was enabled with).
        log_batch_metrics (bool): also log metrics per batch (default False).
        log_epoch_metrics (bool): log metrics per epoch, ``step=epoch`` (default True).
        log_program_plot (bool): log the program plot under ``program_plots/`` at the start
            of training (default True).
        log_program_model (bool): log ``model/state_tree.json`` and
            ``model/model_info.json`` at the end of training (default True).
        tags (dict): extra run tags (default ``{}``).
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
        self.autolog = False  # True for the Monitor autolog adds
        self.run_id = None  # id of the last run this Monitor opened
        self._run: _Run | None = None
        self._in_training = False
        self._steps = {"train": 0, "val": 0, "test": 0}
        self._epoch_t0 = None
        self._epoch_usage = None
        self._fit_usage = None
        self._warned: set[str] = set()
        install()  # so a failing or interrupted fit() ends the run FAILED

    # -- fit() ------------------------------------------------------------------------
    def on_train_begin(self, logs=None):
        self._end_open_run("FAILED")  # a run left open by an earlier, broken fit()
        self._in_training = True
        self._steps = {"train": 0, "val": 0, "test": 0}
        if not self._start_run("train"):
            return
        self._store("params", self._log_params)
        self._fit_usage = self._guard("usage", _lm_usage, self.program)
        if self.log_program_plot:
            self._guard("program plot", self._log_program_plot)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_t0 = time.perf_counter()
        self._epoch_usage = self._guard("usage", _lm_usage, self.program)

    def on_epoch_end(self, epoch, logs=None):
        run = self._run
        if run is None or not self.log_epoch_metrics:
            return
        metrics = _numeric(logs)
        if self._epoch_t0 is not None:
            metrics["epoch_duration_s"] = time.perf_counter() - self._epoch_t0
        metrics.update(self._usage_delta("epoch", self._epoch_usage))
        run.last_step = epoch
        self._store("metrics", self._log_metrics, metrics, epoch)

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
        self._end_run("FINISHED")

    # -- evaluate() -------------------------------------------------------------------
    def on_test_begin(self, logs=None):
        if self._in_training:
            return  # validation inside fit(): its metrics come with the epoch's, as val_*
        self._end_open_run("FAILED")
        self._steps = {"train": 0, "val": 0, "test": 0}
        if self._start_run("evaluate"):
            self._store("params", self._log_params)

    def on_test_batch_end(self, batch, logs=None):
        self._log_batch("val" if self._in_training else "test", logs)

    def on_test_end(self, logs=None):
        run = self._run
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
        message = _first_line(error)
        self._store(
            "tags",
            run.client.set_tag,
            run.run_id,
            "synalinks.error",
            f"{type(error).__name__}: {message}"[:5000] if message else type(error).__name__,
        )
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
                f"({type(exc).__name__}: {_first_line(exc)}); training goes on unlogged",
            )
            return False
        self.run_id = self._run.run_id
        self._activate_traces(self._run)
        return True

    def _create_run(self, kind: str) -> _Run:
        import mlflow
        from mlflow.tracking import MlflowClient
        from mlflow.tracking.context.registry import resolve_tags
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        from synalinks_obs.export import resolve_experiment

        program = self.program
        program_name = _program_name(program)
        tracking_uri = self.tracking_uri or mlflow.get_tracking_uri()
        _check_reachable(tracking_uri)
        experiment_name = self.experiment_name or program_name
        experiment_id = resolve_experiment(tracking_uri, experiment_name)
        run_name = self.run_name or f"{program_name}-{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
        tags = {
            "synalinks.program": program_name,
            "synalinks.program_class": type(program).__name__ if program is not None else "",
            "synalinks.run_type": kind,
            "synalinks_obs.autolog": str(self.autolog).lower(),
        }
        version = _synalinks_version()
        if version:
            tags["synalinks.version"] = version
        description = _program_description(program)
        if description:
            tags["synalinks.program_description"] = description[:5000]
        tags.update({str(k): str(v) for k, v in self.tags.items()})
        active = mlflow.active_run()
        if active is not None and active.info.experiment_id == experiment_id and (
            mlflow.get_tracking_uri() == tracking_uri
        ):
            tags.setdefault(MLFLOW_PARENT_RUN_ID, active.info.run_id)
        client = MlflowClient(tracking_uri)
        run = client.create_run(experiment_id, run_name=run_name, tags=resolve_tags(tags))
        return _Run(client, run, tracking_uri, experiment_name, kind)

    def _activate_traces(self, run: _Run) -> None:
        """Send the traces of calls made from now on to the run (this task, then any thread)."""
        run.destination = spans.Destination(
            run.tracking_uri, run.experiment_name, run.experiment_id, run.run_id
        )
        run.token = spans.DESTINATION_OVERRIDE.set(run.destination)
        spans.push_run_destination(run.destination)

    def _deactivate_traces(self, run: _Run) -> None:
        if run.destination is None:
            return
        spans.pop_run_destination(run.destination)
        if run.token is not None:
            try:
                spans.DESTINATION_OVERRIDE.reset(run.token)
            except ValueError:  # ended from another context than the one it started in
                if spans.DESTINATION_OVERRIDE.get() == run.destination:
                    spans.DESTINATION_OVERRIDE.set(None)
        run.token = None

    def _end_run(self, status: str) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        self._deactivate_traces(run)
        self._flush_traces()
        self._store("the end", run.client.set_terminated, run.run_id, status, run=run)

    def _end_open_run(self, status: str) -> None:
        if self._run is not None:
            self._end_run(status)

    @staticmethod
    def _flush_traces() -> None:
        """Write the run's traces before the run is reported finished (bounded)."""
        from synalinks_obs.instrument import STATE

        tracer = STATE.tracer
        if tracer is not None:
            try:
                tracer.exporter.flush(min(tracer.settings.flush_timeout, 5.0))
            except Exception:
                pass

    # -- what is logged ---------------------------------------------------------------
    def _log_params(self) -> None:
        from mlflow.entities import Param

        params = {}
        for key, value in (self.params or {}).items():
            if value is None or isinstance(value, (str, bool, numbers.Number)):
                params[str(key)] = value
        params.update(_program_params(self.program))
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
        after = self._guard("usage", _lm_usage, self.program)
        if not before or not after:
            return {}
        return {
            f"{prefix}_cost": after["cost"] - before["cost"],
            f"{prefix}_tokens": after["tokens"] - before["tokens"],
        }

    def _log_program_plot(self) -> None:
        program = self.program
        if program is None:
            return
        name = _file_name(_program_name(program))
        description = describe_program(program)
        with tempfile.TemporaryDirectory(prefix="synalinks-obs-plot-") as folder:
            _write(os.path.join(folder, f"{name}.txt"), render_text(description))
            _write(os.path.join(folder, f"{name}.svg"), render_svg(description))
            self._guard("png plot", _render_png, program, folder, f"{name}.png")
            self._upload(folder, PLOTS_DIR)

    def _log_program_model(self) -> None:
        program = self.program
        if program is None:
            return
        state = program_state(program)
        info = model_info(program, self._run.run_id if self._run else None)
        with tempfile.TemporaryDirectory(prefix="synalinks-obs-model-") as folder:
            _write(os.path.join(folder, "state_tree.json"), _dumps(state))
            _write(os.path.join(folder, "model_info.json"), _dumps(info))
            self._upload(folder, "model")

    def _upload(self, folder: str, artifact_path: str) -> bool:
        run = self._run
        if run is None or run.artifacts_failed:
            return False
        try:
            run.client.log_artifacts(run.run_id, folder, artifact_path)
            return True
        except Exception as exc:
            run.artifacts_failed = True  # one warning per run; later uploads are skipped
            self._warn("artifacts", _artifact_failure_message(run, exc), once=False)
            return False

    # -- never break training ---------------------------------------------------------
    def _store(self, what: str, function, *args, run: "_Run | None" = None):
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
                f"synalinks-obs: the tracking store at {run.tracking_uri} failed while "
                f"logging {what} of run {run.run_id} ({type(exc).__name__}: "
                f"{_first_line(exc)}); the rest of this run is not logged, training goes on",
            )
            return None

    def _guard(self, what: str, function, *args):
        try:
            return function(*args)
        except Exception as exc:
            self._warn(
                what,
                f"synalinks-obs: training Monitor could not log {what} "
                f"({type(exc).__name__}: {_first_line(exc)}); training goes on",
            )
            return None

    def _warn(self, key: str, message: str, once: bool = True) -> None:
        if once and key in self._warned:
            return
        self._warned.add(key)
        _logger.warning(message)


def _check_reachable(tracking_uri: str, timeout: float = 5.0) -> None:
    """Fail fast for a server that is down (MLflow's own client retries for minutes)."""
    parsed = urlparse(tracking_uri or "")
    if parsed.scheme not in ("http", "https"):
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        pass  # it answered (a proxy or auth in front of /health): let MLflow's client try
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConnectionError(f"no MLflow server answers at {tracking_uri} ({reason})") from None


def _artifact_failure_message(run: _Run, exc: BaseException) -> str:
    error = f"{type(exc).__name__}: {_first_line(exc)}"
    remote = urlparse(run.tracking_uri or "").scheme in ("http", "https")
    artifact_scheme = urlparse(run.artifact_uri or "").scheme
    if remote and artifact_scheme in ("", "file"):
        return (
            f"synalinks-obs: cannot upload the artifacts of run {run.run_id} ({error}). "
            f"The MLflow server at {run.tracking_uri} gave this run the artifact location "
            f"{run.artifact_uri!r}, a path on the server's disk, because it does not proxy "
            "artifacts: restart it with `--serve-artifacts --default-artifact-root "
            "mlflow-artifacts:/ --artifacts-destination DIR`. Training goes on; this run "
            "gets no artifacts."
        )
    return (
        f"synalinks-obs: cannot upload the artifacts of run {run.run_id} to "
        f"{run.artifact_uri} ({error}); training goes on, this run gets no artifacts"
    )


# == what a program is made of ==============================================================


def _program_name(program) -> str:
    name = getattr(program, "name", None) if program is not None else None
    return name if isinstance(name, str) and name else "program"


def _program_description(program) -> str:
    try:
        description = getattr(program, "description", None)
    except Exception:
        return ""
    return description if isinstance(description, str) else ""


def _synalinks_version() -> str:
    module = sys.modules.get("synalinks")
    return str(getattr(module, "__version__", "") or "")


def _modules_of(program) -> list:
    try:
        return list(program._flatten_modules(include_self=False, recursive=True))
    except Exception:
        return []


def _program_params(program) -> dict:
    if program is None:
        return {}
    params = {
        "program_name": _program_name(program),
        "program_class": type(program).__name__,
        "num_modules": len(_modules_of(program)),
    }
    try:
        params["num_trainable_variables"] = len(program.trainable_variables)
    except Exception:
        pass
    reward = getattr(program, "reward", None) or getattr(program, "_compile_reward", None)
    if reward is not None:
        params["reward"] = getattr(reward, "name", None) or type(reward).__name__
    optimizer = getattr(program, "optimizer", None)
    if optimizer is not None:
        params.setdefault("optimizer", type(optimizer).__name__)
    try:
        names = [m.name for m in getattr(program, "_compile_metrics").metrics]
        if names:
            params["metrics"] = ",".join(names)
    except Exception:
        pass
    return params


def _lm_usage(program):
    """All-time cost and tokens of the program's language/embedding models, or None."""
    if program is None:
        return None
    models = [m for m in _modules_of(program) if hasattr(m, "cumulated_cost")]
    if not models:
        return None
    return {
        "cost": float(sum(getattr(m, "cumulated_cost", 0) or 0 for m in models)),
        "tokens": float(sum(getattr(m, "cumulated_tokens", 0) or 0 for m in models)),
    }


def _schema_of(value):
    if value is None:
        return None
    get_schema = getattr(value, "get_schema", None)
    if get_schema is not None:
        return get_schema()
    if isinstance(value, (list, tuple)):
        return [_schema_of(item) for item in value]
    if isinstance(value, dict):
        return {key: _schema_of(item) for key, item in value.items()}
    return None


def _safe_schema(module, attribute):
    try:
        return _schema_of(getattr(module, attribute))
    except Exception:
        return None


def describe_program(program) -> dict:
    """The program as plain data: modules (name, class, schemas, trainable) and edges.

    Functional programs give their graph; a Sequential its chain; any other program its
    submodules, unconnected.
    """
    kind = "other"
    modules = []
    edges = []
    try:
        from synalinks.src.programs import functional, sequential

        if isinstance(program, functional.Functional):
            kind = "functional"
            modules = list(program._operations)
        elif isinstance(program, sequential.Sequential):
            kind = "sequential"
            modules = list(getattr(program, "_modules", None) or [])
    except Exception:
        modules = []
    if not modules:
        try:
            modules = list(program._flatten_modules(include_self=False, recursive=False))
        except Exception:
            modules = []
    index = {id(module): i for i, module in enumerate(modules)}
    if kind == "sequential":
        edges = [(i, i + 1) for i in range(len(modules) - 1)]
    elif kind == "functional":
        try:
            from synalinks.src.ops.function import make_node_key

            for module in modules:
                for i, node in enumerate(module._inbound_nodes):
                    if make_node_key(module, i) not in program._nodes:
                        continue
                    for parent in node.parent_nodes:
                        source = index.get(id(parent.operation))
                        edge = (source, index[id(module)])
                        if source is not None and edge not in edges:
                            edges.append(edge)
        except Exception:
            pass
    described = []
    for module in modules:
        variables = list(getattr(module, "variables", None) or [])
        described.append({
            "name": _text(getattr(module, "name", "")),
            "class": type(module).__name__,
            "description": _text(getattr(module, "description", "")),
            "trainable": bool(getattr(module, "trainable", False)) if variables else None,
            "num_variables": len(variables),
            "input_schema": None if type(module).__name__ == "InputModule"
            else _safe_schema(module, "input"),
            "output_schema": _safe_schema(module, "output"),
        })
    return {
        "name": _program_name(program),
        "class": type(program).__name__,
        "kind": kind,
        "description": _program_description(program),
        "modules": described,
        "edges": edges,
    }


def _text(value) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _fields(schema) -> str:
    """``name: type, ...`` of a JSON schema (or a list of them), for the SVG boxes."""
    if schema is None:
        return "?"
    if isinstance(schema, list):
        return " | ".join(_fields(item) for item in schema)
    if not isinstance(schema, dict):
        return "?"
    properties = schema.get("properties") or {}
    parts = []
    for name, spec in properties.items():
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind is None and isinstance(spec, dict):
            if "$ref" in spec:
                kind = spec["$ref"].rsplit("/", 1)[-1]
            elif "anyOf" in spec:
                options = [s for s in spec["anyOf"] if isinstance(s, dict)]
                kind = "|".join(str(s.get("type", "?")) for s in options)
        parts.append(f"{name}: {kind or 'any'}")
    title = schema.get("title", "")
    return f"{title}({', '.join(parts)})" if title else ", ".join(parts)


def render_text(description: dict) -> str:
    """A plain-text program plot: every module with its type, schemas and trainable flag."""
    lines = [f"Program: {description['name']} ({description['class']})"]
    if description["description"]:
        lines.append(f"Description: {description['description']}")
    modules = description["modules"]
    lines.append(f"Modules: {len(modules)}")
    inbound = {i: [] for i in range(len(modules))}
    for source, target in description["edges"]:
        inbound[target].append(modules[source]["name"])
    for i, module in enumerate(modules):
        flag = ""
        if module["trainable"] is not None:
            flag = "  [trainable]" if module["trainable"] else "  [non-trainable]"
        lines.append("")
        lines.append(f"[{i + 1}] {module['name']} ({module['class']}){flag}")
        if inbound[i]:
            lines.append(f"    inputs from: {', '.join(inbound[i])}")
        if module["input_schema"] is not None:
            lines.append("    input schema:")
            lines.extend("      " + line for line in _dumps(module["input_schema"]).splitlines())
        if module["output_schema"] is not None:
            lines.append("    output schema:")
            lines.extend("      " + line for line in _dumps(module["output_schema"]).splitlines())
    return "\n".join(lines) + "\n"


_BOX_W, _LINE_H, _GAP_X, _GAP_Y, _PAD = 360, 18, 40, 56, 20


def _wrap_text(text: str, width: int = 52) -> list[str]:
    lines, current = [], ""
    for word in text.split(" "):
        if current and len(current) + 1 + len(word) > width:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return [line if len(line) <= width else line[: width - 1] + "…" for line in lines]


def render_svg(description: dict) -> str:
    """A self-contained SVG program plot (a layered graph) needing no Graphviz."""
    modules = description["modules"]
    count = len(modules)
    depth = [0] * count
    for _ in range(count):  # longest path from the inputs (graphs are small and acyclic)
        changed = False
        for source, target in description["edges"]:
            if depth[target] < depth[source] + 1:
                depth[target] = depth[source] + 1
                changed = True
        if not changed:
            break
    if description["kind"] == "other":
        depth = list(range(count))  # unconnected: one per row
    bodies = []
    for module in modules:
        body = [("title", f"{module['name']} ({module['class']})")]
        for label, key in (("in", "input_schema"), ("out", "output_schema")):
            if module[key] is not None:
                body += [("text", line) for line in _wrap_text(f"{label}: {_fields(module[key])}")]
        if module["trainable"] is not None:
            body.append(("badge", "Trainable" if module["trainable"] else "Non-trainable"))
        bodies.append(body)
    rows: dict[int, list[int]] = {}
    for i in range(count):
        rows.setdefault(depth[i], []).append(i)
    heights = [(len(body) + 1) * _LINE_H + 8 for body in bodies]
    widest = max((len(r) for r in rows.values()), default=1)
    width = _PAD * 2 + widest * _BOX_W + (widest - 1) * _GAP_X
    positions = {}
    y = _PAD + 30
    for level in sorted(rows):
        members = rows[level]
        row_width = len(members) * _BOX_W + (len(members) - 1) * _GAP_X
        x = (width - row_width) / 2
        for i in members:
            positions[i] = (x, y)
            x += _BOX_W + _GAP_X
        y += max(heights[i] for i in members) + _GAP_Y
    height = y - _GAP_Y + _PAD
    esc = html.escape
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="Helvetica, Arial, sans-serif" '
        'font-size="12">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="#333"/></marker></defs>',
        f'<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{_PAD}" y="{_PAD + 8}" font-size="15" font-weight="bold">'
        f"{esc(description['name'])} ({esc(description['class'])})</text>",
    ]
    for source, target in description["edges"]:
        (x1, y1), (x2, y2) = positions[source], positions[target]
        out.append(
            f'<line x1="{x1 + _BOX_W / 2:.0f}" y1="{y1 + heights[source]:.0f}" '
            f'x2="{x2 + _BOX_W / 2:.0f}" y2="{y2:.0f}" stroke="#333" stroke-width="2" '
            'marker-end="url(#arrow)"/>'
        )
    for i, body in enumerate(bodies):
        x, y = positions[i]
        out.append(f'<g class="module" data-name="{esc(modules[i]["name"])}">')
        out.append(
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{_BOX_W}" height="{heights[i]}" rx="6" '
            'fill="#f7f7f7" stroke="#222" stroke-width="1.5"/>'
        )
        out.append(
            f'<rect x="{x:.0f}" y="{y:.0f}" width="{_BOX_W}" height="{_LINE_H + 8}" rx="6" '
            'fill="#222"/>'
        )
        line_y = y + _LINE_H
        for kind, text in body:
            if kind == "title":
                out.append(
                    f'<text x="{x + 10:.0f}" y="{line_y:.0f}" fill="white" font-weight="bold">'
                    f"{esc(text)}</text>"
                )
                line_y += _LINE_H + 8
            elif kind == "badge":
                color = "#228b22" if text == "Trainable" else "#b22222"
                out.append(
                    f'<rect x="{x + 10:.0f}" y="{line_y - 13:.0f}" width="110" height="17" '
                    f'rx="3" fill="{color}"/>'
                )
                out.append(
                    f'<text x="{x + 16:.0f}" y="{line_y:.0f}" fill="white" '
                    f'font-weight="bold">{esc(text)}</text>'
                )
                line_y += _LINE_H
            else:
                out.append(f'<text x="{x + 10:.0f}" y="{line_y:.0f}">{esc(text)}</text>')
                line_y += _LINE_H
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _render_png(program, folder: str, file_name: str) -> None:
    """Synalinks' own Graphviz plot, when pydot and the ``dot`` binary are installed."""
    from synalinks.src.utils import program_visualization as visualization

    if not (visualization.check_pydot() and visualization.check_graphviz()):
        return
    visualization.plot_program(
        program,
        to_file=file_name,
        to_folder=folder,
        show_schemas=True,
        show_module_names=True,
        show_trainable=True,
        dpi=96,
    )


# == learned state ==========================================================================


def program_state(program) -> dict:
    """The program's variables as ``Program.set_state_tree`` takes them back.

    ``trainable_variables`` holds what training learns (few-shot examples, optimized
    instructions...); ``non_trainable_variables`` the rest of the program's state.
    Optimizer and metric variables are left out: they are not needed for inference.
    """
    tree = program.get_state_tree()
    return {
        "trainable_variables": tree.get("trainable_variables", {}),
        "non_trainable_variables": tree.get("non_trainable_variables", {}),
    }


def model_info(program, run_id=None) -> dict:
    trainable = list(getattr(program, "trainable_variables", None) or [])
    non_trainable = list(getattr(program, "non_trainable_variables", None) or [])
    return {
        "name": _program_name(program),
        "description": _program_description(program),
        "class": type(program).__name__,
        "num_trainable_variables": len(trainable),
        "num_non_trainable_variables": len(non_trainable),
        "num_modules": len(_modules_of(program)),
        "trainable_variables": [getattr(v, "path", "") for v in trainable],
        "synalinks_version": _synalinks_version(),
        "run_id": run_id,
        "state_tree": STATE_TREE_PATH,
    }


def restore_state(program, run_id: str, tracking_uri: str | None = None) -> dict:
    """Load ``model/state_tree.json`` of an MLflow run into ``program``; return the tree.

    ``program`` is built by the same code as the trained one (its modules may have other
    names); afterwards its trainable variables equal the trained program's.
    """
    from mlflow.artifacts import download_artifacts

    with tempfile.TemporaryDirectory(prefix="synalinks-obs-restore-") as folder:
        path = download_artifacts(
            run_id=run_id, artifact_path=STATE_TREE_PATH, dst_path=folder,
            tracking_uri=tracking_uri,
        )
        with open(path, encoding="utf-8") as handle:
            state = json.load(handle)
    program.set_state_tree(_renamed_for(program, state))
    return state


_VARIABLE_GROUPS = ("trainable_variables", "non_trainable_variables")


def _fields_by_path(tree: dict) -> dict:
    """{variable path: {field: value}} of one group of a state tree, in its order."""
    fields: dict = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}/")
            else:
                fields.setdefault(prefix.rstrip("/"), {})[key] = value

    walk(tree, "")
    return fields


def _nested(fields: dict) -> dict:
    tree: dict = {}
    for path, values in fields.items():
        node = tree
        for part in path.split("/"):
            node = node.setdefault(part, {})
        node.update(values)
    return tree


def _renamed_for(program, state):
    """``state`` with its variables renamed to ``program``'s, matched by position.

    Synalinks 0.10 matches a program built under other module names by position itself;
    0.9.x matches by path only and silently skips the rest. Renaming first gives every
    version the same result; a tree of another shape is passed on unchanged.
    """
    if not isinstance(state, dict):
        return state
    renamed = dict(state)
    for group in _VARIABLE_GROUPS:
        saved_tree = state.get(group)
        variables = getattr(program, group, None)
        if not isinstance(saved_tree, dict) or not variables:
            continue
        saved = _fields_by_path(saved_tree)
        own = _fields_by_path(_nested({v.path: dict(v.get_json()) for v in variables}))
        if set(saved) == set(own) or len(saved) != len(own):
            continue
        if any(set(a) != set(b) for a, b in zip(saved.values(), own.values())):
            continue
        renamed[group] = _nested(
            {own_path: saved[saved_path] for saved_path, own_path in zip(saved, own)}
        )
    return renamed


# == autolog: the fit()/evaluate() wrapper ==================================================

# True while a fit() or evaluate() runs with one of our Monitors: Synalinks' CallbackList
# must then not add its own built-in Monitor (that would be a second run).
_OWN_MONITOR: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "synalinks_obs_own_monitor", default=False
)
_IN_FIT: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "synalinks_obs_in_fit", default=False
)
_MARK = "__synalinks_obs_training__"


class _Patches:
    trainer = None
    originals: dict = {}
    callback_list = None
    builtin_flag = None


_PATCHES = _Patches()


def autolog_active() -> bool:
    """Whether a fit()/evaluate() without a Monitor gets one now (tracing on, autolog on)."""
    from synalinks_obs.instrument import STATE

    tracer = STATE.tracer
    return tracer is not None and bool(getattr(tracer.settings, "autolog_training", True))


def _autolog_monitor() -> Monitor:
    from synalinks_obs.instrument import STATE

    tracer = STATE.tracer
    monitor = Monitor(tracking_uri=tracer.destination.tracking_uri if tracer else None)
    monitor.autolog = True
    return monitor


def _flatten(callbacks) -> list:
    if callbacks is None:
        return []
    if isinstance(callbacks, (list, tuple)):
        out = []
        for item in callbacks:
            out.extend(_flatten(item))
        return out
    return [callbacks]


def _builtin_monitor_class():
    module = sys.modules.get("synalinks.src.callbacks.monitor")
    return getattr(module, "Monitor", None)


def _plan(program, callbacks, kind: str):
    """-> (callbacks to pass, our monitors); None to leave the call alone."""
    from synalinks.src.callbacks.callback_list import CallbackList

    if kind == "evaluate" and (isinstance(callbacks, CallbackList) or _IN_FIT.get()):
        return None  # validation inside fit(): the fit's Monitor handles it
    given = callbacks.callbacks if isinstance(callbacks, CallbackList) else _flatten(callbacks)
    ours = [cb for cb in given if isinstance(cb, Monitor)]
    if ours:
        return callbacks, ours
    builtin = _builtin_monitor_class()
    if builtin is not None and any(isinstance(cb, builtin) for cb in given):
        return None  # the user's own synalinks.callbacks.Monitor wins
    if not autolog_active():
        return None
    monitor = _autolog_monitor()
    if isinstance(callbacks, CallbackList):
        monitor.set_program(program)
        monitor.set_params(callbacks.params)
        callbacks.callbacks.append(monitor)
        return callbacks, [monitor]
    return given + [monitor], [monitor]


def _wrap(original, kind: str):
    signature = inspect.signature(original)

    @functools.wraps(original)
    async def wrapper(self, *args, **kwargs):
        try:
            bound = signature.bind(self, *args, **kwargs)
            callbacks = bound.arguments.get("callbacks")
            plan = _plan(self, callbacks, kind)
        except Exception as exc:
            if not isinstance(exc, TypeError):
                _logger.warning(
                    "synalinks-obs: cannot set up the training log of %s() (%s: %s); "
                    "it runs unlogged", kind, type(exc).__name__, _first_line(exc),
                )
            plan = None
        if plan is None:
            return await original(self, *args, **kwargs)
        new_callbacks, monitors = plan
        if new_callbacks is not callbacks:
            bound.arguments["callbacks"] = new_callbacks
        own_token = _OWN_MONITOR.set(True)
        fit_token = _IN_FIT.set(True) if kind == "fit" else None
        try:
            return await original(*bound.args, **bound.kwargs)
        except BaseException as error:
            for monitor in monitors:
                try:
                    monitor._abort(error)
                except Exception:
                    pass
            raise
        finally:
            if fit_token is not None:
                _IN_FIT.reset(fit_token)
            _OWN_MONITOR.reset(own_token)

    setattr(wrapper, _MARK, True)
    return wrapper


def install() -> None:
    """Wrap ``Trainer.fit`` / ``Trainer.evaluate`` (idempotent, reversible)."""
    with _LOCK:
        if _PATCHES.trainer is not None:
            return
        from synalinks.src.callbacks import callback_list
        from synalinks.src.trainers.trainer import Trainer

        for name, kind in (("fit", "fit"), ("evaluate", "evaluate")):
            original = Trainer.__dict__.get(name)
            if original is None or getattr(original, _MARK, False):
                continue
            _PATCHES.originals[name] = original
            setattr(Trainer, name, _wrap(original, kind))
        _PATCHES.trainer = Trainer
        flag = callback_list.__dict__.get("is_observability_enabled")
        if flag is not None:

            def is_observability_enabled():
                return flag() and not _OWN_MONITOR.get()

            is_observability_enabled.__wrapped__ = flag
            callback_list.is_observability_enabled = is_observability_enabled
            _PATCHES.callback_list = callback_list
            _PATCHES.builtin_flag = flag


def uninstall() -> None:
    """Put Synalinks' original ``fit`` / ``evaluate`` back exactly."""
    with _LOCK:
        trainer = _PATCHES.trainer
        if trainer is None:
            return
        for name, original in _PATCHES.originals.items():
            setattr(trainer, name, original)
        _PATCHES.originals = {}
        if _PATCHES.callback_list is not None:
            _PATCHES.callback_list.is_observability_enabled = _PATCHES.builtin_flag
        _PATCHES.callback_list = _PATCHES.builtin_flag = None
        _PATCHES.trainer = None


def is_installed() -> bool:
    return _PATCHES.trainer is not None


# == small helpers ==========================================================================


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


def _first_line(exc: BaseException) -> str:
    try:
        text = str(exc).strip().splitlines()
    except Exception:
        return ""
    return text[0][:300] if text else ""


def _dumps(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def _file_name(name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return safe or "program"

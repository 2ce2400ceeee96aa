"""The files a training run uploads: the program plot and the program's state.

``log_program_plot`` writes ``program_plots/<program>.txt`` and ``.svg`` (and ``.png``
when Graphviz and pydot are installed); ``log_program_model`` writes
``model/state_tree.json`` (masked like spans; the few-shot examples kept or left out)
and ``model/model_info.json``; ``upload`` sends a folder to the run's artifact store,
where the first failure is one warning and the run's later uploads are skipped.
"""

from __future__ import annotations

import json
import os
import tempfile

from synalinks_obs.training import privacy
from synalinks_obs.training.mlflow_run import TrainingRun, artifact_failure_message
from synalinks_obs.training.plot import render_png, render_svg, render_text
from synalinks_obs.training.program import describe_program, program_name
from synalinks_obs.training.state import model_info

PLOTS_DIR = "program_plots"


def log_program_plot(run: TrainingRun, program, guard, send) -> None:
    """``program_plots/<program>.txt``, ``.svg`` (and ``.png`` with Graphviz)."""
    name = _file_name(program_name(program))
    description = run.policy.value(describe_program(program))
    with tempfile.TemporaryDirectory(prefix="synalinks-obs-plot-") as folder:
        _write(os.path.join(folder, f"{name}.txt"), render_text(description))
        _write(os.path.join(folder, f"{name}.svg"), render_svg(description))
        guard("png plot", render_png, program, folder, f"{name}.png")
        send(folder, PLOTS_DIR)


def log_program_model(run: TrainingRun, program, keep, send) -> None:
    """``model/state_tree.json`` (masked; few-shot examples kept or not) and ``model_info.json``."""
    state = privacy.stored_state(run.policy, program, keep)
    info = run.policy.value(model_info(program, run.run_id if run else None))
    with tempfile.TemporaryDirectory(prefix="synalinks-obs-model-") as folder:
        _write(os.path.join(folder, "state_tree.json"), _dumps(state))
        _write(os.path.join(folder, "model_info.json"), _dumps(info))
        send(folder, "model")


def upload(run: TrainingRun | None, folder: str, artifact_path: str, warn) -> bool:
    """Upload a folder; the first failure is one warning and later uploads are skipped."""
    if run is None or run.artifacts_failed:
        return False
    try:
        run.client.log_artifacts(run.run_id, folder, artifact_path)
        return True
    except Exception as exc:
        run.artifacts_failed = True  # one warning per run; later uploads are skipped
        warn("artifacts", artifact_failure_message(run, exc), once=False)
        return False


def _dumps(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def _file_name(name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return safe or "program"

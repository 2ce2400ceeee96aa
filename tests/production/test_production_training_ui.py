"""The MLflow UI shows each training example's reward in the Traces table (headless Chromium).

The training example (``examples/train_qa.py``: RandomFewShot, 2 epochs, offline LM that
always answers "Paris.") runs traced into a real ``mlflow server``; its autolog run logs
each example's ``exact_match`` reward as feedback and the expected answer as an
expectation on the example's trace. Debian's ``chromium`` (driven over the DevTools
protocol, tests/support/cdp.py) opens the run's experiment's Traces list: the feedback and
expectation are columns of the table, one value per trace, the same values MLflow's
client reads. The screenshot is kept as ``test-artifacts/mlflow-training-feedback.png``
(the README's picture is a copy of it).
"""

from __future__ import annotations

import asyncio
import collections
import importlib
import json
import sys
from pathlib import Path

import pytest
from cdp import Browser
from test_production_browser import CLOSE_OVERLAYS, LIST_ROWS, _chromium
from traces import load_traces

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
EXPERIMENT = "qa_training"  # the example program's name: its autolog run's experiment


def _run_training_example(uri):
    import synalinks_obs

    examples = str(REPO / "examples")
    sys.path.insert(0, examples)
    try:
        train_qa = importlib.import_module("train_qa")
        synalinks_obs.enable(tracking_uri=uri, experiment_name="ui_training_tracing")
        try:
            asyncio.run(train_qa.main())
            assert synalinks_obs.flush(60)
        finally:
            synalinks_obs.disable()
    finally:
        sys.path.remove(examples)


@pytest.mark.server
def test_mlflow_ui_shows_reward_feedback_in_the_traces_table(mlflow_server, tmp_path):
    chromium = _chromium()
    _run_training_example(mlflow_server.uri)
    traces = load_traces(mlflow_server.uri, EXPERIMENT)
    scored = collections.Counter()
    for trace in traces:
        [reward] = [a for a in trace.info.assessments if a.name == "exact_match"]
        expected = next(a for a in trace.info.assessments if a.name == "expected_output").value
        assert reward.value == (1.0 if json.loads(trace.data.response) == expected else 0.0)
        scored[f"{reward.value:g}"] += 1
    assert set(scored) == {"0", "1"}, scored  # the offline LM answers "Paris." to every question
    url = f"{mlflow_server.uri}/#/experiments/{traces[0].info.experiment_id}/traces"

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "mlflow-training-feedback.png"
    shot.unlink(missing_ok=True)
    with Browser(chromium, tmp_path / "chromium-profile") as browser:
        page = browser.page()
        # Wide enough for the assessment columns, which come after Input, Output and Tags.
        page.navigate(url, width=2200, height=1000)
        missing = page.wait_for_text(["exact_match", "expected_output"], timeout=120)
        page.evaluate(CLOSE_OVERLAYS)
        rows = json.loads(page.evaluate(LIST_ROWS) or "[]")
        (ARTIFACTS / "mlflow-training-feedback.html").write_text(page.html())
        shot.write_bytes(page.screenshot())
    assert not missing, f"no feedback columns in the Traces table (see {shot})"
    header, *listed = rows
    reward_column = header.index("exact_match")
    assert "expected_output" in header
    assert len(listed) == min(len(traces), 25)  # the table's first page
    shown = collections.Counter(row[reward_column] for row in listed)
    if len(traces) <= 25:
        assert shown == scored, (shown, scored)
    else:
        assert set(shown) <= set(scored)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, f"{shot.name} looks blank"

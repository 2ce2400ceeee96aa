"""The MLflow UI shows our traces as users expect: checked in a real headless Chromium.

The agent example (``examples/agent.py``: a FunctionCallingAgent with a calculator Tool,
offline LM) runs traced into a real ``mlflow server`` on 127.0.0.1; Debian's ``chromium``
(driven over the DevTools protocol, tests/support/cdp.py) then opens the experiment's
Traces list, where a user starts: one row, its Input cell the question itself, no
program-building (schema) row; and the trace itself (the Traces tab with the trace
selected), waiting until every span name of the trace is on the page. Screenshots and
DOMs of both pages are kept under ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from cdp import Browser
from traces import load_traces, render

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
QUESTION = "How much is 152648 + 485?"
# The Traces list's rows as the user reads them: the text of each cell, header first.
LIST_ROWS = """JSON.stringify([...document.querySelectorAll('[role=row]')].map(row =>
    [...row.querySelectorAll('[role=cell],[role=columnheader]')].map(c => c.innerText.trim())))"""
# MLflow's first-visit overlays (assistant panel, feature tip), closed for the screenshot.
CLOSE_OVERLAYS = """[...document.querySelectorAll(
    'button[aria-label="Close guidance"], button[aria-label="Close"]')].forEach(b => b.click())"""


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    reason = "no chromium on PATH (Debian: apt-get install chromium)"
    if os.environ.get("TEST_REQUIRE_BROWSER"):
        pytest.fail(f"a browser is required (TEST_REQUIRE_BROWSER=1): {reason}")
    pytest.skip(reason)


def _run_agent_example(uri, experiment):
    import synalinks_obs

    examples = str(REPO / "examples")
    sys.path.insert(0, examples)
    try:
        agent = importlib.import_module("agent")
        synalinks_obs.enable(tracking_uri=uri, experiment_name=experiment)
        try:
            asyncio.run(agent.main(QUESTION))
            assert synalinks_obs.flush(60)
        finally:
            synalinks_obs.disable()
    finally:
        sys.path.remove(examples)


@pytest.mark.server
def test_mlflow_ui_shows_the_agent_trace(mlflow_server, tmp_path):
    chromium = _chromium()
    _run_agent_example(mlflow_server.uri, "ui_agent")
    # Program building went to the companion experiment, out of the app's Traces list.
    traces = load_traces(mlflow_server.uri, "ui_agent")
    assert len(traces) == 1, [render(t, attributes=False) for t in traces]
    building = load_traces(mlflow_server.uri, "ui_agent-build")
    assert building and all(
        s.attributes.get("synalinks.is_symbolic") for t in building for s in t.data.spans
    )
    trace = traces[0]
    assert not any(s.attributes.get("synalinks.is_symbolic") for s in trace.data.spans)
    # What the list shows, as MLflow's server stored it: the call's own data, and tags.
    assert json.loads(trace.info.request_preview) == {"query": QUESTION}
    assert json.loads(trace.info.response_preview)["answer"]
    assert trace.info.tags["synalinks.program"] == "calculator_agent"
    assert trace.info.tags["synalinks.trace_kind"] == "call"
    names = sorted({span.name for span in trace.data.spans})
    types = {span.span_type for span in trace.data.spans}
    assert {"AGENT", "TOOL", "CHAT_MODEL"} <= types, render(trace, attributes=False)
    trace_id = trace.info.trace_id
    experiment_url = f"{mlflow_server.uri}/#/experiments/{trace.info.experiment_id}/traces"
    url = f"{experiment_url}?selectedEvaluationId={trace_id}&traceId={trace_id}"

    ARTIFACTS.mkdir(exist_ok=True)
    list_shot = ARTIFACTS / "mlflow-traces-list.png"
    screenshot = ARTIFACTS / "mlflow-trace-view.png"
    list_shot.unlink(missing_ok=True)
    screenshot.unlink(missing_ok=True)
    with Browser(chromium, tmp_path / "chromium-profile") as browser:
        page = browser.page()
        # The Traces list, where a user starts.
        page.navigate(experiment_url)
        list_missing = page.wait_for_text([QUESTION], timeout=120)
        page.evaluate(CLOSE_OVERLAYS)
        rows = json.loads(page.evaluate(LIST_ROWS) or "[]")
        (ARTIFACTS / "mlflow-traces-list.html").write_text(page.html())
        list_shot.write_bytes(page.screenshot())
        list_text = page.text()
        # The trace itself.
        page.navigate(url)
        missing = page.wait_for_text(names, timeout=120)
        (ARTIFACTS / "mlflow-trace-view.html").write_text(page.html())
        screenshot.write_bytes(page.screenshot())
        text = page.text()
    assert not list_missing, f"the question is not in the Traces list (see {list_shot})"
    header, *listed = rows
    assert header[1:4] == ["Time", "Input", "Output"], rows
    assert len(listed) == 1, f"one row, no program-building row: {rows}"
    (row,) = listed
    assert json.loads(row[header.index("Input")]) == {"query": QUESTION}  # the whole cell
    assert "additionalProperties" not in list_text and '"properties"' not in list_text
    assert not missing, f"span names not on the trace page: {missing} (see test-artifacts/)"
    assert trace_id[3:10] in text  # the trace header shows the short trace id
    for shot in (list_shot, screenshot):
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) > 20_000, f"{shot.name} looks blank"

"""The MLflow UI shows our traces as users expect: checked in a real headless Chromium.

The agent example (``examples/agent.py``: a FunctionCallingAgent with a calculator Tool,
offline LM) runs traced into a real ``mlflow server`` on 127.0.0.1; Debian's ``chromium``
then opens that trace in the MLflow UI (the experiment's Traces tab with the trace
selected; driven over the DevTools protocol, tests/cdp.py), waits until every span name
of the trace is on the page, and takes a screenshot. The screenshot and the DOM are kept
under ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import sys
from pathlib import Path

import pytest
from cdp import Browser
from traces import load_traces, render

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"


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
            asyncio.run(agent.main("How much is 152648 + 485?"))
            assert synalinks_obs.flush(60)
        finally:
            synalinks_obs.disable()
    finally:
        sys.path.remove(examples)


@pytest.mark.server
def test_mlflow_ui_shows_the_agent_trace(mlflow_server, tmp_path):
    chromium = _chromium()
    _run_agent_example(mlflow_server.uri, "ui_agent")
    traces = [
        t for t in load_traces(mlflow_server.uri, "ui_agent")
        if not any(s.attributes.get("synalinks.is_symbolic") for s in t.data.spans)
    ]
    assert len(traces) == 1, [render(t, attributes=False) for t in traces]
    trace = traces[0]
    names = sorted({span.name for span in trace.data.spans})
    types = {span.span_type for span in trace.data.spans}
    assert {"AGENT", "TOOL", "CHAT_MODEL"} <= types, render(trace, attributes=False)
    trace_id = trace.info.trace_id
    url = (f"{mlflow_server.uri}/#/experiments/{trace.info.experiment_id}/traces"
           f"?selectedEvaluationId={trace_id}&traceId={trace_id}")

    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "mlflow-trace-view.png"
    screenshot.unlink(missing_ok=True)
    with Browser(chromium, tmp_path / "chromium-profile") as browser:
        page = browser.page()
        page.navigate(url)
        missing = page.wait_for_text(names, timeout=120)
        (ARTIFACTS / "mlflow-trace-view.html").write_text(page.html())
        screenshot.write_bytes(page.screenshot())
        text = page.text()
    assert not missing, f"span names not on the trace page: {missing} (see test-artifacts/)"
    assert trace_id[3:10] in text  # the trace header shows the short trace id
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000, "the screenshot looks blank"

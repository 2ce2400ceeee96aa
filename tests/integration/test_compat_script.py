"""``scripts/compat-synalinks-tests`` is a real gate: it fails when tracing did not start.

Identical outcomes of Synalinks' suite with and without ``SYNALINKS_OBSERVABILITY=1``
prove nothing if the traced run traced nothing. Here the script runs a tiny part of that
suite (``--select``, one small test file, one pytest worker) with the tests' own venv
(``--no-install``) twice, side by side:

- activation broken on purpose: a ``sitecustomize`` on ``PYTHONPATH`` calls
  ``synalinks_obs.disable()`` right after the start-up hook ran, so tracing never starts
  in the traced run (as with a missing ``.pth`` file), while the tests still pass the
  same way: the script must exit non-zero, saying the worker wrote no spans;
- activation intact (the control): the same command passes, with spans counted from the
  store the traced run used.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "compat-synalinks-tests"
PART = "modules/core/identity_test.py"  # four tests, a dozen spans when traced


def start(tmp_path: Path, name: str, extra_env: dict) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SYNALINKS_OBS"))}
    env.update({"TEST_VENV": sys.prefix, "COMPAT_WORK": str(tmp_path / name), "PYTEST_WORKERS": "1",
                **extra_env})
    log = open(tmp_path / f"{name}.out", "w")
    return subprocess.Popen([str(SCRIPT), "--no-install", "--select", PART], env=env, cwd=tmp_path,
                            stdout=log, stderr=subprocess.STDOUT, text=True)


def test_the_suite_check_fails_when_activation_is_broken_and_passes_when_not(tmp_path):
    breaker = tmp_path / "breaker"
    breaker.mkdir()
    (breaker / "sitecustomize.py").write_text(
        "import synalinks_obs\nsynalinks_obs.disable()  # tracing never starts\n")
    broken = start(tmp_path, "broken", {"PYTHONPATH": str(breaker)})
    control = start(tmp_path, "control", {})
    assert broken.wait(timeout=900) is not None and control.wait(timeout=900) is not None
    broken_out = (tmp_path / "broken.out").read_text()
    control_out = (tmp_path / "control.out").read_text()

    assert broken.returncode == 1, broken_out
    assert "FAILED: the traced run wrote fewer than 1 spans in worker(s) gw0 (0)" in broken_out, broken_out
    # Without the span count the run would have passed: same outcomes in both runs.
    assert "identical outcomes" in broken_out, broken_out
    spans = json.loads((tmp_path / "broken" / "spans.json").read_text())
    assert spans["spans"] == 0 and spans["short"] == {"gw0": 0}, spans

    assert control.returncode == 0, control_out
    assert "identical outcomes" in control_out, control_out
    spans = json.loads((tmp_path / "control" / "spans.json").read_text())
    assert spans["workers"]["gw0"]["spans"] >= 4 and not spans["short"], spans
    report = (tmp_path / "control" / "report.md").read_text()
    assert "**Identical outcomes**" in report and f"{spans['spans']} spans" in report, report

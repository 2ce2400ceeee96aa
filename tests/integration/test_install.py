"""A fresh clone plus only the README's install commands traces an app of the user's own.

The commands are read from the README's Install section (the ``bash`` block after the
``install-commands`` marker), so the README cannot drift from what is tested. The clone
is this checkout's working tree (every tracked or new, not ignored, file: what ``git
clone`` of it would give, with uncommitted changes included); a fresh venv of this
Python runs the ``python -m pip install ...`` lines from the clone's parent directory, as
a user would, through the package registries configured for pip. A throw-away
two-Generator app (``user_app.APP``, fake LLM) then runs with that venv's python under
``SYNALINKS_OBSERVABILITY=1`` and under the launcher, and its traces are read back from
the stores with MLflow's client.

Slow by nature (a fresh install of Synalinks and MLflow: a few minutes).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from traces import load_traces, span_tree
from user_app import APP
from wheel_env import REPO, clean_env

INSTALL_TIMEOUT = 1800
MARKER = "<!-- install-commands"


def readme_install_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    start = text.index("```bash", text.index(MARKER)) + len("```bash")
    block = text[start:text.index("```", start)]
    return [line.strip() for line in block.strip().splitlines() if line.strip()]


def _clone_working_tree(target: Path) -> None:
    """The files ``git clone`` would give, taken from the working tree."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


def test_readme_install_commands_trace_a_users_app(fake_llm, tmp_path):
    commands = readme_install_commands()
    assert commands[0].startswith("git clone ") and commands[0].split()[-1] == "synalinks-obs", commands
    assert all(c.startswith("python -m pip install ") for c in commands[1:]), commands
    _clone_working_tree(tmp_path / "synalinks-obs")
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", venv], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    for command in commands[1:]:
        argv = [python, *shlex.split(command)[1:]]
        out = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True,
                             env=clean_env(), timeout=INSTALL_TIMEOUT)
        assert out.returncode == 0, f"{command}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"

    app = tmp_path / "my_app.py"
    app.write_text(APP)
    env_db, run_db = (f"sqlite:///{tmp_path / name}" for name in ("env.db", "run.db"))
    env = {"SYNALINKS_HOME": tmp_path / "home", "FAKE_LLM": fake_llm.base_url}
    runs = [
        subprocess.Popen([python, app], cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE,
                         env=clean_env(SYNALINKS_OBSERVABILITY="1", MLFLOW_TRACKING_URI=env_db, **env)),
        subprocess.Popen([python, "-m", "synalinks_obs.run", "--tracking-uri", run_db, app], cwd=tmp_path,
                         text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(**env)),
    ]
    for process, uri in zip(runs, (env_db, run_db), strict=True):
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0 and err == "", err
        assert len(out.splitlines()) == 4, out  # three answers, then the last line
        trees = [span_tree(t) for t in load_traces(uri, "synalinks_traces")]
        programs = [t for t in trees if t["name"] == "Functional:two_generators"]
        assert len(programs) == 3, [t["name"] for t in trees]
        for tree in programs:
            first, second = tree["children"]
            assert (first["name"], first["span_type"]) == ("Generator:first", "LLM")
            assert (second["name"], second["span_type"]) == ("Generator:second", "LLM")
            assert first["children"][0]["span_type"] == "CHAT_MODEL"
    # The start-up hook came from the wheel install, not from the clone.
    site = subprocess.run([python, "-c", "import synalinks_obs, os; print(os.path.dirname(synalinks_obs.__file__))"],
                          capture_output=True, text=True, env=clean_env(), check=True).stdout.strip()
    assert str(venv) in site and (Path(site).parent / "synalinks_obs.pth").is_file()

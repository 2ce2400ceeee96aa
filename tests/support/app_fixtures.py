"""Fixtures of the tests that run real app processes (imported by tests/conftest.py).

    wheel_python (session)  an interpreter running synalinks-obs from its installed wheel
                            (the test venv itself, else a throw-away overlay venv).
    run_py       (function) ``run_py(*args, env=..., cwd=..., input=...)``: a subprocess
                            of that python in a user's clean environment (``clean_env``).
    zygote       (session)  ``zygote.run(name, traced, **env)``: a run of the reliability
                            tests' app (``tests/support/app_processes.py``), forked.

Not a ``conftest.py`` of its own: a second module named ``conftest`` would hide
``tests/conftest.py`` from the tests that import it (``from conftest import ...``).
"""

import subprocess
import sys

import pytest
from wheel_env import TIMEOUT, clean_env, overlay_venv, wheel_layout


@pytest.fixture(scope="session")
def wheel_python(tmp_path_factory):
    """An interpreter running synalinks-obs from its installed wheel, .pth active."""
    layout = wheel_layout(sys.executable)
    if layout and layout["ok"]:
        return sys.executable
    python = overlay_venv(tmp_path_factory.mktemp("wheel-venv"))
    layout = wheel_layout(python)
    assert layout and layout["ok"], f"the overlay venv does not run the wheel: {layout}"
    return python


@pytest.fixture
def run_py(wheel_python, tmp_path):
    """``run_py(*args, env=..., cwd=..., input=...)``: a subprocess of the wheel's python."""
    home = tmp_path / "synalinks-home"

    def run(*args, env=None, cwd=None, input=None, timeout=TIMEOUT, python=None):
        full_env = clean_env(SYNALINKS_HOME=home, **(env or {}))
        return subprocess.run(
            [python or wheel_python, *map(str, args)],
            capture_output=True, text=True, env=full_env, cwd=cwd or tmp_path,
            input=input, timeout=timeout,
        )

    return run


@pytest.fixture(scope="session")
def zygote(tmp_path_factory):
    """Runs of ``app_processes.APP``, forked from one process that imported Synalinks."""
    from app_processes import Zygote

    zygote = Zygote(tmp_path_factory.mktemp("zygote"))
    yield zygote
    zygote.close()

"""The interpreter under test: synalinks-obs installed from its WHEEL (the ``.pth`` file
must come from the wheel, not from an editable install), and a user's clean environment.

- ``clean_env(**extra)``: the parent's environment minus anything of ours, MLflow's or a
  ``PYTHONPATH``, plus ``extra`` (``None`` removes a variable);
- ``wheel_layout(python)``: where ``python`` imports synalinks_obs from, and whether the
  wheel's ``.pth`` is in its site-packages;
- ``overlay_venv(root)``: a venv with the wheel built from this checkout, seeing the
  running interpreter's packages (when the test venv has no wheel install).

The fixtures ``wheel_python`` and ``run_py`` (tests/support/app_fixtures.py) use them.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 300

def clean_env(**extra):
    """The parent's environment minus anything of ours, MLflow's or a PYTHONPATH."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SYNALINKS_OBS", "_SYNALINKS_OBS", "MLFLOW_", "PYTEST_"))
        and k not in ("PYTHONPATH", "PYTHONSTARTUP", "PYTHONVERBOSE")
    }
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    # A fresh sqlite store's schema migration can outlast the default 10 s exit flush on a
    # loaded 2-core CI machine; the tests are about where spans land, not that bound.
    env["SYNALINKS_OBS_FLUSH_TIMEOUT"] = "180"
    env.update({k: str(v) for k, v in extra.items() if v is not None})
    for k, v in extra.items():
        if v is None:
            env.pop(k, None)
    return env


def wheel_layout(python):
    """Where ``python`` imports synalinks_obs from, and whether the wheel's .pth is there."""
    code = (
        "import json, os, sysconfig, synalinks_obs; "
        "d = os.path.dirname(os.path.dirname(os.path.abspath(synalinks_obs.__file__))); "
        "print(json.dumps({'dir': d, 'pth': os.path.isfile(os.path.join(d, 'synalinks_obs.pth')), "
        "'site': [os.path.realpath(sysconfig.get_path(k)) for k in ('purelib', 'platlib')]}))"
    )
    out = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, env=clean_env(), timeout=60
    )
    if out.returncode != 0:
        return None
    layout = json.loads(out.stdout)
    layout["ok"] = layout["pth"] and os.path.realpath(layout["dir"]) in layout["site"]
    return layout


def overlay_venv(root):
    """A venv with the wheel built from this checkout, seeing the test venv's packages.

    The venv's own site-packages holds synalinks-obs, installed from the wheel (with its
    .pth); a path-only ``.pth`` appends the running interpreter's site-packages so
    synalinks and mlflow are importable without reinstalling them. Path lines of the
    parent's .pth files (an editable install of synalinks-obs) are not processed.
    """
    # Build from a copy: setuptools builds in the source tree (build/), and xdist workers
    # may each be building at the same moment.
    source = root / "source"
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "src", "sitecustomize_pkg"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
        elif (REPO / name).exists():
            source.mkdir(exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    dist = root / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", dist, source],
        check=True, timeout=TIMEOUT, env=clean_env(),
    )
    wheel = next(dist.glob("synalinks_obs-*.whl"))
    venv = root / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", venv], check=True, timeout=TIMEOUT)
    python = venv / "bin" / "python"
    site_dir = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True, env=clean_env(),
    ).stdout.strip()
    parent = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    Path(site_dir, "_parent_env.pth").write_text("\n".join(sorted(parent)) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", wheel],
        check=True, timeout=TIMEOUT, env=clean_env(),
    )
    return str(python)

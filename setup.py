"""Build hook: the start-up files that pyproject.toml alone cannot put in the wheel.

- ``src/synalinks_obs.pth`` and ``src/synalinks_obs.start`` go to the ROOT of the wheel
  (purelib, next to the ``synalinks_obs`` package): ``site`` runs the ``.pth`` line at every
  interpreter start (the ``.start`` file is its PEP 829 successor, read by Python 3.15+
  instead of the ``.pth`` import line). ``data_files`` cannot do this (it installs under
  the prefix, not into site-packages), so they are copied into ``build_lib``, whose whole
  tree becomes the wheel.
- ``sitecustomize_pkg/sitecustomize.py`` goes into the package as
  ``synalinks_obs/_sitecustomize/sitecustomize.py``, where ``python -m synalinks_obs.run``
  finds it in an installed wheel (a directory put on ``PYTHONPATH``, never a package).

All other metadata lives in pyproject.toml.
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

# (source in the repository, destination relative to the wheel root)
STARTUP_FILES = (
    ("src/synalinks_obs.pth", "synalinks_obs.pth"),
    ("src/synalinks_obs.start", "synalinks_obs.start"),
    ("sitecustomize_pkg/sitecustomize.py", "synalinks_obs/_sitecustomize/sitecustomize.py"),
)


class build_py_with_startup_files(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install runs from src/: no .pth of ours there
        for source, target in STARTUP_FILES:
            destination = os.path.join(self.build_lib, target)
            self.mkpath(os.path.dirname(destination))
            self.copy_file(source, destination, preserve_mode=False)

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        if getattr(self, "editable_mode", False):
            return outputs
        return outputs + [os.path.join(self.build_lib, target) for _, target in STARTUP_FILES]


setup(cmdclass={"build_py": build_py_with_startup_files})

"""pytest plugin of the traced run of scripts/compat-synalinks-tests: one experiment per worker.

Loaded with ``-p compat_worker`` (the script puts this directory on ``PYTHONPATH``).
Imported when pytest starts in each process, before Synalinks' tests import Synalinks
(which is when start-up activation reads its settings), it names the process's tracing
experiment after its pytest-xdist worker (``synalinks_suite-gw0``, ``-gw1``...; ``-main``
without xdist), so that the script can count the spans each worker wrote in the store
and fail when one of them wrote fewer than the minimum (tracing did not start there).
"""

import os

BASE = os.environ.get("COMPAT_EXPERIMENT_BASE", "synalinks_suite")
os.environ["MLFLOW_EXPERIMENT_NAME"] = f"{BASE}-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"

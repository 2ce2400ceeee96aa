"""synalinks-obs' ``sitecustomize``, put first on ``PYTHONPATH`` by ``python -m synalinks_obs.run``.

Every Python process the launched app starts (with an interpreter that has synalinks-obs
installed) imports this module at start-up, from ``site``. It

1. runs the ``sitecustomize`` the process would have run without us (the next one on
   ``sys.path``: the user's, a distribution's, ...), exactly once, reporting its errors as
   ``site`` would ("Error in sitecustomize; ..."), and leaves it in
   ``sys.modules["sitecustomize"]``;
2. removes its own directory from ``sys.path`` (``PYTHONPATH`` keeps it, so grandchildren
   are covered too);
3. activates tracing as ``SYNALINKS_OBSERVABILITY`` says (the launcher sets it to 1),
   through the same idempotent bootstrap as the ``.pth`` file: installing the import hook
   only, nothing heavy until the app imports ``synalinks``.

The wheel ships a copy as ``synalinks_obs/_sitecustomize/sitecustomize.py``.
"""

import os
import sys


def _same_dir(entry, directory):
    try:
        return os.path.abspath(entry or os.curdir) == directory
    except (TypeError, ValueError, OSError):
        return False


def _chain_to_next_sitecustomize():
    here = os.path.dirname(os.path.abspath(__file__))
    ours = sys.modules.get(__name__)
    sys.path[:] = [entry for entry in sys.path if not _same_dir(entry, here)]
    sys.modules.pop("sitecustomize", None)
    try:
        import sitecustomize  # noqa: F401  (the next one on sys.path, if any)
    except ImportError as exc:
        if exc.name != "sitecustomize":
            _report(exc)
    except Exception as exc:
        _report(exc)
    finally:
        if sys.modules.get("sitecustomize") is None:
            sys.modules["sitecustomize"] = ours


def _report(exc):
    """What ``site.execsitecustomize`` prints for a failing sitecustomize."""
    if sys.flags.verbose:
        sys.excepthook(type(exc), exc, exc.__traceback__)
    else:
        sys.stderr.write(
            "Error in sitecustomize; set PYTHONVERBOSE for traceback:\n"
            f"{type(exc).__name__}: {exc}\n"
        )


def _activate():
    try:
        from synalinks_obs import _bootstrap
    except ImportError:
        return  # synalinks-obs is not importable by this interpreter: nothing to do
    _bootstrap.run(source="run")


if __name__ == "sitecustomize":
    _chain_to_next_sitecustomize()
    _activate()

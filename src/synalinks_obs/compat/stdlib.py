"""The standard library's private or low-level names synalinks-obs uses, with fallbacks.

- ``threading._register_atexit``: run the exit flush *before* Python joins non-daemon
  threads (no thread can be started later); fallback ``atexit``.
- ``runpy._run_module_as_main``: exactly what ``python -m`` runs, for the launcher;
  fallback ``runpy.run_module(..., alter_sys=True)``.
- ``os._exit`` (documented, but low-level): the exporter process leaves without the
  interpreter's teardown once its last answer is out.

``_thread`` (a documented module) is used directly by start-up code, which must stay
cheap; only its documented names are used.
"""

from __future__ import annotations

import sys

from synalinks_obs.compat import note_fallback


def register_before_thread_join(function) -> bool:
    """Call ``function`` at interpreter exit before non-daemon threads are joined; False
    when that is not possible (the caller then uses ``atexit``)."""
    import threading

    register = getattr(threading, "_register_atexit", None)
    if register is None:
        note_fallback(
            "threading._register_atexit",
            "the exit flush runs from atexit, after non-daemon threads were joined",
        )
        return False
    try:
        register(function)
    except RuntimeError:  # already shutting down
        return False
    return True


def run_module_as_main(name: str) -> None:
    """Run module ``name`` as ``python -m name`` would."""
    import runpy

    run_as_main = getattr(runpy, "_run_module_as_main", None)
    if run_as_main is not None:
        run_as_main(name, alter_argv=True)
        return
    note_fallback(
        "runpy._run_module_as_main", "the launcher runs -m targets with runpy.run_module"
    )
    runpy.run_module(name, run_name="__main__", alter_sys=True)


def exit_now(status: int) -> None:
    """Leave the process at once, without the interpreter's teardown."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    import os

    os._exit(status)

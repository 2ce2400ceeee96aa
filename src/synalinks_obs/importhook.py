"""A post-import hook: run a callback the moment a given module has been imported.

``when_imported("synalinks", callback)`` installs a meta-path finder that lets the normal
import machinery find and execute ``synalinks``, then calls ``callback(module)`` right
after the module body has run. If the module is already imported the callback runs at
once. Pitfalls handled here (the ones wrapt's ``importer.py`` documents):

- the finder does not recurse into itself while delegating to the other finders;
- the callback runs exactly once per install, even if the import is retried;
- a failing callback never makes the import fail (``reporting.internal_error``: logged,
  or raised in strict mode);
- the finder is removable, so ``uninstrument()`` leaves ``sys.meta_path`` clean.

An optional ``before()`` runs once when the import *starts* (the finder is asked for the
module), under the same guard: tracing uses it to start work that can overlap the import.

The finders are kept in ``RUNTIME.import_hooks``. This module runs at interpreter
start-up (the ``.pth`` bootstrap installs the finder), so at module level it imports only
what the interpreter has already loaded (``sys``, ``_thread``): ``importlib.util`` is
imported when first needed. The finder and loader are duck-typed (the import system only
calls ``find_spec`` / ``create_module`` / ``exec_module``).
"""

import sys
from _thread import RLock, get_ident

from synalinks_obs.runtime import RUNTIME


class _CallbackLoader:
    """Wraps the real loader: executes the module, then fires the finder's callback."""

    def __init__(self, finder: "PostImportFinder", loader):
        self._finder = finder
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        self._finder.fire(module)

    def __getattr__(self, name):  # get_code, get_source, is_package, ... of the real loader
        return getattr(self._loader, name)


class PostImportFinder:
    """Meta-path finder that fires ``callback(module)`` once ``name`` has been imported."""

    def __init__(self, name: str, callback, before=None):
        self.name = name
        self.callback = callback
        self.before = before
        self.fired = False
        self._lock = RLock()
        self._busy: set = set()  # threads delegating to the other finders right now

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name or self.fired or get_ident() in self._busy:
            return None
        import importlib.util

        before, self.before = self.before, None
        if before is not None:
            try:
                before()
            except Exception as exc:  # never fail the user's import (strict mode raises)
                from synalinks_obs import reporting

                reporting.internal_error(f"the pre-import hook of {self.name}", exc)
        self._busy.add(get_ident())
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._busy.discard(get_ident())
        if spec is None or spec.loader is None:
            return None
        spec.loader = _CallbackLoader(self, spec.loader)
        return spec

    def fire(self, module) -> None:
        with self._lock:
            if self.fired:
                return
            self.fired = True
        try:  # done: stop looking at every later import
            sys.meta_path.remove(self)
        except ValueError:
            pass
        try:
            self.callback(module)
        except Exception as exc:  # never fail the user's import (strict mode raises)
            from synalinks_obs import reporting

            reporting.internal_error(f"the import hook of {self.name}", exc)


def when_imported(name: str, callback, before=None) -> PostImportFinder:
    """Call ``callback(module)`` when ``name`` is imported (at once if it already is), and
    ``before()`` when its import starts (never if it already is imported).

    Idempotent per ``name``: a second call returns the finder already installed.
    """
    hooks = RUNTIME.import_hooks
    finder = hooks.get(name)
    if finder is not None and (finder in sys.meta_path or finder.fired):
        return finder
    finder = PostImportFinder(name, callback, before)
    hooks[name] = finder
    module = sys.modules.get(name)
    if module is not None:
        finder.fire(module)
    else:
        sys.meta_path.insert(0, finder)
    return finder


def remove_hook(name: str) -> None:
    """Remove the finder for ``name`` (if any) from ``sys.meta_path``."""
    finder = RUNTIME.import_hooks.pop(name, None)
    if finder is not None:
        try:
            sys.meta_path.remove(finder)
        except ValueError:
            pass

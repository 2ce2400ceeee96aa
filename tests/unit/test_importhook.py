"""``importhook.when_imported``: ``before()`` when an import starts, ``callback`` after it.

Start-up activation uses ``before`` to start the exporter process while Synalinks is
being imported; these tests use a throw-away module on ``sys.path``.
"""

import sys

import pytest

from synalinks_obs import importhook
from synalinks_obs.runtime import RUNTIME


@pytest.fixture
def module_dir(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in [n for n in sys.modules if n.startswith("obs_hook_probe")]:
        del sys.modules[name]
    for name in [n for n in RUNTIME.import_hooks if n.startswith("obs_hook_probe")]:
        importhook.remove_hook(name)


def test_before_runs_once_when_the_import_starts_and_callback_after(module_dir):
    (module_dir / "obs_hook_probe.py").write_text("import builtins\nbuiltins._obs_probe_events.append('body')\n")
    import builtins

    events = builtins._obs_probe_events = []
    importhook.when_imported("obs_hook_probe", lambda module: events.append(("after", module.__name__)),
                             before=lambda: events.append("before"))
    import obs_hook_probe  # noqa: F401

    del sys.modules["obs_hook_probe"]
    import obs_hook_probe  # noqa: F401, F811  (imported again: no hook any more)

    assert events == ["before", "body", ("after", "obs_hook_probe"), "body"]
    del builtins._obs_probe_events


def test_before_is_not_called_for_a_module_already_imported(module_dir):
    (module_dir / "obs_hook_probe2.py").write_text("")
    import obs_hook_probe2  # noqa: F401

    events = []
    importhook.when_imported("obs_hook_probe2", lambda module: events.append("after"),
                             before=lambda: events.append("before"))
    assert events == ["after"]


def test_a_failing_before_never_fails_the_import(module_dir, lenient):
    (module_dir / "obs_hook_probe3.py").write_text("VALUE = 3\n")
    seen = []

    def broken():
        raise RuntimeError("our bug")

    importhook.when_imported("obs_hook_probe3", lambda module: seen.append(module.VALUE), before=broken)
    import obs_hook_probe3

    assert obs_hook_probe3.VALUE == 3 and seen == [3]

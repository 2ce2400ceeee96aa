"""``synalinks_obs.patching.versions``: outside the supported range, nothing is patched and
one line says what is not traced."""

import pytest

from synalinks_obs.patching import versions


@pytest.mark.parametrize(
    "distribution, text, supported",
    [
        ("synalinks", "0.9.0", True), ("synalinks", "0.10.14", True), ("synalinks", "0.8.9", False),
        ("synalinks", "1.0.0", False), ("mlflow", "3.13.0", True), ("mlflow", "3.17.2", True),
        ("mlflow", "3.12.0", False), ("mlflow", "", False), ("synalinks", "garbage", False),
    ],
)
def test_ranges(distribution, text, supported):
    assert versions.is_supported(distribution, text) is supported


def test_an_unsupported_synalinks_is_not_patched(sqlite_uri, monkeypatch, capfd):
    import synalinks

    import synalinks_obs
    from synalinks_obs.runtime import RUNTIME

    synalinks_obs.uninstrument()
    real = versions.installed
    monkeypatch.setattr(versions, "installed", lambda d: "0.8.2" if d == "synalinks" else real(d))
    original = synalinks.Module.__dict__["__call__"]
    synalinks_obs.enable(tracking_uri=sqlite_uri, experiment_name="old")
    try:
        assert synalinks.Module.__dict__["__call__"] is original and len(RUNTIME.patches) == 0
        assert RUNTIME.tracer is None and not synalinks_obs.is_enabled()
        err = capfd.readouterr().err
        assert err.count("synalinks 0.8.2 is outside the supported range >=0.9,<1.0; module calls are not traced") == 1
    finally:
        synalinks_obs.uninstrument()

"""``synalinks_obs.uris``: one resolver for every component, display without secrets."""

import pytest

from synalinks_obs import uris


@pytest.mark.parametrize(
    "uri, expected",
    [
        ("sqlite:///x.db", "sqlite:////cwd/x.db"),
        ("sqlite:///x.db?timeout=5", "sqlite:////cwd/x.db?timeout=5"),
        ("sqlite:////abs/x.db", "sqlite:////abs/x.db"),
        ("sqlite:///:memory:", "sqlite:///:memory:"),
        ("mlruns", "file:///cwd/mlruns"),
        ("file:///data/mlruns", "file:///data/mlruns"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("databricks", "databricks"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
    ],
)
def test_absolute(uri, expected):
    assert uris.absolute(uri, "/cwd") == expected


def test_resolve_precedence_and_sources(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert uris.resolve(None, str(tmp_path)) == (f"sqlite:///{tmp_path}/mlflow.db", "default")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert uris.resolve(None, "/w") == ("sqlite:////w/env.db", "MLFLOW_TRACKING_URI")
    assert uris.resolve("http://h:1", "/w") == ("http://h:1", "explicit")
    # The settings' validated value: the environment was already taken into account.
    assert uris.resolve("sqlite:///env.db", "/w", environment=False).source == "MLFLOW_TRACKING_URI"
    assert uris.resolve(None, "/w", environment=False).source == "default"


def test_file_stores_are_refused_with_the_fix(tmp_path):
    for uri in ("mlruns", f"file://{tmp_path}/mlruns", str(tmp_path / "mlruns")):
        line = uris.file_store_problem(uris.absolute(uri, str(tmp_path)))
        assert line and "cannot hold traces" in line and "sqlite:///" in line, line
        assert "\n" not in line
    assert uris.file_store_problem("sqlite:///x.db") is None
    assert uris.file_store_problem("http://h:5000") is None


def test_display_hides_credentials():
    assert uris.display("https://alice:s3cret@mlflow.example:443/x") == "https://***@mlflow.example:443/x"
    assert "tok-123" not in uris.display("http://h:5000/?api_key=tok-123&a=1")
    assert uris.display("http://h:5000/?a=1") == "http://h:5000/?a=1"
    assert uris.display("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_same_store_compares_relative_and_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert uris.same_store("sqlite:///mlflow.db", f"sqlite:///{tmp_path}/mlflow.db")
    assert not uris.same_store("sqlite:///a.db", "sqlite:///b.db")

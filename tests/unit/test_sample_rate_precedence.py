"""Which sampling setting applies to Synalinks traces (``settings.effective_sample_rate``):
ours when set, else MLflow's ``MLFLOW_TRACE_SAMPLING_RATIO``, else 1.0; one line when
both are set and differ, or when MLflow's is not a number between 0 and 1."""

from __future__ import annotations

import pytest

from synalinks_obs.settings import effective_sample_rate, load_settings


@pytest.fixture
def lines():
    """The lines reported (instead of printed)."""
    return []


def _rate(monkeypatch, lines, ours=None, mlflow=None):
    monkeypatch.delenv("SYNALINKS_OBS_SAMPLE_RATE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACE_SAMPLING_RATIO", raising=False)
    if mlflow is not None:
        monkeypatch.setenv("MLFLOW_TRACE_SAMPLING_RATIO", mlflow)
    overrides = {} if ours is None else {"sample_rate": ours}
    settings = load_settings(**overrides)
    return effective_sample_rate(settings, report=lines.append)


def test_neither_set_keeps_everything(monkeypatch, lines):
    assert _rate(monkeypatch, lines) == 1.0 and lines == []


def test_mlflows_ratio_applies_when_ours_is_unset(monkeypatch, lines):
    assert _rate(monkeypatch, lines, mlflow="0.25") == 0.25 and lines == []


def test_ours_wins_with_one_line_naming_both(monkeypatch, lines):
    assert _rate(monkeypatch, lines, ours=0.5, mlflow="0.1") == 0.5
    (line,) = lines
    assert "SYNALINKS_OBS_SAMPLE_RATE" in line and "MLFLOW_TRACE_SAMPLING_RATIO=0.1" in line
    assert "sampled at 0.5" in line


def test_equal_rates_say_nothing(monkeypatch, lines):
    assert _rate(monkeypatch, lines, ours=0.5, mlflow="0.5") == 0.5 and lines == []


@pytest.mark.parametrize("bad", ["abc", "1.5", "-0.1"])
def test_a_bad_mlflow_ratio_is_one_line_and_everything_is_kept(monkeypatch, lines, bad):
    assert _rate(monkeypatch, lines, mlflow=bad) == 1.0
    (line,) = lines
    assert f"MLFLOW_TRACE_SAMPLING_RATIO={bad!r}" in line and "every trace is kept" in line

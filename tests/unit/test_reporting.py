"""``synalinks_obs.reporting``: strict mode raises, otherwise one log line per place."""

import logging

import pytest

from synalinks_obs import reporting


def test_strict_mode_raises_our_errors(monkeypatch):
    monkeypatch.setenv("SYNALINKS_OBS_STRICT", "1")
    with pytest.raises(reporting.InternalError) as caught:
        reporting.internal_error("somewhere", ValueError("bug"))
    assert isinstance(caught.value.__cause__, ValueError)


def test_lenient_mode_logs_once_per_place(lenient, caplog):
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        for _ in range(3):
            reporting.internal_error("place a", ValueError("bug a"))
        reporting.internal_error("place b", ValueError("bug b"))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "place a" in lines[0] and "bug a" in lines[0], lines
    assert "the app is not affected" in lines[0]


def test_first_line_never_raises():
    class Unprintable(Exception):
        def __str__(self):
            raise RuntimeError("no")

    assert reporting.first_line(ValueError("one\ntwo")) == "one"
    assert "Unprintable" in reporting.first_line(Unprintable())

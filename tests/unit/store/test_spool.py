"""The spool (``SYNALINKS_OBS_SPOOL_DIR``): spans not written at exit are kept on disk and
written later, once, into a real SQLite store (read back through MLflow's client)."""

import os
import pickle
import random
import subprocess
import sys
import time

import pytest

from synalinks_obs.cli import flush_spool
from synalinks_obs.export.wire import Wire
from synalinks_obs.settings import load_settings
from synalinks_obs.store.spool import CLAIM, Spool, store_key
from synalinks_obs.store.writer import Writer
from synalinks_obs.tracing.records import Destination

EXPERIMENT = "spooled"


def _wires(traces: int, seed: int, per_trace: int = 3) -> list:
    rng = random.Random(seed)
    wires = []
    for t in range(traces):
        trace = rng.getrandbits(128)
        root = rng.getrandbits(64)
        start = time.time_ns()
        for i in range(per_trace):
            wires.append(Wire(
                trace, f"tr-{trace:032x}", root if i == 0 else rng.getrandbits(64),
                None if i == 0 else root, "Functional:app" if i == 0 else f"Step:s{i}",
                start + i, start + 1_000 + i, "CHAIN", rng.getrandbits(128),
                None if i == 0 else 1, "Step", f"s{i}", "", False, 0.0, None, None,
                f'[{{"question": "q-{seed}-{t}"}}]', '{"ok": true}', None, None, i == 0, False,
            ))
    return wires


def _landed(uri) -> list:
    """``(trace id, span id)`` of every span in the experiment (duplicates kept)."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    found, token = [], None
    while True:
        page = client.search_traces(locations=[experiment.experiment_id], max_results=500,
                                    page_token=token, include_spans=True)
        for trace in page:
            found += [(trace.info.trace_id, span.span_id) for span in trace.data.spans]
        token = page.token
        if not token:
            return found


def _expected(wires) -> list:
    return sorted((w.trace_id, f"{w.span_id:016x}") for w in wires)


def _spool_files(directory) -> list:
    return sorted(os.listdir(directory)) if os.path.isdir(directory) else []


def _spool_out_of_time(uri, directory, first, rest) -> Writer:
    """A writer that writes ``first``, then is asked to finish ``rest`` with 1 ms left."""
    destination = Destination(uri, EXPERIMENT)
    writer = Writer(10_000, spool=Spool(str(directory)))
    writer.add(destination, len(first), pickle.dumps(first))
    assert writer.pump() is None and writer.exported == len(first)  # its pace is known
    for part in (rest[: len(rest) // 2], rest[len(rest) // 2:]):
        writer.add(destination, len(part), pickle.dumps(part))
    writer.drain(time.monotonic() + 0.001, timeout_reason="exit flush timed out")
    return writer


def test_spans_given_up_at_exit_are_kept_then_written_once_by_the_next_writer(sqlite_uri, tmp_path):
    directory = tmp_path / "spool"
    first, rest = _wires(100, 1), _wires(200, 2)
    writer = _spool_out_of_time(sqlite_uri, directory, first, rest)
    assert writer.exported == len(first)
    assert dict(writer.spooled) == {"exit flush timed out": len(rest)}
    assert not writer.dropped and writer.pending == 0
    files = _spool_files(directory)
    assert len(files) == 1 and files[0].startswith(store_key(sqlite_uri) + ".")
    assert "sqlite" not in open(directory / files[0], "rb").read().decode("latin-1")  # no URI kept
    assert os.stat(directory / files[0]).st_mode & 0o777 == 0o600  # payloads: private
    assert os.stat(directory).st_mode & 0o777 == 0o700
    assert sorted(_landed(sqlite_uri)) == _expected(first)

    # The next process writing to the same store takes the spool over.
    later = _wires(10, 3)
    writer = Writer(10_000, spool=Spool(str(directory)))
    writer.add(Destination(sqlite_uri, EXPERIMENT), len(later), later)
    writer.drain(time.monotonic() + 120)
    assert writer.exported == len(later) + len(rest) and not writer.dropped and not writer.spooled
    assert _spool_files(directory) == []
    assert sorted(_landed(sqlite_uri)) == _expected(first + rest + later)  # each span once


def test_flush_spool_command_writes_the_spool(sqlite_uri, tmp_path, capsys):
    directory = tmp_path / "spool"
    first, rest = _wires(50, 4), _wires(100, 5)
    _spool_out_of_time(sqlite_uri, directory, first, rest)
    assert len(_spool_files(directory)) == 1
    code = flush_spool.main(["--spool-dir", str(directory), "--tracking-uri", sqlite_uri])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"{len(rest)} spooled span(s) written to" in out
    assert _spool_files(directory) == []
    assert sorted(_landed(sqlite_uri)) == _expected(first + rest)
    assert flush_spool.main(["--spool-dir", str(directory), "--tracking-uri", sqlite_uri]) == 0
    assert "no spooled spans" in capsys.readouterr().out
    assert sorted(_landed(sqlite_uri)) == _expected(first + rest)  # nothing written twice


def test_a_spool_file_is_claimed_once_and_taken_back_from_a_dead_claimer(tmp_path):
    uri = "http://127.0.0.1:1"
    spool = Spool(str(tmp_path))
    destination = Destination(uri, EXPERIMENT)
    wires = _wires(1, 6)
    assert spool.keep(uri, [(destination, 3, wires)]) == 3
    (name,) = _spool_files(tmp_path)
    # Claimed by a live process: not ours to take.
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        os.rename(tmp_path / name, tmp_path / f"{name}{CLAIM}{live.pid}")
        assert spool.claim(uri) == []
    finally:
        live.kill()
        live.wait()
    # Its claimer died before finishing: taken back, whole.
    (batch,) = spool.claim(uri)
    assert batch[0] == destination and batch[1] == 3 and pickle.loads(batch[2]) == wires
    assert spool.claim(uri) == []  # ours now: nobody else gets it
    batch[3].batch_done()
    assert _spool_files(tmp_path) == []
    assert spool.claim("http://127.0.0.1:2") == []  # another store's key


@pytest.mark.parametrize("make", ["file", "unwritable"])
def test_a_bad_spool_dir_is_one_line_and_no_spool(tmp_path, monkeypatch, make):
    if make == "file":
        bad = tmp_path / "a-file"
        bad.write_text("x")
        expected = "it is a file, not a directory"
    else:
        if os.geteuid() == 0:
            pytest.skip("root can write any directory")
        parent = tmp_path / "locked"
        parent.mkdir(mode=0o500)
        bad = parent / "spool"
        expected = "is not writable by this user"
    monkeypatch.setenv("SYNALINKS_OBS_SPOOL_DIR", str(bad))
    lines = []
    settings = load_settings(report=lines.append)
    assert settings.spool_dir is None
    assert len(lines) == 1 and lines[0].startswith("synalinks-obs: SYNALINKS_OBS_SPOOL_DIR=")
    assert expected in lines[0] and "using the default (unset: no spool)" in lines[0]
    monkeypatch.setenv("SYNALINKS_OBS_SPOOL_DIR", str(tmp_path / "new" / "spool"))
    assert load_settings(report=lines.append).spool_dir == str(tmp_path / "new" / "spool")

"""``synalinks_obs.store.schema_lock``: a private per-user lock, never held for ever."""

import logging
import os
import subprocess
import sys
import time

from synalinks_obs.store import schema_lock

HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_lock_directory_is_private(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    path = schema_lock.lock_directory()
    assert path == str(tmp_path / f"synalinks-obs-{os.getuid()}")
    assert os.stat(path).st_mode & 0o777 == 0o700


def test_a_foreign_or_open_lock_directory_is_refused(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    path = tmp_path / f"synalinks-obs-{os.getuid()}"
    path.mkdir(mode=0o777)
    os.chmod(path, 0o777)  # world-writable: anyone could plant a lock file there
    with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
        assert schema_lock.lock_directory() is None
        with schema_lock.database_lock(f"sqlite:///{tmp_path}/x.db"):
            pass  # goes on without a lock
    assert any("not a private directory" in r.getMessage() for r in caplog.records)


LOCK_TIMEOUT = 0.5
# The bound is the timeout; a loaded 2-core machine adds its scheduling to the wait.
SCHEDULING_ALLOWANCE = 2.0


def test_a_held_lock_is_waited_for_at_most_the_timeout(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    uri = f"sqlite:///{tmp_path}/busy.db"
    import hashlib

    digest = hashlib.sha1(str(tmp_path / "busy.db").encode()).hexdigest()[:20]
    lock_file = os.path.join(schema_lock.lock_directory(), f"{digest}.lock")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, lock_file, "30"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with caplog.at_level(logging.WARNING, logger="synalinks_obs"):
            started = time.monotonic()
            with schema_lock.database_lock(uri, timeout=LOCK_TIMEOUT):
                waited = time.monotonic() - started
        assert LOCK_TIMEOUT <= waited < LOCK_TIMEOUT + SCHEDULING_ALLOWANCE, waited
        lines = [r.getMessage() for r in caplog.records if "waited 0.5 s" in r.getMessage()]
        assert len(lines) == 1 and "going on without the lock" in lines[0]
    finally:
        holder.kill()
        holder.wait()
    with schema_lock.database_lock(uri, timeout=0.5):  # free again: taken at once
        pass

"""Spans not written at exit, kept on disk and written later: the opt-in spool.

With ``SYNALINKS_OBS_SPOOL_DIR`` set, the ``Writer`` that gives up on spans at exit (the
flush budget is spent, or the store is down) appends them to a file in that directory
instead of dropping them. The next process that writes to the same store (its first
successful write there), or ``python -m synalinks_obs flush-spool``, claims the store's
files and writes them like any other batch.

Files: ``<store key>.<pid>.<time ns>.spool``, where the store key is a hash of the
tracking URI (the URI itself, which may hold credentials, is never written). Each holds
frames (``store.protocol``'s length + pickle) of ``(destination without its URI, count,
pickled Wire tuples)``, written to a temporary name then renamed, so a reader never sees
half a file. Nothing is lost and nothing is written twice: a process claims a file by
renaming it to ``*.claimed-<pid>`` (one rename wins), deletes it only once every batch in
it is written or spooled again, and a claim left by a process that died is taken back
(MLflow's span writes are upserts: a batch that a dying claimer wrote before it could
delete the file lands once).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import time

from synalinks_obs.store import protocol

SUFFIX = ".spool"
CLAIM = ".claimed-"


def store_key(tracking_uri) -> str:
    """The file-name key of a store: a hash of its tracking URI (no credentials shown)."""
    return hashlib.sha256(str(tracking_uri).encode()).hexdigest()[:20]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


class Claim:
    """A spool file this process took over; deleted once its batches are all done."""

    __slots__ = ("path", "open_batches")

    def __init__(self, path: str, open_batches: int):
        self.path = path
        self.open_batches = open_batches

    def batch_done(self) -> None:
        self.open_batches -= 1
        if self.open_batches <= 0:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


class Spool:
    """The spool directory of one process (see the module docstring)."""

    def __init__(self, directory: str):
        self.directory = directory

    def keep(self, tracking_uri, batches) -> int:
        """Append ``[(destination, count, payload)]`` for one store; spans kept."""
        if not batches:
            return 0
        os.makedirs(self.directory, mode=0o700, exist_ok=True)  # payloads: this user's only
        buffer = io.BytesIO()
        kept = 0
        for destination, count, payload in batches:
            if not isinstance(payload, bytes):
                payload = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
            buffer.write(protocol.frame((destination._replace(tracking_uri=None), count, payload)))
            kept += count
        name = f"{store_key(tracking_uri)}.{os.getpid()}.{time.time_ns()}{SUFFIX}"
        path = os.path.join(self.directory, name)
        temporary = path + ".tmp"
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as file:
            file.write(buffer.getvalue())
            file.flush()
            os.fsync(file.fileno())
        os.rename(temporary, path)
        return kept

    def files_for(self, tracking_uri) -> list[str]:
        """Spool files of a store that no live process has claimed, oldest first."""
        key = store_key(tracking_uri)
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        found = []
        for name in names:
            if not name.startswith(key + "."):
                continue
            if name.endswith(SUFFIX):
                found.append(name)
            elif CLAIM in name:
                pid = name.rsplit(CLAIM, 1)[1]
                if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
                    found.append(name)  # its claimer died
        found.sort(key=lambda name: name.split(".")[2] if name.count(".") >= 2 else name)
        return [os.path.join(self.directory, name) for name in found]

    def claim(self, tracking_uri):
        """Take over a store's spool files: ``[(destination, count, payload, Claim)]``."""
        batches = []
        for path in self.files_for(tracking_uri):
            base = path.split(CLAIM, 1)[0]
            claimed = base + CLAIM + str(os.getpid())
            try:
                os.rename(path, claimed)
            except OSError:
                continue  # another process took it first
            try:
                with open(claimed, "rb") as file:
                    frames = []
                    while (frame := protocol.read_frame(file)) is not None:
                        frames.append(frame)
            except Exception:
                os.rename(claimed, base + ".unreadable")  # kept for a human, not retried
                continue
            if not frames:
                os.unlink(claimed)
                continue
            claim = Claim(claimed, len(frames))
            for destination, count, payload in frames:
                batches.append((destination._replace(tracking_uri=tracking_uri), count, payload, claim))
        return batches

    def pending(self, tracking_uri=None) -> int:
        """Spool files waiting (for one store, or all)."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return 0
        key = store_key(tracking_uri) + "." if tracking_uri is not None else ""
        return sum(1 for n in names if n.startswith(key) and (n.endswith(SUFFIX) or CLAIM in n))

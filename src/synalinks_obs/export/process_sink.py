"""The exporter process as the app's exporter thread sees it: started, fed, heard, stopped.

``ProcessSink`` starts ``store.worker`` with the same Python (``-P``: the app's
directory, which may hold a ``struct.py`` or ``mlflow.py``, is not on its path) and two
channels: a socket as its stdin (ours to write: no SIGPIPE) and a pipe for its answers,
read without blocking (``store.protocol`` frames). It sends span batches (with the app's
current ``MLFLOW_TRACKING_*`` credentials when they changed), keeps each batch until the
process reports it done (so the batches of a process that dies can be written by the
app), and at exit tells the process how long it may take, then waits for its last word.
A forked child drops its copies of the parent's channels without closing the parent's.
"""

from __future__ import annotations

import collections
import logging
import os
import pickle
import select
import socket
import subprocess
import sys
import time

from synalinks_obs import reporting
from synalinks_obs.store import protocol

_NOSIGNAL = getattr(socket, "MSG_NOSIGNAL", 0)
_ABANDONED: list = []  # a forked child's copies of the parent's channels: never finalised
_log = reporting.logger(__name__)


class ProcessSink:
    """The exporter process and its two channels (see the module docstring)."""

    def __init__(self, settings, notify):
        self.settings = settings
        self.notify = notify
        self.process = None
        self._credentials = None  # the MLFLOW_TRACKING_* values the process has
        self.sent = 0
        self.exported = 0
        self.dropped: collections.Counter = collections.Counter()
        self.spooled: collections.Counter = collections.Counter()  # kept in the spool at exit
        self.held = 0  # spans it keeps for a store that is failing
        # Batches sent and not yet reported done: id -> (destination, count, pickle).
        self.unacked: dict = {}
        self.unacked_spans = 0
        self._next_id = 0
        self.ready = False  # it said hello: mlflow is imported there
        self.said_bye = False
        self.finished = False  # "bye" received or the process is gone
        self.ack_fd = None
        self.warming = False  # started at start-up to open the store before any span
        self.started_at = time.monotonic()
        self._socket = None
        self._buffer = b""

    def start(self) -> bool:
        executable = sys.executable
        if not executable:
            return False
        settings = self.settings
        package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        self._credentials = protocol.tracking_environment()  # what the process starts with
        env["SYNALINKS_OBSERVABILITY"] = "0"  # the writer itself is never traced
        env.pop("_SYNALINKS_OBS_RUN", None)
        # Our own health probe and backoff replace MLflow's retry policy (minutes long):
        # only in the exporter process, the app's MLflow settings stay as they are.
        env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        env.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        read_fd, write_fd = os.pipe()
        ours, theirs = socket.socketpair()
        code = (
            "import sys; sys.path.insert(0, sys.argv.pop(1)); "
            "from synalinks_obs.store.worker import run_and_exit; run_and_exit()"
        )
        debug = _log.isEnabledFor(logging.DEBUG)
        try:
            self.process = subprocess.Popen(
                [
                    executable, "-P", "-c", code, package_parent, str(write_fd),
                    str(settings.flush_timeout), str(settings.max_queue_spans),
                    settings.spool_dir or "",
                ],
                stdin=theirs.fileno(),
                stdout=subprocess.DEVNULL,
                stderr=None if debug else subprocess.DEVNULL,
                pass_fds=(write_fd,),
                env=env,
                cwd=os.getcwd(),
            )
        except Exception as exc:
            for fd in (read_fd, write_fd):
                os.close(fd)
            ours.close()
            theirs.close()
            _log.info("synalinks-obs: cannot start the exporter process (%r)", exc)
            return False
        self.started_at = time.monotonic()
        os.close(write_fd)
        theirs.close()
        ours.shutdown(socket.SHUT_RD)
        os.set_blocking(read_fd, False)
        self._socket = ours
        self.ack_fd = read_fd
        return True

    def starting_for(self) -> float:
        """Seconds since the process was started."""
        return time.monotonic() - self.started_at

    def poll(self) -> None:
        """Read and handle whatever the process has answered (never blocks)."""
        if self.finished:
            return
        while True:
            try:
                data = os.read(self.ack_fd, 1 << 16)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self.finished = True
                break
            self._buffer += data
        buffer = self._buffer
        size = protocol.HEADER.size
        while len(buffer) >= size:
            (length,) = protocol.HEADER.unpack_from(buffer)
            if len(buffer) < size + length:
                break
            message = pickle.loads(buffer[size:size + length])
            buffer = buffer[size + length:]
            self._handle(message)
        self._buffer = buffer

    def _handle(self, message) -> None:
        kind = message[0]
        if kind in ("done", "bye"):
            self.exported = message[1]
            self.dropped = collections.Counter(message[2])
            self.held = message[3]
            for batch_id in message[4] if len(message) > 4 else ():
                kept = self.unacked.pop(batch_id, None)
                if kept is not None:
                    self.unacked_spans -= kept[1]
            if len(message) > 5:
                self.spooled = collections.Counter(message[5])
            if kind == "bye":
                self.said_bye = True
                self.finished = True
        elif kind == "hello":
            self.ready = True
        self.notify(*message)

    def _write(self, message) -> None:
        if self.finished:
            raise BrokenPipeError("the exporter process exited")
        self._socket.sendall(protocol.frame(message), _NOSIGNAL)

    def send(self, destination, wires) -> None:
        payload = pickle.dumps(wires, protocol=pickle.HIGHEST_PROTOCOL)
        credentials = protocol.tracking_environment()
        if credentials != self._credentials:  # rotated by the app since the last batch
            self._write(("credentials", credentials))
            self._credentials = credentials
        self._next_id += 1
        batch_id = self._next_id
        self._write(("spans", destination, len(wires), payload, batch_id))
        self.unacked[batch_id] = (destination, len(wires), payload)
        self.unacked_spans += len(wires)
        self.sent += len(wires)

    def warm(self, tracking_uri: str, experiment_name: str) -> None:
        """Ask the process to open the store and resolve the experiment before any span."""
        self._write(("warm", tracking_uri, experiment_name))

    def process_kill_quietly(self) -> None:
        """Stop the process now (before its unfinished batches are kept elsewhere)."""
        if self.process is not None and self.process.poll() is None:
            try:
                self.process.kill()
                self.process.wait(1.0)
            except Exception:
                pass

    def take_unacked(self) -> list:
        """The batches the process never reported done, given up by it: (destination,
        count, pickle) each, oldest first."""
        batches = list(self.unacked.values())
        self.unacked.clear()
        self.unacked_spans = 0
        return batches

    def idle(self) -> bool:
        if self.finished:
            return True
        done = self.exported + sum(self.dropped.values()) + sum(self.spooled.values())
        return done + self.held >= self.sent

    def close(self, deadline) -> None:
        """No more spans: tell the process how long it may take, then EOF."""
        if self.sent == 0:  # nothing of ours in it: no reason to wait for it
            self.detach()
            return
        try:
            left = deadline - time.monotonic()
            # keep a margin for its last report and its exit
            self._write(("close", max(0.0, left * 0.9 - 0.3)))
        except Exception:
            pass
        try:
            self._socket.close()
        except Exception:
            pass

    def wait(self, deadline) -> None:
        """Collect the process's answers until its last one (or the deadline)."""
        while not self.finished:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                select.select([self.ack_fd], [], [], min(left, 0.5))
            except (OSError, ValueError):
                return
            self.poll()
        try:
            self.process.wait(max(0.05, deadline - time.monotonic()))
        except Exception:
            pass

    def detach(self) -> None:
        """Leave a process that holds no span of ours without waiting for it: EOF, and it
        exits by itself once what it is doing is done (never killed while it may be
        creating a new database's schema)."""
        for close in (self._socket.close, lambda: os.close(self.ack_fd)):
            try:
                close()
            except Exception:
                pass
        self.finished = True
        if self.process is not None and self.process.poll() is None:
            self.process.returncode = 0  # not waited for: no "still running" warning

    def abandon(self) -> int:
        """Stop the process now; the number of spans it had not written yet."""
        if self.process is not None and self.process.poll() is None:
            try:
                self.process.kill()
                self.process.wait(1.0)
            except Exception:
                pass
        for close in (self._socket.close, lambda: os.close(self.ack_fd)):
            try:
                close()
            except Exception:
                pass
        left = 0 if self.said_bye else self.unacked_spans
        self.unacked.clear()
        self.unacked_spans = 0
        self.finished = True
        return max(0, left)

    def forget_in_child(self) -> None:
        """In a forked child: close our copies of the parent's channels (raw, so that no
        lock a parent's thread held is touched), and never wait for its process."""
        for fd_of in (self._socket.fileno, lambda: self.ack_fd):
            try:
                os.close(fd_of())
            except Exception:
                pass
        _ABANDONED.append(self)  # its socket object would close a reused fd number
        if self.process is not None:
            self.process.returncode = 0  # not our child: never wait for it

"""The exporter process: reads span batches from the app, writes them with ``Writer``.

Started by the app's exporter thread (``export.process_sink.ProcessSink``) with the same Python
(``python -P -c ...``: the app's directory is not on its path) so that MLflow's span
building and SQLAlchemy work run on another core, not the app's GIL. Once started (its
imports done, the store opened by its first write or, when the app asks at start-up,
before any span) it runs at a lower priority; it ignores Ctrl-C (the app decides when
it stops: EOF on stdin), writes until the app says "close" (with the time left) or goes away, reports progress after every write
(``store.protocol``: with the ids of the batches it is done with, so the app can resend
the others if this process dies), and leaves without the interpreter's teardown.

Bounded memory: the spans read but not yet handed to the ``Writer`` count against the
same ``max_spans`` as its backlog; while a write is in progress (a slow store) a batch
that would not fit is refused at once (dropped and counted), never queued.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time

from synalinks_obs.compat import stdlib as stdlib_compat
from synalinks_obs.store import protocol
from synalinks_obs.store.spool import Spool
from synalinks_obs.store.writer import Writer


def main(argv=None) -> int:
    """Entry point of the exporter process: ``argv = [out_fd, exit_budget, max_spans,
    spool_dir]`` (``spool_dir`` optional, empty: no spool)."""
    import signal

    argv = sys.argv[1:] if argv is None else argv
    out_fd, exit_budget, max_spans = int(argv[0]), float(argv[1]), int(argv[2])
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").strip().lower() in ("true", "1"):
        # Chosen by the user (and shown by `doctor`): not one urllib3 warning per request.
        import warnings

        warnings.filterwarnings("ignore", message="Unverified HTTPS request")
    # Ctrl-C reaches the whole process group: the app decides when we stop (EOF).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    parent = os.getppid()
    inbox: collections.deque = collections.deque()
    wake = threading.Condition(threading.Lock())
    out_lock = threading.Lock()
    waiting = [0]  # spans in the inbox (under ``wake``)

    def send(*message) -> None:
        with out_lock:
            try:
                protocol.write_all(out_fd, protocol.frame(message))
            except OSError:
                pass  # the app is gone: keep writing the store anyway

    def reader() -> None:
        stdin = sys.stdin.buffer
        while True:
            try:
                message = protocol.read_frame(stdin)
            except Exception:
                message = None
            with wake:
                if message is not None and message[0] == "spans":
                    count = message[2]
                    if waiting[0] + writer.pending + count > max_spans:
                        message = ("full", message[1], count, *message[4:])  # payload freed
                    else:
                        waiting[0] += count
                inbox.append(message)
                wake.notify()
            if message is None:
                return

    spool_dir = argv[3] if len(argv) > 3 else ""
    writer = Writer(max_spans, notify=send, spool=Spool(spool_dir) if spool_dir else None)
    threading.Thread(target=reader, name="synalinks-obs-reader", daemon=True).start()
    # Ready once MLflow is imported: until then the app writes what cannot wait itself.
    # What is imported lives for ever: keep the collector off it, and collect rarely
    # (the garbage of a write is mostly freed by reference counting).
    import gc

    from mlflow.entities import Span  # noqa: F401
    from mlflow.tracing.client import TracingClient  # noqa: F401
    from mlflow.tracking import MlflowClient  # noqa: F401
    from opentelemetry.sdk.trace import ReadableSpan  # noqa: F401

    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    send("hello", os.getpid())
    wait = None
    reported = (0, {})
    closing = False
    niced = False
    while True:
        with wake:
            if not inbox and not stop.is_set():
                wake.wait(0.5 if wait is None else min(max(wait, 0.005), 0.5))
        while inbox:
            message = inbox.popleft()
            if message is None:
                closing = True
                break
            kind = message[0]
            if kind == "spans":
                _, destination, count, payload, *tag = message
                with wake:
                    waiting[0] -= count
                writer.add(destination, count, payload, *tag)
            elif kind == "full":
                _, destination, count, *tag = message
                writer.refuse(destination, count, *tag)
            elif kind == "credentials":  # the app's MLFLOW_TRACKING_* changed
                protocol.apply_tracking_environment(message[1])
                writer.forget_rejections()
            elif kind == "warm":  # start-up: open the store before the first span
                writer.warm_up(message[1], message[2])
            elif kind == "close":  # the app is exiting: how long the last writes may take
                exit_budget = float(message[1])
        if closing or stop.is_set() or os.getppid() != parent:
            writer.drain(
                time.monotonic() + exit_budget,
                timeout_reason=f"exit flush timed out after {exit_budget:g} s",
            )
        else:
            wait = writer.pump(stop=lambda: bool(inbox))  # a message (close?) comes first
        if not niced and (writer.warmed or writer.exported or writer.held or writer.dropped):
            # In the background once started (imported, the store opened and its schema
            # created at full speed): when cores are scarce, the app goes first.
            niced = True
            try:
                os.nice(10)
            except OSError:
                pass
        state = (writer.exported, dict(writer.dropped), writer.held, dict(writer.spooled))
        finished, writer.finished_tags = writer.finished_tags, []
        if state != reported or finished:
            reported = state
            send("done", *state[:3], finished, state[3])
        if closing or stop.is_set() or os.getppid() != parent:
            send("bye", *state[:3], [], state[3])
            return 0


def run_and_exit(argv=None) -> None:
    """``main()``, then leave without the interpreter's teardown.

    By then every span is written and committed (or reported dropped) and the app has
    our last answer, and each answer goes out unbuffered on a raw descriptor: the
    teardown of MLflow's modules would only add about a second to the app's exit."""
    stdlib_compat.exit_now(main(argv))


if __name__ == "__main__":
    run_and_exit()

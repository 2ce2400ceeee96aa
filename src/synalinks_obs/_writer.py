"""The store side of the export: span tuples -> MLflow spans -> the tracking store.

``Writer`` owns everything that talks to the tracking store: opening it (a new
database's schema set up one process at a time, ``serialise_schema_setup``), resolving
(creating) experiments, building ``mlflow.entities.Span`` objects from the plain tuples
the app's exporter thread produces (``export.record_to_wire``), writing them with MLflow's
store-level ``log_spans`` in batches, linking traces to training runs, and surviving a
store that is down, failing or slow:

- a backlog capped at ``max_spans`` (what does not fit is dropped and counted);
- for ``http(s)`` stores a cheap ``GET /health`` probe (short timeout) before writing
  after a failure, then our own backoff (0.5 s doubling up to 5 s) instead of MLflow's
  long retry policy; a batch that still fails when the store looks healthy is retried a
  few times, then dropped (counted, with the reason);
- at the end (``drain``) what cannot be written before the deadline is dropped with the
  reason, and a store already known to be down is not waited for.

By default it runs in a separate process (``main``, started by ``export.py``), so that
MLflow's serialisation and SQLAlchemy work use another core, not the app's GIL; the
same class runs inside the app's exporter thread when that process cannot be used.

Process protocol: frames of a 4-byte big-endian length and a pickle. The app sends
``("spans", destination, count, pickled_wires)`` and, at exit, ``("close", seconds)``
(how long the last writes may take); EOF on stdin means "finish and exit". The worker
answers on the file descriptor given as ``argv[1]`` with ``("done", exported, {reason: dropped}, held)`` after every write (``held``: spans
waiting for a store that is failing),
``("experiment", key, experiment_id)`` when it resolved one and ``("problem", text)``
when the store starts failing.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import pickle
import struct
import sys
import threading
import time
import tempfile
import urllib.error
import urllib.parse
import urllib.request

try:
    import fcntl
except ImportError:  # not POSIX: no lock (MLflow's own behaviour)
    fcntl = None

BATCH_SPANS = 5_000  # most spans per log_spans call
PROBE_TIMEOUT = 3.0  # seconds a GET /health may take before the store counts as down
MAX_BACKOFF = 5.0
MAX_ATTEMPTS = 4  # writes of one batch to a store that looks healthy

# -- the span tuple ("wire") built by export.record_to_wire ------------------------------
(
    W_OTEL_TRACE_ID, W_TRACE_ID, W_SPAN_ID, W_PARENT_SPAN_ID, W_NAME, W_START_NS, W_END_NS,
    W_SPAN_TYPE, W_CALL_ID, W_PARENT_CALL_ID, W_MODULE, W_MODULE_NAME, W_DESCRIPTION,
    W_SYMBOLIC, W_COST, W_USAGE, W_MODEL, W_INPUTS, W_OUTPUTS, W_ERROR, W_LM_ERROR,
    W_TRACE_ROOT, W_FOREIGN,
) = range(23)

_USAGE_KEYS = ("input_tokens", "output_tokens", "total_tokens")
_RESOURCE = None


def _resource():
    global _RESOURCE
    if _RESOURCE is None:
        from opentelemetry.sdk.resources import Resource

        _RESOURCE = Resource({"service.name": "synalinks-obs"})
    return _RESOURCE


def _uuid(value: int) -> str:
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def wire_to_span(wire):
    """The immutable ``mlflow.entities.Span`` of one span tuple."""
    from mlflow.entities import Span
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

    otel_trace_id = wire[W_OTEL_TRACE_ID]
    flags = TraceFlags(TraceFlags.SAMPLED)
    context = SpanContext(otel_trace_id, wire[W_SPAN_ID], False, flags)
    parent_span_id = wire[W_PARENT_SPAN_ID]
    parent = (
        SpanContext(otel_trace_id, parent_span_id, False, flags)
        if parent_span_id is not None
        else None
    )
    error = wire[W_ERROR]
    lm_error = wire[W_LM_ERROR]
    usage = wire[W_USAGE] or {}
    start_ns, end_ns = wire[W_START_NS], wire[W_END_NS]
    dumps = json.dumps
    parent_call_id = wire[W_PARENT_CALL_ID]
    span_type = wire[W_SPAN_TYPE]
    attributes = {
        "mlflow.traceRequestId": dumps(wire[W_TRACE_ID]),
        "mlflow.spanType": dumps(span_type),
        "synalinks.call_id": dumps(_uuid(wire[W_CALL_ID])),
        "synalinks.parent_call_id": dumps(
            _uuid(parent_call_id) if parent_call_id is not None else ""
        ),
        "synalinks.module": dumps(wire[W_MODULE]),
        "synalinks.module_name": dumps(wire[W_MODULE_NAME]),
        "synalinks.module_description": dumps(wire[W_DESCRIPTION]),
        "synalinks.is_symbolic": dumps(bool(wire[W_SYMBOLIC])),
        "synalinks.duration": dumps((end_ns - start_ns) / 1e9),
        "synalinks.success": dumps(error is None and not lm_error),
        "synalinks.cost": dumps(float(wire[W_COST])),
    }
    if wire[W_INPUTS] is not None:
        attributes["mlflow.spanInputs"] = wire[W_INPUTS]
    if wire[W_OUTPUTS] is not None:
        attributes["mlflow.spanOutputs"] = wire[W_OUTPUTS]
    if span_type == "CHAT_MODEL":
        model = wire[W_MODEL] or ""
        attributes["mlflow.llm.model"] = dumps(model)
        attributes["mlflow.llm.provider"] = dumps(model.split("/")[0] if "/" in model else "")
        attributes["mlflow.message.format"] = dumps("openai")
        if "input_tokens" in usage:
            attributes["mlflow.chat.tokenUsage"] = dumps(
                {key: int(usage.get(key) or 0) for key in _USAGE_KEYS}
            )
        if isinstance(usage.get("cost"), (int, float)):
            attributes["mlflow.llm.cost"] = dumps({"total_cost": float(usage["cost"])})
    if wire[W_TRACE_ROOT]:
        attributes["mlflow.traceTag.mlflow.traceName"] = dumps(wire[W_NAME])
    events = []
    status = Status(StatusCode.OK)
    if error is not None or lm_error:
        if error is not None:
            exc_type, message, stack = error
        else:
            exc_type, message, stack = "RuntimeError", str(lm_error), ""
        event_attributes = {"exception.type": exc_type, "exception.message": message}
        if stack:
            event_attributes["exception.stacktrace"] = stack
        events.append(Event("exception", event_attributes, timestamp=end_ns))
        status = Status(StatusCode.ERROR, f"{exc_type}: {message}"[:1000])
    otel_span = ReadableSpan(
        name=wire[W_NAME],
        context=context,
        parent=parent,
        resource=_resource(),
        attributes=attributes,
        events=events,
        kind=SpanKind.INTERNAL,
        status=status,
        start_time=start_ns,
        end_time=end_ns,
    )
    return Span(otel_span)


def root_trace_info_of(wire, experiment_id, run_id):
    """The finished ``TraceInfo`` of a root span tuple, with ``mlflow.sourceRun``."""
    from mlflow.entities.trace_info import TraceInfo
    from mlflow.entities.trace_location import TraceLocation
    from mlflow.entities.trace_state import TraceState
    from mlflow.tracing.constant import TraceMetadataKey, TraceTagKey

    failed = wire[W_ERROR] is not None or bool(wire[W_LM_ERROR])
    return TraceInfo(
        trace_id=wire[W_TRACE_ID],
        trace_location=TraceLocation.from_experiment_id(experiment_id),
        request_time=wire[W_START_NS] // 1_000_000,
        execution_duration=(wire[W_END_NS] - wire[W_START_NS]) // 1_000_000,
        state=TraceState.ERROR if failed else TraceState.OK,
        trace_metadata={TraceMetadataKey.SOURCE_RUN: run_id},
        tags={TraceTagKey.TRACE_NAME: wire[W_NAME]},
    )


def sqlite_path(tracking_uri) -> str | None:
    """The database file of a ``sqlite:///relative`` or ``sqlite:////absolute`` URI."""
    prefix = "sqlite:///"
    if not isinstance(tracking_uri, str) or not tracking_uri.startswith(prefix):
        return None
    path = urllib.parse.unquote(tracking_uri[len(prefix):].split("?", 1)[0])
    if not path or path == ":memory:":
        return None
    return os.path.abspath(path)


def _database_key(tracking_uri) -> str | None:
    """What names a database store for ``database_lock`` (None: not a database)."""
    path = sqlite_path(tracking_uri)
    if path is not None:
        return path
    if not isinstance(tracking_uri, str):
        return None
    scheme = tracking_uri.split("://", 1)[0].split("+", 1)[0].lower()
    return tracking_uri if scheme in ("postgresql", "mysql", "mssql") else None


@contextlib.contextmanager
def database_lock(tracking_uri):
    """Hold a machine-wide lock named after a database store (a no-op for servers).

    An advisory file lock in the temporary directory, named by a hash of the database's
    path (sqlite) or URL. See ``serialise_schema_setup``."""
    key = _database_key(tracking_uri)
    if key is None or fcntl is None:
        yield
        return
    digest = hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:20]
    lock_path = os.path.join(tempfile.gettempdir(), f"synalinks-obs-{digest}.lock")
    try:
        fd = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o666)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def serialise_schema_setup(db_utils) -> None:
    """Make MLflow set up a database store's schema one process at a time.

    MLflow's tracking store creates a new database's tables and runs its schema
    migrations the first time a process opens it, without a lock: processes that open
    the same *new* database at once race (one fails with "table _alembic_tmp_... already
    exists", another finds a half-migrated schema and refuses it). MLflow's other
    stores guard the same step with a file lock (``_safe_initialize_tables``); this
    gives the tracking store the same guard in the processes synalinks-obs runs in: the
    app (its own MLflow calls included) and its exporter process, and an app's workers.
    Table creation runs under ``database_lock`` and checks again once it has the lock;
    the schema check waits for a creation in progress. Applied to the module
    ``mlflow.store.db.utils`` when it is imported (``importhook.when_imported``).
    """
    if getattr(db_utils, "_synalinks_obs_serialised", False):
        return
    initialize = db_utils._initialize_tables
    verify = db_utils._verify_schema
    tables_exist = db_utils._all_tables_exist

    def _initialize_tables(engine, *args, **kwargs):
        with database_lock(str(engine.url)):
            if tables_exist(engine):  # another process made them while we waited
                return None
            return initialize(engine, *args, **kwargs)

    def _verify_schema(engine, *args, **kwargs):
        with database_lock(str(engine.url)):
            return verify(engine, *args, **kwargs)

    _initialize_tables.__wrapped__ = initialize
    _verify_schema.__wrapped__ = verify
    db_utils._initialize_tables = _initialize_tables
    db_utils._verify_schema = _verify_schema
    db_utils._synalinks_obs_serialised = True


def guard_schema_setup() -> None:
    """Apply ``serialise_schema_setup`` once MLflow's database utilities are imported."""
    from synalinks_obs import importhook

    importhook.when_imported("mlflow.store.db.utils", serialise_schema_setup)


def resolve_experiment(tracking_uri, experiment_name) -> str:
    """Id of the named experiment in the store, created when missing (race-safe)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    guard_schema_setup()
    client = MlflowClient(tracking_uri)  # opens (creates, migrates) the store
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    try:
        return client.create_experiment(experiment_name)
    except MlflowException:  # another process created it first
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            raise
        return experiment.experiment_id


def first_line(exc: BaseException) -> str:
    try:
        text = str(exc).strip().splitlines()
    except Exception:
        return ""
    return text[0][:200] if text else ""


class StoreUnavailable(Exception):
    """The store did not pass the health probe (the message says how)."""


def _is_http(uri) -> bool:
    return isinstance(uri, str) and uri.startswith(("http://", "https://"))


def probe(uri: str, timeout: float = PROBE_TIMEOUT) -> None:
    """``GET <uri>/health``; raise ``StoreUnavailable`` saying why unless it answers 200."""
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            if reply.status == 200:
                return
            raise StoreUnavailable(f"tracking store {uri} answered HTTP {reply.status}")
    except urllib.error.HTTPError as exc:
        raise StoreUnavailable(f"tracking store {uri} answered HTTP {exc.code}") from None
    except StoreUnavailable:
        raise
    except Exception as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            raise StoreUnavailable(
                f"tracking store {uri} did not answer within {timeout:g} s"
            ) from None
        raise StoreUnavailable(
            f"tracking store {uri} unreachable ({type(reason).__name__}: {first_line(reason)})"
        ) from None


def _clear_server_version_cache() -> None:
    """MLflow caches a failed ``/version`` lookup as None (lru_cache): a store that was
    down once would be 'not supporting log_spans' for ever."""
    try:
        from mlflow.store.tracking.rest_store import RestStore

        RestStore._get_server_version.cache_clear()
    except Exception:
        pass


class _StoreState:
    __slots__ = ("healthy", "failures", "next_try", "reason")

    def __init__(self):
        self.healthy = False  # a probe (http) or a write succeeded since the last failure
        self.failures = 0
        self.next_try = 0.0
        self.reason = ""


class _Chunk:
    __slots__ = ("destination", "count", "payload", "attempts")

    def __init__(self, destination, count, payload):
        self.destination = destination
        self.count = count
        self.payload = payload  # list of span tuples, or their pickle
        self.attempts = 0

    def wires(self):
        payload = self.payload
        return pickle.loads(payload) if isinstance(payload, bytes) else payload


class Writer:
    """Writes span tuples to their destinations; see the module docstring."""

    def __init__(self, max_spans: int, notify=None):
        self.max_spans = max_spans
        self._chunks: collections.deque[_Chunk] = collections.deque()
        self.pending = 0  # spans in the backlog
        self.exported = 0
        self.dropped: collections.Counter = collections.Counter()
        self._stores: dict = {}
        self._experiment_ids: dict = {}
        self._clients: dict = {}
        self._notify = notify or (lambda *message: None)

    @property
    def held(self) -> int:
        """Spans waiting for a store that is failing (retried in the background)."""
        held = 0
        for chunk in self._chunks:
            state = self._stores.get(chunk.destination.tracking_uri)
            if state is not None and state.failures and not state.healthy:
                held += chunk.count
        return held

    # -- intake -------------------------------------------------------------------------
    def add(self, destination, count: int, payload) -> None:
        if self.pending + count > self.max_spans:
            self._drop(count, self._full_reason(destination))
            return
        self._chunks.append(_Chunk(destination, count, payload))
        self.pending += count

    def _full_reason(self, destination) -> str:
        state = self._stores.get(destination.tracking_uri)
        if state is not None and state.reason:
            return f"{state.reason}; buffer full ({self.max_spans} spans)"
        return f"the tracking store is slower than the app; buffer full ({self.max_spans} spans)"

    def _drop(self, count: int, reason: str) -> None:
        if count:
            self.dropped[reason] += count

    # -- experiments --------------------------------------------------------------------
    def experiment_id(self, destination) -> str:
        if destination.experiment_id:
            return destination.experiment_id
        key = (destination.tracking_uri, destination.experiment_name)
        found = self._experiment_ids.get(key)
        if found is None:
            self._check_store(destination.tracking_uri)
            found = resolve_experiment(*key)
            self._experiment_ids[key] = found
            self._notify("experiment", key, found)
        return found

    # -- writing ------------------------------------------------------------------------
    def _state(self, uri) -> _StoreState:
        state = self._stores.get(uri)
        if state is None:
            state = self._stores[uri] = _StoreState()
        return state

    def _check_store(self, uri) -> None:
        state = self._state(uri)
        if state.healthy or not _is_http(uri):
            return
        probe(uri)
        if state.failures:
            _clear_server_version_cache()
        state.healthy = True

    def _failed(self, uri, exc) -> None:
        state = self._state(uri)
        was_healthy = state.healthy
        state.healthy = False
        state.failures += 1
        state.next_try = time.monotonic() + min(MAX_BACKOFF, 0.5 * 2 ** (state.failures - 1))
        if isinstance(exc, StoreUnavailable):
            reason = str(exc)
        else:
            reason = f"{type(exc).__name__}: {first_line(exc)}"
            if "server version" in reason:
                _clear_server_version_cache()
        if reason != state.reason:
            state.reason = reason
            self._notify("problem", reason)
        return was_healthy

    def _ok(self, uri) -> None:
        state = self._state(uri)
        state.healthy = True
        state.failures = 0
        state.next_try = 0.0
        state.reason = ""

    def _client(self, tracking_uri):
        client = self._clients.get(tracking_uri)
        if client is None:
            from mlflow.tracing.client import TracingClient

            guard_schema_setup()
            client = TracingClient(tracking_uri)
            self._clients[tracking_uri] = client
        return client

    def pump(self) -> float | None:
        """Write what can be written now. Returns None when the backlog is empty, else
        the seconds until a store that failed may be tried again."""
        now = time.monotonic()
        blocked: list[_Chunk] = []
        wait = None
        while self._chunks:
            first = self._chunks.popleft()
            destination = first.destination
            state = self._state(destination.tracking_uri)
            if now < state.next_try:
                blocked.append(first)
                delay = state.next_try - now
                wait = delay if wait is None else min(wait, delay)
                continue
            batch = [first]
            count = first.count
            while self._chunks and count < BATCH_SPANS:
                nxt = self._chunks[0]
                if nxt.destination != destination:
                    break
                batch.append(self._chunks.popleft())
                count += nxt.count
            if not self._write(destination, batch, count):
                blocked.extend(batch)
                wait = 0.0 if wait is None else wait
            now = time.monotonic()
        self._chunks.extend(blocked)
        if not self._chunks:
            return None
        return max(0.0, wait or 0.0)

    def _write(self, destination, batch, count) -> bool:
        """True when the batch is done (written or dropped for good)."""
        uri = destination.tracking_uri
        try:
            self._check_store(uri)
            experiment_id = self.experiment_id(destination)
            wires = [wire for chunk in batch for wire in chunk.wires()]
            spans = [wire_to_span(wire) for wire in wires]
            self._client(uri).log_spans(experiment_id, spans)
        except Exception as exc:
            was_healthy = self._failed(uri, exc)
            if isinstance(exc, StoreUnavailable) or not was_healthy and _is_http(uri):
                return False  # the store is down: keep the batch for later
            for chunk in batch:
                chunk.attempts += 1
            if max(chunk.attempts for chunk in batch) >= MAX_ATTEMPTS:
                self._done_with(batch, count, f"{type(exc).__name__}: {first_line(exc)}")
                return True
            return False
        self._ok(uri)
        self.pending -= count
        self.exported += count
        if destination.run_id is not None:
            self._link_to_run(destination, experiment_id, wires)
        return True

    def _done_with(self, batch, count, reason) -> None:
        self.pending -= count
        self._drop(count, reason)

    def _link_to_run(self, destination, experiment_id, wires) -> None:
        """Give each finished root of a run's traces MLflow's source-run metadata.

        ``log_spans`` cannot write trace metadata, so the finished trace info (same times,
        state and name as ``log_spans`` derived from the spans) is sent again with
        ``mlflow.sourceRun`` through the store's ``start_trace``, which merges it into the
        existing trace (see ``synalinks_obs.training``).
        """
        client = self._client(destination.tracking_uri)
        for wire in wires:
            if wire[W_PARENT_SPAN_ID] is not None or wire[W_FOREIGN]:
                continue
            try:
                client.start_trace(root_trace_info_of(wire, experiment_id, destination.run_id))
            except Exception as exc:
                self._notify(
                    "warning",
                    f"cannot link traces to run {destination.run_id} "
                    f"({type(exc).__name__}: {first_line(exc)}); the spans were written",
                )
                return

    def drain(
        self, deadline: float, wait_for_down_stores: bool = False,
        timeout_reason: str = "exit flush timed out",
    ) -> None:
        """Write the backlog until ``deadline``; drop (and count) what is left.

        A store already known to be down gets one more probe, not the whole budget
        (unless ``wait_for_down_stores``)."""
        if not wait_for_down_stores:
            for uri, state in list(self._stores.items()):
                if not state.healthy and state.failures and _is_http(uri):
                    try:
                        probe(uri, timeout=min(PROBE_TIMEOUT, max(0.1, deadline - time.monotonic())))
                        state.next_try = 0.0
                    except StoreUnavailable as exc:
                        state.reason = str(exc)
                        self._drop_destination_uri(uri, state.reason)
        while self._chunks:
            wait = self.pump()
            if wait is None:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(wait, left))
        while self._chunks:
            chunk = self._chunks.popleft()
            state = self._stores.get(chunk.destination.tracking_uri)
            reason = state.reason if state is not None and state.reason else timeout_reason
            self._done_with([chunk], chunk.count, reason)

    def _drop_destination_uri(self, uri, reason) -> None:
        keep = collections.deque()
        for chunk in self._chunks:
            if chunk.destination.tracking_uri == uri:
                self._done_with([chunk], chunk.count, reason)
            else:
                keep.append(chunk)
        self._chunks = keep


# -- the exporter process ---------------------------------------------------------------

_HEADER = struct.Struct(">I")


def read_frame(stream):
    """One pickled frame from a binary stream; None at EOF."""
    header = stream.read(_HEADER.size)
    if not header or len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    if data is None or len(data) < size:
        return None
    return pickle.loads(data)


def frame(message) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def main(argv=None) -> int:
    """Entry point of the exporter process: ``argv = [out_fd, exit_budget, max_spans]``."""
    import signal

    argv = sys.argv[1:] if argv is None else argv
    out_fd, exit_budget, max_spans = int(argv[0]), float(argv[1]), int(argv[2])
    try:  # in the background: when cores are scarce, the app goes first
        os.nice(10)
    except OSError:
        pass
    # Ctrl-C reaches the whole process group: the app decides when we stop (EOF).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    parent = os.getppid()
    inbox: collections.deque = collections.deque()
    wake = threading.Condition(threading.Lock())
    out_lock = threading.Lock()

    def send(*message) -> None:
        with out_lock:
            try:
                write_all(out_fd, frame(message))
            except OSError:
                pass  # the app is gone: keep writing the store anyway

    def reader() -> None:
        stdin = sys.stdin.buffer
        while True:
            try:
                message = read_frame(stdin)
            except Exception:
                message = None
            with wake:
                inbox.append(message)
                wake.notify()
            if message is None:
                return

    writer = Writer(max_spans, notify=send)
    threading.Thread(target=reader, name="synalinks-obs-reader", daemon=True).start()
    # Ready once MLflow is imported: until then the app writes what cannot wait itself.
    from mlflow.entities import Span  # noqa: F401
    from mlflow.tracing.client import TracingClient  # noqa: F401
    from mlflow.tracking import MlflowClient  # noqa: F401
    from opentelemetry.sdk.trace import ReadableSpan  # noqa: F401

    # What is imported lives for ever: keep the collector off it, and collect rarely
    # (the garbage of a write is mostly freed by reference counting).
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
    send("hello", os.getpid())
    wait = None
    reported = (0, {})
    closing = False
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
                _, destination, count, payload = message
                writer.add(destination, count, payload)
            elif kind == "close":  # the app is exiting: how long the last writes may take
                exit_budget = float(message[1])
        if closing or stop.is_set() or os.getppid() != parent:
            writer.drain(
                time.monotonic() + exit_budget,
                timeout_reason=f"exit flush timed out after {exit_budget:g} s",
            )
        else:
            wait = writer.pump()
        state = (writer.exported, dict(writer.dropped), writer.held)
        if state != reported:
            reported = state
            send("done", *state)
        if closing or stop.is_set() or os.getppid() != parent:
            send("bye", *state)
            return 0


def run_and_exit(argv=None) -> None:
    """``main()``, then leave without the interpreter's teardown.

    By then every span is written and committed (or reported dropped) and the app has
    our last answer, and each answer goes out unbuffered on a raw descriptor: the
    teardown of MLflow's modules would only add about a second to the app's exit."""
    status = main(argv)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(status)


if __name__ == "__main__":
    run_and_exit()

"""Read traces back through MLflow's own client API, for assertions.

Plain functions (not fixtures) so tests, benchmarks and debugging sessions
can share them:

- `load_traces(tracking_uri, experiment_name)`: every trace of the
  experiment, oldest first, each with its spans loaded;
- `wait_for_traces(tracking_uri, experiment_name, count, timeout)`: poll
  `load_traces` until at least `count` complete traces are there;
- `span_tree(trace)`: the root span as nested dicts, children by start time;
- `render(trace)`: that tree as indented text, for assertion messages.

mlflow is imported lazily, like everywhere in the test support code.
"""

import inspect
import json
import time

PAGE_SIZE = 100
# Set on every span by MLflow itself; noise in a rendered tree.
_HIDDEN_ATTRIBUTES = {"mlflow.traceRequestId"}


class IncompleteTraceError(AssertionError):
    """A trace is listed in the experiment but its spans cannot be read."""


def _experiment_id(client, experiment_name):
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise LookupError(
            f"No experiment named {experiment_name!r} in {client.tracking_uri}"
        )
    return experiment.experiment_id


def load_traces(tracking_uri, experiment_name):
    """Return all traces of `experiment_name`, oldest first, spans loaded.

    Trace infos are paged through with ``search_traces`` (which would
    silently drop a trace whose spans fail to download), then each trace is
    fetched with ``get_trace``. Pending asynchronous trace writes of this
    process are flushed first. Raises `LookupError` if the experiment does
    not exist and `IncompleteTraceError` if a listed trace has no spans.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    experiment_id = _experiment_id(client, experiment_name)
    trace_ids = []
    page_token = None
    # ``flush`` (pending asynchronous writes first) is newer than some MLflow releases
    # the compatibility matrix runs.
    can_flush = "flush" in inspect.signature(client.search_traces).parameters
    while True:
        extra = {"flush": page_token is None} if can_flush else {}
        page = client.search_traces(
            locations=[experiment_id],
            max_results=PAGE_SIZE,
            order_by=["timestamp_ms ASC"],
            page_token=page_token,
            include_spans=False,
            **extra,
        )
        trace_ids.extend(trace.info.trace_id for trace in page)
        page_token = page.token
        if not page_token:
            break
    traces = []
    for trace_id in trace_ids:
        trace = client.get_trace(trace_id, display=False)
        if not trace.data.spans:
            raise IncompleteTraceError(f"Trace {trace_id} has no spans")
        traces.append(trace)
    return traces


def wait_for_traces(tracking_uri, experiment_name, count, timeout=60.0, interval=0.25):
    """Poll until the experiment holds at least `count` complete traces.

    A missing experiment or a trace whose spans are not readable yet count as
    "not there yet". Returns the traces (as `load_traces`) or raises
    `TimeoutError` saying how many were seen and the last error met.
    """
    deadline = time.monotonic() + timeout
    seen, last_error = 0, None
    while True:
        try:
            traces = load_traces(tracking_uri, experiment_name)
        except (LookupError, IncompleteTraceError) as exc:
            traces, last_error = [], exc
        else:
            seen, last_error = len(traces), None
            if seen >= count:
                return traces
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"Expected >= {count} traces in {experiment_name!r} at "
                f"{tracking_uri} within {timeout}s, saw {seen}"
                + (f" (last error: {last_error})" if last_error else "")
            )
        time.sleep(interval)


def _node(span):
    return {
        "name": span.name,
        "span_type": span.span_type,
        "status": span.status.status_code.value,
        "attributes": dict(span.attributes),
        "events": [
            {"name": event.name, "attributes": dict(event.attributes)}
            for event in span.events
        ],
        "start_time_ns": span.start_time_ns,
        "children": [],
    }


def _roots(trace):
    """Build the span forest; spans whose parent is missing become roots."""
    spans = sorted(trace.data.spans, key=lambda span: span.start_time_ns)
    nodes = {span.span_id: _node(span) for span in spans}
    roots = []
    for span in spans:
        parent = nodes.get(span.parent_id) if span.parent_id else None
        (parent["children"] if parent else roots).append(nodes[span.span_id])
    return roots


def span_tree(trace):
    """Return the trace's root span as nested dicts.

    Each node has ``name``, ``span_type``, ``status`` (``"OK"``,
    ``"ERROR"``, ``"UNSET"``), ``attributes`` (decoded values), ``events``
    (``name`` and ``attributes``), ``start_time_ns`` and ``children`` (sorted
    by start time). Raises `ValueError` (with the rendered trace) unless the
    trace has exactly one root, since an orphan span is a tracing bug.
    """
    roots = _roots(trace)
    if len(roots) != 1:
        raise ValueError(
            f"Trace {trace.info.trace_id} has {len(roots)} root spans:\n"
            + render(trace)
        )
    return roots[0]


def _short(value, width):
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def _render_node(node, depth, attributes, width, lines):
    indent = "  " * depth
    lines.append(f"{indent}{node['name']} [{node['span_type']}] {node['status']}")
    if attributes:
        for key, value in sorted(node["attributes"].items()):
            if key not in _HIDDEN_ATTRIBUTES:
                lines.append(f"{indent}  | {key} = {_short(value, width)}")
        for event in node["events"]:
            lines.append(f"{indent}  ! {event['name']} {_short(event['attributes'], width)}")
    for child in node["children"]:
        _render_node(child, depth + 1, attributes, width, lines)


def render(trace, attributes=True, width=100):
    """Render the trace as an indented tree of ``name [TYPE] STATUS`` lines,
    each followed by its ``| key = value`` attributes and ``! event`` lines
    (values cut at `width` characters) unless `attributes` is False."""
    info = trace.info
    lines = [
        f"trace {info.trace_id} {info.state.value} "
        f"({len(trace.data.spans)} spans, {info.execution_duration} ms)"
    ]
    for root in _roots(trace):
        _render_node(root, 1, attributes, width, lines)
    return "\n".join(lines)

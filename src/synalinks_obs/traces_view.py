"""A terminal view of recorded traces: ``python -m synalinks_obs traces``.

Prints the most recent traces of an experiment as trees, one line per span::

    trace tr-69e5...  2026-11-26 21:14:15  1.71 s  3 spans  $0.000021
    └── Functional:qa_program  CHAIN  1.71 s  $0.000021
        └── Generator:answer_generator  LLM  1.70 s  $0.000021
            └── LanguageModel:language_model  CHAT_MODEL  1.69 s  $0.000021  120+12 tokens

with the span type, the wall duration, the LM cost of the call including its children
(``synalinks.cost``), token usage when MLflow's chat attributes carry it, and
``ERROR <exception>`` for failed calls. Plain text, no colours: it reads the same in a
terminal, a log file or a CI transcript.
"""

import argparse
import datetime
import json
import os
import sys

DEFAULT_EXPERIMENT = "synalinks_traces"


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m synalinks_obs traces",
        description="Print the most recent traces of an MLflow experiment as span trees.",
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else MLflow's default store, "
        "sqlite:///mlflow.db in the working directory)",
    )
    parser.add_argument(
        "--experiment-name",
        default=None,
        help=f"experiment to read (default: $MLFLOW_EXPERIMENT_NAME, else {DEFAULT_EXPERIMENT})",
    )
    parser.add_argument("--last", type=int, default=10, help="how many traces (default: 10)")
    parser.add_argument(
        "--since-ms",
        type=int,
        default=None,
        help="only traces started at or after this Unix time in milliseconds",
    )
    parser.add_argument(
        "--symbolic",
        action="store_true",
        help="also show traces made only of symbolic (program-building) calls",
    )
    return parser


def _attribute(span, key, default=None):
    value = span.attributes.get(key, default) if span.attributes else default
    if isinstance(value, str) and key != "synalinks.module_name":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _seconds(value):
    if value is None:
        return ""
    if value < 1:
        return f"{value * 1000:.0f} ms"
    return f"{value:.2f} s"


def _span_line(span):
    start, end = span.start_time_ns, span.end_time_ns
    duration = (end - start) / 1e9 if start is not None and end is not None else None
    parts = [span.name, str(span.span_type or "UNKNOWN"), _seconds(duration)]
    cost = _attribute(span, "synalinks.cost")
    if isinstance(cost, (int, float)) and cost:
        parts.append(f"${cost:.6f}")
    usage = _attribute(span, "mlflow.chat.tokenUsage")
    if isinstance(usage, dict) and usage.get("input_tokens") is not None:
        parts.append(f"{usage.get('input_tokens')}+{usage.get('output_tokens', 0)} tokens")
    if _attribute(span, "synalinks.is_symbolic") is True:
        parts.append("symbolic")
    status = getattr(getattr(span, "status", None), "status_code", None)
    if str(getattr(status, "value", status)) == "ERROR":
        error = next((e for e in span.events or [] if e.name == "exception"), None)
        if error is not None:
            attributes = error.attributes or {}
            parts.append(
                f"ERROR {attributes.get('exception.type', '')}: {attributes.get('exception.message', '')}"
            )
        else:
            parts.append("ERROR")
    return "  ".join(p for p in parts if p)


def _tree_lines(trace):
    spans = sorted(trace.data.spans, key=lambda s: s.start_time_ns or 0)
    ids = {s.span_id for s in spans}
    children = {}
    roots = []
    for span in spans:
        if span.parent_id and span.parent_id in ids:
            children.setdefault(span.parent_id, []).append(span)
        else:
            roots.append(span)
    lines = []

    def walk(span, prefix, last):
        lines.append(prefix + ("└── " if last else "├── ") + _span_line(span))
        kids = children.get(span.span_id, [])
        for i, child in enumerate(kids):
            walk(child, prefix + ("    " if last else "│   "), i == len(kids) - 1)

    for i, root in enumerate(roots):
        walk(root, "", i == len(roots) - 1)
    return lines


def _trace_header(trace):
    info = trace.info
    started = datetime.datetime.fromtimestamp(info.request_time / 1000).strftime("%Y-%m-%d %H:%M:%S")
    duration = info.execution_duration / 1000 if info.execution_duration is not None else None
    roots = [s for s in trace.data.spans if not s.parent_id]
    cost = sum(
        c for c in (_attribute(s, "synalinks.cost") for s in roots) if isinstance(c, (int, float))
    )
    parts = [f"trace {info.trace_id}", started, _seconds(duration), f"{len(trace.data.spans)} spans"]
    if cost:
        parts.append(f"${cost:.6f}")
    return "  ".join(p for p in parts if p)


def _is_symbolic_only(trace):
    return all(_attribute(s, "synalinks.is_symbolic") is True for s in trace.data.spans)


def load(tracking_uri, experiment_name, last, since_ms=None, symbolic=False):
    """The ``last`` most recent traces (oldest first), with their spans."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return None
    found, token = [], None
    while True:
        page = client.search_traces(
            locations=[experiment.experiment_id],
            max_results=100,
            order_by=["timestamp_ms DESC"],
            page_token=token,
            include_spans=False,
        )
        stop = False
        for info_only in page:
            if since_ms is not None and info_only.info.request_time < since_ms:
                stop = True
                break
            trace = client.get_trace(info_only.info.trace_id, display=False)
            if not trace.data.spans or (not symbolic and _is_symbolic_only(trace)):
                continue
            found.append(trace)
            if len(found) >= last:
                stop = True
                break
        token = page.token
        if stop or not token:
            break
    return list(reversed(found))


def main(argv=None):
    args = _parser().parse_args(argv)
    tracking_uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None
    experiment_name = args.experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    import mlflow

    shown_uri = tracking_uri or mlflow.get_tracking_uri()
    traces = load(tracking_uri, experiment_name, args.last, args.since_ms, args.symbolic)
    if traces is None:
        print(f"No experiment {experiment_name!r} in {shown_uri}.", file=sys.stderr)
        return 1
    noun = "trace" if len(traces) == 1 else "traces"
    kind = noun if args.symbolic else f"{noun} of real (non-symbolic) calls"
    print(f"{len(traces)} {kind} in experiment {experiment_name!r} at {shown_uri}")
    for trace in traces:
        print()
        print(_trace_header(trace))
        for line in _tree_lines(trace):
            print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

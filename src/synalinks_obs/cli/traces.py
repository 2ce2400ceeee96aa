"""A terminal view of recorded traces: ``python -m synalinks_obs traces``.

Prints the most recent traces of an experiment as trees (drawn by ``rich``), one line per
span, readable without a browser (over SSH, in a CI log)::

    trace tr-69e5...  2026-11-26 21:14:15  1.71 s  3 spans  $0.000021  OK
    └── Functional:qa_program  CHAIN  1.71 s  $0.000021  OK
        └── Generator:answer_generator  LLM  1.70 s  $0.000021  OK
            └── LanguageModel:language_model  CHAT_MODEL  1.69 s  $0.000021  120+12 tokens  OK

Each line: span name, span type, wall duration, the LM cost of the call including its
children (``synalinks.cost``), token usage when MLflow's chat attributes carry it, and the
status: ``OK``, or ``ERROR`` followed by the exception (``ValueError: message``) on failed
calls. Colours only on a terminal; piped output is plain text and never wrapped.

    python -m synalinks_obs traces [--last N] [--experiment NAME] [--tracking-uri URI]
                                   [--since-ms MS] [--symbolic]
"""

import argparse
import datetime
import json
import os
import sys

from synalinks_obs.settings import BUILD_SUFFIX, DEFAULT_EXPERIMENT


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
        "--experiment",
        dest="experiment_name",
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
        help="also show the program-building (symbolic) traces, including those of the "
        f"experiment's '{BUILD_SUFFIX}' companion",
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


def _status(span):
    status = getattr(getattr(span, "status", None), "status_code", None)
    return str(getattr(status, "value", status) or "UNSET")


def _exception(span):
    """``Type: message`` of the span's exception event (first line), or None."""
    event = next((e for e in span.events or [] if e.name == "exception"), None)
    if event is None:
        return None
    attributes = event.attributes or {}
    message = str(attributes.get("exception.message", "")).strip().splitlines()
    text = f"{attributes.get('exception.type', 'Exception')}: {message[0] if message else ''}"
    return text if len(text) <= 300 else text[:297] + "..."


def _span_label(span):
    """One span as a ``rich`` Text: name, type, duration, cost, tokens, status."""
    from rich.text import Text

    start, end = span.start_time_ns, span.end_time_ns
    duration = (end - start) / 1e9 if start is not None and end is not None else None
    label = Text()
    label.append(span.name, style="bold")
    label.append("  ")
    label.append(str(span.span_type or "UNKNOWN"), style="cyan")
    extras = [_seconds(duration)]
    cost = _attribute(span, "synalinks.cost")
    if isinstance(cost, (int, float)) and cost:
        extras.append(f"${cost:.6f}")
    usage = _attribute(span, "mlflow.chat.tokenUsage")
    if isinstance(usage, dict) and usage.get("input_tokens") is not None:
        extras.append(f"{usage.get('input_tokens')}+{usage.get('output_tokens', 0)} tokens")
    if _attribute(span, "synalinks.is_symbolic") is True:
        extras.append("symbolic")
    for extra in extras:
        if extra:
            label.append("  " + extra)
    status = _status(span)
    if status == "ERROR":
        label.append("  ")
        label.append("ERROR", style="bold red")
        error = _exception(span)
        if error:
            label.append("  " + error, style="red")
    else:
        label.append("  ")
        label.append("OK" if status in ("OK", "UNSET") else status, style="green")
    return label


def build_tree(trace):
    """The trace as a ``rich.tree.Tree``: the header, then the spans by start time."""
    from rich.tree import Tree

    spans = sorted(trace.data.spans, key=lambda s: s.start_time_ns or 0)
    ids = {s.span_id for s in spans}
    children = {}
    roots = []
    for span in spans:
        if span.parent_id and span.parent_id in ids:
            children.setdefault(span.parent_id, []).append(span)
        else:
            roots.append(span)
    tree = Tree(_trace_header(trace), guide_style="dim")

    def add(node, span):
        branch = node.add(_span_label(span))
        for child in children.get(span.span_id, []):
            add(branch, child)

    for root in roots:
        add(tree, root)
    return tree


def _trace_header(trace):
    from rich.text import Text

    info = trace.info
    started = datetime.datetime.fromtimestamp(info.request_time / 1000).strftime("%Y-%m-%d %H:%M:%S")
    duration = info.execution_duration / 1000 if info.execution_duration is not None else None
    roots = [s for s in trace.data.spans if not s.parent_id]
    cost = sum(
        c for c in (_attribute(s, "synalinks.cost") for s in roots) if isinstance(c, (int, float))
    )
    parts = [f"trace {info.trace_id}", started, _seconds(duration), f"{len(trace.data.spans)} span{'' if len(trace.data.spans) == 1 else 's'}"]
    if cost:
        parts.append(f"${cost:.6f}")
    header = Text("  ".join(p for p in parts if p), style="bold")
    state = str(getattr(info.state, "value", info.state) or "")
    if state:
        header.append("  ")
        header.append(state, style="bold red" if state == "ERROR" else "green")
    return header


def _is_symbolic_only(trace):
    return all(_attribute(s, "synalinks.is_symbolic") is True for s in trace.data.spans)


def load(tracking_uri, experiment_name, last, since_ms=None, symbolic=False):
    """The ``last`` most recent traces (oldest first), with their spans.

    ``symbolic``: also the program-building traces, from the experiment and from its
    ``-build`` companion (``SYNALINKS_OBS_SYMBOLIC_TRACES``). None when none of the
    experiments to read exists.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    names = [experiment_name] + ([experiment_name + BUILD_SUFFIX] if symbolic else [])
    experiments = [client.get_experiment_by_name(name) for name in names]
    locations = [e.experiment_id for e in experiments if e is not None]
    if not locations:
        return None
    found, token = [], None
    while True:
        page = client.search_traces(
            locations=locations,
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


def _read_problem(tracking_uri):
    """A server's problem in one line (down, TLS, credentials refused), or None; asked
    first so that a server that is down fails at once, not after MLflow's retries."""
    from synalinks_obs import uris
    from synalinks_obs.store import health

    if not uris.is_http(tracking_uri):
        return None
    try:
        health.probe(tracking_uri)
    except health.StoreUnavailable as exc:
        return str(exc)
    return None


def _failure(tracking_uri, exc):
    from synalinks_obs import reporting, uris
    from synalinks_obs.store import health

    refused = health.rejection(tracking_uri, exc) if uris.is_http(tracking_uri) else None
    if refused is not None:
        return str(refused)
    return f"cannot read {uris.display(tracking_uri)} ({type(exc).__name__}: {reporting.first_line(exc)})"


def _console():
    """A console for stdout: colours on a terminal only; piped output is never wrapped."""
    from rich.console import Console

    if sys.stdout.isatty():
        return Console(highlight=False)
    return Console(highlight=False, width=100_000, no_color=True, color_system=None)


def main(argv=None):
    args = _parser().parse_args(argv)
    from synalinks_obs import uris

    tracking_uri = uris.resolve(args.tracking_uri).uri
    experiment_name = args.experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    shown_uri = uris.display(tracking_uri)
    problem = uris.file_store_problem(tracking_uri, "--tracking-uri" if args.tracking_uri else "MLFLOW_TRACKING_URI")
    if problem is not None:  # MLflow would create an empty file store there
        print(problem.replace("; tracing is off", ""), file=sys.stderr)
        return 1
    sqlite = uris.sqlite_path(tracking_uri)
    if sqlite is not None and not os.path.exists(sqlite):  # only read: never create a store
        print(f"No tracking store at {shown_uri} (the file does not exist): run a traced app "
              "first, or pass --tracking-uri.", file=sys.stderr)
        return 1
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    problem = _read_problem(tracking_uri)
    if problem is None:
        try:
            traces = load(tracking_uri, experiment_name, args.last, args.since_ms, args.symbolic)
        except Exception as exc:
            problem = _failure(tracking_uri, exc)
    if problem is not None:
        print(f"synalinks-obs traces: {problem}", file=sys.stderr)
        return 1
    if traces is None:
        print(f"No experiment {experiment_name!r} in {shown_uri}.", file=sys.stderr)
        return 1
    noun = "trace" if len(traces) == 1 else "traces"
    if args.symbolic:
        where = f"experiments {experiment_name!r} and {experiment_name + BUILD_SUFFIX!r}"
        kind = noun
    else:
        where = f"experiment {experiment_name!r}"
        kind = f"{noun} of real (non-symbolic) calls"
    console = _console()
    console.print(f"{len(traces)} {kind} in {where} at {shown_uri}", markup=False)
    for trace in traces:
        console.print()
        console.print(build_tree(trace))
    return 0


if __name__ == "__main__":
    sys.exit(main())

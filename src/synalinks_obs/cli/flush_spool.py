"""Write the spans kept in the spool now: ``python -m synalinks_obs flush-spool``.

Spans that could not be written at exit are kept in ``SYNALINKS_OBS_SPOOL_DIR`` when it is
set (``store.spool``); the next process that traces into the same store writes them. This
command does it at once, for one store, with the same ``Writer`` the exporter uses: it
claims the store's spool files, writes them with MLflow's ``log_spans``, and deletes each
file once all its spans are written. Spans it cannot write in ``--timeout`` seconds go
back to the spool (nothing lost, nothing written twice). Exit status 0 when the store's
spool is empty afterwards.

    python -m synalinks_obs flush-spool [--spool-dir DIR] [--tracking-uri URI] [--timeout S]
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m synalinks_obs flush-spool",
        description="Write the spans kept in the spool directory to their tracking store.",
    )
    parser.add_argument(
        "--spool-dir", default=None,
        help="the spool directory (default: $SYNALINKS_OBS_SPOOL_DIR)",
    )
    parser.add_argument(
        "--tracking-uri", default=None,
        help="the store the spans were traced into (default: $MLFLOW_TRACKING_URI, else "
        "MLflow's default store, as tracing resolves it)",
    )
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds to keep writing at most (default: 300)")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    from synalinks_obs import uris
    from synalinks_obs.store.spool import Spool
    from synalinks_obs.store.writer import Writer

    directory = args.spool_dir or os.environ.get("SYNALINKS_OBS_SPOOL_DIR", "").strip()
    if not directory:
        print("synalinks-obs: no spool directory: pass --spool-dir or set SYNALINKS_OBS_SPOOL_DIR",
              file=sys.stderr)
        return 2
    directory = os.path.abspath(os.path.expanduser(directory))
    if not os.path.isdir(directory):
        print(f"synalinks-obs: the spool directory {directory} does not exist: nothing to write")
        return 0
    uri = uris.resolve(args.tracking_uri).uri
    spool = Spool(directory)
    waiting = spool.pending(uri)
    if not waiting:
        others = spool.pending()
        print(f"synalinks-obs: no spooled spans for {uris.display(uri)} in {directory}"
              + (f" ({others} file(s) for other stores)" if others else ""))
        return 0
    problems = []
    writer = Writer(max_spans=10**9, notify=lambda kind, *rest: problems.append((kind, rest)),
                    spool=spool)
    batches = spool.claim(uri)
    writer.take_spooled(batches)
    writer.drain(time.monotonic() + args.timeout, wait_for_down_stores=True,
                 timeout_reason=f"not written within --timeout {args.timeout:g} s")
    kept = sum(writer.spooled.values())
    dropped = sum(writer.dropped.values())
    line = f"synalinks-obs: {writer.exported} spooled span(s) written to {uris.display(uri)}"
    if kept:
        why = "; ".join(f"{n} {reason}" for reason, n in writer.spooled.most_common())
        line += f"; {kept} kept in {directory} for later ({why})"
    if dropped:
        why = "; ".join(f"{n} {reason}" for reason, n in writer.dropped.most_common())
        line += f"; {dropped} dropped ({why})"
    print(line)
    return 0 if not kept and not spool.pending(uri) else 1

"""``python -m synalinks_obs COMMAND``: command-line tools of synalinks-obs.

Commands:
    traces   print the most recent traces of an experiment as span trees
             (``python -m synalinks_obs traces --help``)
    doctor   check the set-up, one line per check with the fix; exit 0 when all pass
             (``python -m synalinks_obs doctor --help``)
    flush-spool  write the spans kept in ``SYNALINKS_OBS_SPOOL_DIR`` at an earlier exit

To run a program traced, use the launcher: ``python -m synalinks_obs.run app.py``.
"""

import sys

COMMANDS = {
    "traces": ("synalinks_obs.cli.traces", "print recent traces as span trees"),
    "doctor": ("synalinks_obs.cli.doctor", "check the set-up: tracing, versions, server, artifact proxy"),
    "flush-spool": ("synalinks_obs.cli.flush_spool", "write the spans kept in SYNALINKS_OBS_SPOOL_DIR now"),
}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = ["usage: python -m synalinks_obs COMMAND [options]", "", "commands:"]
        lines += [f"  {name:<11} {text}" for name, (_, text) in COMMANDS.items()]
        lines += ["", "To run a program with tracing on: python -m synalinks_obs.run app.py [args]"]
        known = not argv or argv[0] in ("-h", "--help")
        print("\n".join(lines), file=sys.stdout if known else sys.stderr)
        if not known:
            print(f"unknown command {argv[0]!r}", file=sys.stderr)
        return 0 if known else 2
    import importlib

    module = importlib.import_module(COMMANDS[argv[0]][0])
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())

"""``python -m synalinks_obs.run``: run a Python program with Synalinks tracing on.

Usage::

    python -m synalinks_obs.run [--tracking-uri URI] [--experiment-name NAME] [--] app.py [args...]
    python -m synalinks_obs.run [--tracking-uri URI] [--experiment-name NAME] [--] -m package.module [args...]
    synalinks-obs-run ...                       (the same, as a console script)

The target runs in this process as ``python app.py args...`` / ``python -m package.module
args...`` would run it: same ``sys.argv``, a real ``__main__`` module, ``sys.path[0]``
(the script's directory, or the working directory for ``-m``), stdin/stdout/stderr,
exit status (``sys.exit(n)``, ``SystemExit``), and an uncaught exception prints its
traceback (without launcher frames) and exits with status 1.

Tracing: every Synalinks module call of the app is traced into MLflow, whether or not
(and whenever) the app imports Synalinks. Configuration comes from the options, then the
environment (``MLFLOW_TRACKING_URI``, ``MLFLOW_EXPERIMENT_NAME``, ``SYNALINKS_OBS_*``),
then the defaults (MLflow's default store, ``sqlite:///mlflow.db`` in the working
directory; experiment ``synalinks_traces``). A bad value is reported in one line naming
it and what is allowed, and the app runs anyway, with the default for that setting.

Subprocesses: the launcher exports ``SYNALINKS_OBSERVABILITY=1``, the tracking URI (made
absolute, so a child in another directory writes to the same store), the experiment
name, and puts synalinks-obs' ``sitecustomize`` first on ``PYTHONPATH`` (it chains to any
``sitecustomize`` you already have), so Python processes the app starts with an
interpreter that has synalinks-obs are traced into the same experiment.

Implementation notes: scripts run through ``runpy``'s machinery (``-m`` uses exactly what
``python -m`` uses; directories and zip files use ``runpy.run_path``); a plain source
file is compiled and executed in a fresh ``__main__`` module that stays in
``sys.modules`` after the script's body has run, as with ``python app.py``
(``runpy.run_path`` would swap it back out, breaking pickling of ``__main__`` objects in
``atexit`` handlers and worker threads).
"""

from __future__ import annotations

import os
import sys

from synalinks_obs import uris
from synalinks_obs.compat import stdlib as stdlib_compat

PROG = "python -m synalinks_obs.run"

HELP = f"""\
usage: {PROG} [--tracking-uri URI] [--experiment-name NAME] [--] app.py [args ...]
       {PROG} [--tracking-uri URI] [--experiment-name NAME] [--] -m package.module [args ...]
       (also installed as the console script `synalinks-obs-run`)

Run a Python program exactly as `python app.py` / `python -m package.module` would
(sys.argv, __main__, sys.path[0], stdin, exit status, tracebacks), with every Synalinks
module call traced into MLflow. The app needs no change.

options:
  --tracking-uri URI     MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else
                         MLflow's default store: sqlite:///mlflow.db in the working
                         directory). A relative sqlite/file location is made absolute.
  --experiment-name NAME MLflow experiment for the traces (default:
                         $MLFLOW_EXPERIMENT_NAME, else synalinks_traces).
  --                     end of launcher options (everything after is the target).
  -h, --help             show this help and exit.

Options come from the command line, then the environment, then the defaults. Other
settings are read from SYNALINKS_OBS_* variables (see the README's configuration table),
e.g. SYNALINKS_OBS_CAPTURE_PAYLOADS=0, SYNALINKS_OBS_SAMPLE_RATE=0.1. A bad value prints
one line naming it and what is allowed; the app still runs, with that setting's default.

Subprocesses the app starts with the same interpreter are traced too, into the same
store and experiment: the launcher sets SYNALINKS_OBSERVABILITY=1, MLFLOW_TRACKING_URI,
MLFLOW_EXPERIMENT_NAME (when given) and puts synalinks-obs' sitecustomize first on
PYTHONPATH (it still runs any sitecustomize you already have, once).

After the run, `python -m synalinks_obs traces` prints the recorded trace trees, and
`mlflow ui --backend-store-uri sqlite:///mlflow.db` opens the default store in a browser.
"""

_OPTIONS = {"--tracking-uri": "tracking_uri", "--experiment-name": "experiment_name"}


class UsageError(Exception):
    """A launcher command line that cannot be run (exit status 2, as argparse)."""


# -- command line ------------------------------------------------------------------------
def parse_args(argv: list[str]) -> tuple[dict, tuple[str, str, list[str]]]:
    """Split ``argv`` into launcher options and the target ``(kind, name, args)``.

    ``kind`` is ``"path"`` (a script, directory or zip file) or ``"module"`` (``-m``).
    Launcher options stop at the first argument that is not one of them: everything from
    the target on belongs to the app, even if it looks like a launcher option.
    """
    options = {field: None for field in _OPTIONS.values()}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("-h", "--help"):
            sys.stdout.write(HELP)
            raise SystemExit(0)
        if arg == "--":
            i += 1
            break
        name, has_value, value = arg.partition("=")
        if name in _OPTIONS:
            if not has_value:
                if i + 1 >= len(argv):
                    raise UsageError(f"{name} needs a value")
                value = argv[i + 1]
                i += 1
            options[_OPTIONS[name]] = value
            i += 1
            continue
        if arg.startswith("-") and arg != "-" and not arg.startswith("-m"):
            raise UsageError(f"unknown option {arg!r} (options go before the target)")
        break
    rest = argv[i:]
    if not rest:
        raise UsageError("no program to run: give app.py [args] or -m package.module [args]")
    first = rest[0]
    if first == "-m":
        if len(rest) < 2:
            raise UsageError("-m needs a module name")
        return options, ("module", rest[1], rest[2:])
    if first.startswith("-m"):
        return options, ("module", first[2:], rest[1:])
    if first == "-":
        raise UsageError("reading the program from stdin ('-') is not supported; pass a file")
    return options, ("path", first, rest[1:])


# -- configuration and environment -------------------------------------------------------
def _flag_for(field: str) -> str:
    return next(flag for flag, name in _OPTIONS.items() if name == field)


def resolve_settings(options: dict):
    """Validate the options (and the environment): ``(settings, valid options)``.

    A bad option is reported in one line and dropped (its default applies); a bad
    environment value is reported by ``load_settings``, which uses the default for it.
    ``settings`` is None when no valid configuration can be built at all.
    """
    from synalinks_obs.settings import SettingsError, load_settings

    options = {k: v for k, v in options.items() if v is not None}
    while True:
        try:
            return load_settings(**options), options
        except SettingsError as exc:
            message = str(exc)
            bad = next((f for f in options if message.startswith(f"synalinks-obs: {f}=")), None)
            if bad is None:
                sys.stderr.write(message + "\n")
                return None, options
            message = message.replace(f"synalinks-obs: {bad}=", f"synalinks-obs: {_flag_for(bad)}=", 1)
            sys.stderr.write(f"{message}; using {_used_instead(bad)}\n")
            del options[bad]


def _used_instead(field: str) -> str:
    """What a dropped launcher option falls back to: the environment, else the default."""
    from synalinks_obs.settings import DEFAULT_EXPERIMENT

    if field == "tracking_uri":
        resolution = uris.resolve(None)
        if resolution.source == "MLFLOW_TRACKING_URI":
            return f"MLFLOW_TRACKING_URI={uris.display(resolution.uri)}"
        return f"the default {resolution.uri}"
    env = os.environ.get("MLFLOW_EXPERIMENT_NAME", "").strip()
    return f"MLFLOW_EXPERIMENT_NAME={env!r}" if env else f"the default {DEFAULT_EXPERIMENT!r}"


def sitecustomize_dir() -> str | None:
    """The directory holding synalinks-obs' ``sitecustomize.py`` (wheel, then source tree)."""
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for candidate in (
        os.path.join(package_dir, "_sitecustomize"),
        os.path.join(package_dir, os.pardir, os.pardir, "sitecustomize_pkg"),
    ):
        if os.path.isfile(os.path.join(candidate, "sitecustomize.py")):
            return os.path.normpath(candidate)
    return None


def _in_site_dirs(directory: str) -> bool:
    import site

    dirs = list(getattr(site, "getsitepackages", lambda: [])())
    user = getattr(site, "getusersitepackages", lambda: None)()
    if user:
        dirs.append(user)
    real = os.path.realpath(directory)
    return any(os.path.realpath(d) == real for d in dirs)


def export_environment(tracking_uri: str, experiment_name: str | None) -> None:
    """Make processes started by the app trace into the same store and experiment."""
    from synalinks_obs._bootstrap import ENV_VAR, LAUNCHER_MARK

    env = os.environ
    env[ENV_VAR] = "1"
    env[LAUNCHER_MARK] = "1"
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    if experiment_name:
        env["MLFLOW_EXPERIMENT_NAME"] = experiment_name
    paths = []
    site_dir = sitecustomize_dir()
    if site_dir:
        paths.append(site_dir)
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not _in_site_dirs(package_parent):  # e.g. running from a source tree
        paths.append(package_parent)
    existing = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in paths]
    env["PYTHONPATH"] = os.pathsep.join(paths + existing)


def activate(options: dict) -> None:
    """Validate the configuration, export it for subprocesses, and enable tracing here."""
    import synalinks_obs

    settings, valid = resolve_settings(options)
    if settings is None:
        sys.stderr.write("synalinks-obs: tracing is off\n")
        return
    export_environment(uris.resolve(settings.tracking_uri, environment=False).uri, valid.get("experiment_name"))
    synalinks_obs.enable(_source="run")  # reads what was just exported: same as the children


# -- running the target ------------------------------------------------------------------
def _fresh_main_module():
    import builtins
    import types

    main = types.ModuleType("__main__")
    main.__builtins__ = builtins
    sys.modules["__main__"] = main
    return main


def _set_path0(entry: str) -> None:
    """Replace the launcher's ``sys.path[0]`` by the target's (unless ``-P``/safe_path)."""
    if sys.flags.safe_path:
        return
    if sys.path:
        sys.path[0] = entry
    else:
        sys.path.insert(0, entry)


def run_module(name: str, args: list[str]) -> None:
    sys.argv = ["-m", *args]  # what python -m shows while the module is being located
    _set_path0(os.getcwd())
    _fresh_main_module()
    stdlib_compat.run_module_as_main(name)  # exactly what `python -m` runs


def run_path(path: str, args: list[str]) -> None:
    import runpy

    # Like python: the working directory joined to the path as given, not normalised.
    absolute = path if os.path.isabs(path) else os.path.join(os.getcwd(), path)
    sys.argv = [path, *args]
    try:
        is_file = os.path.isfile(absolute)
        if not is_file and not os.path.isdir(absolute):
            raise FileNotFoundError(2, "No such file or directory")
        if is_file:
            import io

            with io.open_code(absolute) as handle:
                source = handle.read()
    except OSError as exc:
        sys.stderr.write(f"{PROG}: can't open file {absolute!r}: [Errno {exc.errno}] {exc.strerror}\n")
        raise SystemExit(2) from None
    if not is_file or _is_zip_or_bytecode(source):
        _set_path0(absolute)
        _fresh_main_module()
        runpy.run_path(absolute, run_name="__main__")
        return
    _set_path0(os.path.dirname(os.path.realpath(absolute)))
    code = compile(source, absolute, "exec", dont_inherit=True)
    from importlib.machinery import SourceFileLoader

    main = _fresh_main_module()
    main.__file__ = absolute
    main.__cached__ = None
    main.__loader__ = SourceFileLoader("__main__", absolute)
    exec(code, main.__dict__)


def _is_zip_or_bytecode(head: bytes) -> bool:
    if head[:4] == b"PK\x03\x04":
        return True
    from importlib.util import MAGIC_NUMBER

    return head[:4] == MAGIC_NUMBER


def _trimmed(tb):
    """The traceback without the launcher's own frames."""
    ours = (__file__, stdlib_compat.__file__)
    while tb is not None and tb.tb_frame.f_code.co_filename in ours:
        tb = tb.tb_next
    return tb


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    try:
        options, (kind, name, args) = parse_args(argv)
    except UsageError as exc:
        sys.stderr.write(HELP.split("\n\n", 1)[0] + f"\n{PROG}: error: {exc}\n")
        raise SystemExit(2) from None
    try:
        activate(options)
    except Exception as exc:  # tracing must never stop the app
        sys.stderr.write(
            f"synalinks-obs: cannot activate tracing ({type(exc).__name__}: {exc}); "
            "the app runs untraced\n"
        )
    try:
        if kind == "module":
            run_module(name, args)
        else:
            run_path(name, args)
    except (SystemExit, KeyboardInterrupt):
        raise  # exit status / SIGINT handling exactly as Python does it
    except BaseException as exc:
        # What Python does with an uncaught exception, minus the launcher's frames (the
        # default hook prints the exception's own __traceback__, so trim that).
        exc.__traceback__ = _trimmed(exc.__traceback__)
        sys.excepthook(type(exc), exc, exc.__traceback__)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()

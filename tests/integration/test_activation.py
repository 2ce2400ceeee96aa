"""Zero-code activation (SPEC section 2, issue 3), tested the way a user meets it.

Every check runs a real subprocess of an interpreter where synalinks-obs is installed
from its WHEEL (the ``.pth`` file must come from the wheel, not from an editable
install): the test venv itself when ``scripts/run-tests`` installed the wheel there,
otherwise a throw-away overlay venv built once per session (see ``wheel_python``).

Covered: ``SYNALINKS_OBSERVABILITY`` on / off / invalid and idempotence of the
bootstrap; start-up imports (``-X importtime``); ``python -m synalinks_obs.run`` and
``synalinks-obs-run`` with a script and with ``-m`` (argv, ``__main__``,
``sys.path[0]``, stdin, exit statuses, tracebacks compared with plain ``python``); bad
options; a user's own ``sitecustomize`` still running once; subprocesses traced into
the same store; and the spans that landed in the store, read back with MLflow's API.

``import synalinks`` costs ~15 s per process here, so the processes that import it are
few and grouped: env activation and ``enable()`` run side by side, and one launcher run
covers ``-m``, a subprocess in another directory and an uncaught module exception.
"""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from traces import load_traces, span_tree
from wheel_env import clean_env as _clean_env

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
TIMEOUT = 300
HEAVY = ("mlflow", "synalinks", "pydantic", "pydantic_settings", "litellm", "opentelemetry")
WARNING = "synalinks-obs: SYNALINKS_OBSERVABILITY={!r} is not a boolean; use 1 or 0"

# Prints what the bootstrap did in this process (imports synalinks_obs itself, last).
PROBE = (
    "import json, sys; heavy = sorted(m for m in %r if m in sys.modules); "
    "import synalinks_obs as s; "
    "print(json.dumps({'finders': [type(f).__name__ for f in sys.meta_path].count('PostImportFinder'), "
    "'enabled': s.is_enabled(), 'source': s.activation_source(), 'heavy': heavy}))"
) % (HEAVY,)


def _probe(run_py, value, code=PROBE):
    out = run_py("-c", code, env={"SYNALINKS_OBSERVABILITY": value})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


# -- SYNALINKS_OBSERVABILITY ----------------------------------------------------------------
@pytest.mark.parametrize("value", ["1", "true", "YES", "On", " on "])
def test_truthy_value_installs_one_hook_and_imports_nothing_heavy(run_py, value):
    state, stderr = _probe(run_py, value)
    assert state == {"finders": 1, "enabled": True, "source": "env", "heavy": []}
    assert stderr == ""


@pytest.mark.parametrize("value", [None, "", "0", "false", "No", "OFF"])
def test_falsy_or_unset_value_does_nothing(run_py, value):
    state, stderr = _probe(run_py, value)
    assert state == {"finders": 0, "enabled": False, "source": None, "heavy": []}
    assert stderr == ""


def test_unset_variable_does_not_even_import_the_package(run_py):
    out = run_py("-c", "import sys; print(sorted(m for m in sys.modules if 'synalinks' in m))")
    assert out.returncode == 0 and out.stdout.strip() == "[]", out


@pytest.mark.parametrize("value", ["maybe", "2", "enabled"])
def test_invalid_value_prints_one_line_and_leaves_tracing_off(run_py, value):
    state, stderr = _probe(run_py, value)
    assert state["finders"] == 0 and not state["enabled"]
    assert stderr.splitlines() == [WARNING.format(value)]


REPROCESS_SITE = (
    "import site, sysconfig; site.addsitedir(sysconfig.get_path('purelib')); "
    "site.addsitedir(sysconfig.get_path('purelib')); "
)


def test_bootstrap_is_idempotent_when_site_packages_is_processed_again(run_py):
    """CPython can run a .pth twice: still one hook, and at most one warning."""
    state, stderr = _probe(run_py, "1", REPROCESS_SITE + PROBE)
    assert state["finders"] == 1 and stderr == ""
    state, stderr = _probe(run_py, "maybe", REPROCESS_SITE + PROBE)
    assert state["finders"] == 0
    assert stderr.splitlines() == [WARNING.format("maybe")]


def _imported_at_startup(run_py, value):
    out = run_py("-X", "importtime", "-c", "pass", env={"SYNALINKS_OBSERVABILITY": value})
    assert out.returncode == 0, out.stderr
    rows = [line.split("|") for line in out.stderr.splitlines() if line.startswith("import time:")]
    return {row[2].strip(): int(row[1]) for row in rows[1:]}  # name -> cumulative us


def test_startup_imports_nothing_heavy(run_py):
    unset = _imported_at_startup(run_py, None)
    assert not [m for m in unset if m.startswith("synalinks_obs")]
    enabled = _imported_at_startup(run_py, "1")
    ours = {m: us for m, us in enabled.items() if m.startswith("synalinks_obs")}
    assert set(ours) == {
        "synalinks_obs", "synalinks_obs._bootstrap", "synalinks_obs.activation",
        "synalinks_obs.runtime", "synalinks_obs.reporting", "synalinks_obs.importhook",
    }
    heavy = [m for m in enabled if m.split(".")[0] in HEAVY + ("typing", "inspect", "logging")]
    assert heavy == [], f"start-up imported {heavy}"


# -- the launcher, without Synalinks ---------------------------------------------------------
APP = """\
import json, os, sys
data = {
    "argv": sys.argv, "name": __name__, "path0": sys.path[0], "file": __file__,
    "main_is_module": sys.modules["__main__"].__dict__ is globals(),
    "stdin": sys.stdin.read(),
}
if os.environ.get("SHOW_ENV"):
    import synalinks_obs
    data["env"] = {k: os.environ.get(k) for k in (
        "SYNALINKS_OBSERVABILITY", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME")}
    data["enabled"] = [synalinks_obs.is_enabled(), synalinks_obs.activation_source()]
print(json.dumps(data))
exit_with = os.environ.get("EXIT_WITH")
if exit_with == "raise":
    def inner():
        raise ValueError("boom")
    inner()
if exit_with == "message":
    sys.exit("bye: fatal")
if exit_with:
    raise SystemExit(int(exit_with))
"""


@pytest.fixture
def app_dir(tmp_path):
    directory = tmp_path / "apps"
    (directory / "pkg").mkdir(parents=True)
    (directory / "app.py").write_text(APP)
    (directory / "pkg" / "__init__.py").write_text("")
    (directory / "pkg" / "mod.py").write_text(APP)
    (tmp_path / "elsewhere").mkdir()
    return directory


def _bin(wheel_python, name):
    return str(Path(wheel_python).parent / name)


def test_launcher_help(run_py):
    out = run_py("-m", "synalinks_obs.run", "--help")
    assert out.returncode == 0
    for text in ("--tracking-uri", "--experiment-name", "-m package.module", "PYTHONPATH",
                 "sitecustomize", "SYNALINKS_OBS_"):
        assert text in out.stdout


@pytest.mark.parametrize("launcher", ["module", "console_script"])
def test_launcher_runs_a_script_like_python(run_py, app_dir, wheel_python, launcher):
    cwd = app_dir.parent / "elsewhere"
    script = os.path.relpath(app_dir / "app.py", cwd)
    args = [script, "a", "--tracking-uri", "not-ours"]  # after the target: the app's
    env = {"EXIT_WITH": "7"}
    plain = run_py(*args, env=env, cwd=cwd, input="from stdin\n")
    if launcher == "module":
        traced = run_py("-m", "synalinks_obs.run", *args, env=env, cwd=cwd, input="from stdin\n")
    else:
        traced = run_py(*args, env=env, cwd=cwd, input="from stdin\n",
                        python=_bin(wheel_python, "synalinks-obs-run"))
    assert (plain.returncode, traced.returncode) == (7, 7), traced.stderr
    assert json.loads(traced.stdout) == json.loads(plain.stdout)
    assert json.loads(plain.stdout)["argv"] == args
    assert traced.stderr == plain.stderr == ""


def test_launcher_runs_a_module_like_python_dash_m(run_py, app_dir):
    plain = run_py("-m", "pkg.mod", "x", "-y", cwd=app_dir, input="in")
    traced = run_py("-m", "synalinks_obs.run", "-m", "pkg.mod", "x", "-y", cwd=app_dir, input="in")
    assert plain.returncode == traced.returncode == 0, traced.stderr
    assert json.loads(traced.stdout) == json.loads(plain.stdout)
    assert json.loads(traced.stdout)["argv"] == [str(app_dir / "pkg" / "mod.py"), "x", "-y"]
    # `--` ends the launcher options; -mMODULE works as with python
    again = run_py("-m", "synalinks_obs.run", "--", "-mpkg.mod", "x", "-y", cwd=app_dir, input="in")
    assert json.loads(again.stdout) == json.loads(plain.stdout)


@pytest.mark.parametrize(
    "exit_with, status", [("raise", 1), ("message", 1), ("0", 0), ("3", 3), ("255", 255)]
)
def test_launcher_exit_status_and_traceback_match_python(run_py, app_dir, exit_with, status):
    plain = run_py("app.py", env={"EXIT_WITH": exit_with}, cwd=app_dir)
    traced = run_py("-m", "synalinks_obs.run", "app.py", env={"EXIT_WITH": exit_with}, cwd=app_dir)
    assert plain.returncode == traced.returncode == status
    assert traced.stderr == plain.stderr  # the same traceback, without launcher frames
    if exit_with == "raise":
        assert traced.stderr.startswith("Traceback (most recent call last):\n")
        assert "synalinks_obs" not in traced.stderr
        assert traced.stderr.endswith("ValueError: boom\n")


def test_launcher_missing_targets(run_py, app_dir):
    missing = run_py("-m", "synalinks_obs.run", "nope.py", cwd=app_dir)
    assert missing.returncode == 2
    assert "can't open file" in missing.stderr and "nope.py" in missing.stderr
    no_module = run_py("-m", "synalinks_obs.run", "-m", "no_such_module", cwd=app_dir)
    assert no_module.returncode == 1
    assert "No module named no_such_module" in no_module.stderr
    usage = run_py("-m", "synalinks_obs.run", "--no-such-option", "app.py", cwd=app_dir)
    assert usage.returncode == 2 and "unknown option '--no-such-option'" in usage.stderr
    nothing = run_py("-m", "synalinks_obs.run", cwd=app_dir)
    assert nothing.returncode == 2 and "no program to run" in nothing.stderr


def test_launcher_exports_configuration_for_subprocesses(run_py, app_dir):
    out = run_py(
        "-m", "synalinks_obs.run", "--tracking-uri", "sqlite:///rel/x.db",
        "--experiment-name=exp one", "app.py",
        env={"SHOW_ENV": "1"}, cwd=app_dir,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["env"] == {
        "SYNALINKS_OBSERVABILITY": "1",
        "MLFLOW_TRACKING_URI": f"sqlite:///{app_dir}/rel/x.db",  # absolute for children
        "MLFLOW_EXPERIMENT_NAME": "exp one",
    }
    assert data["enabled"] == [True, "run"]
    # defaults: MLflow's own default store, made absolute; options also come from env
    out = run_py(
        "-m", "synalinks_obs.run", "app.py",
        env={"SHOW_ENV": "1", "MLFLOW_EXPERIMENT_NAME": "from env"}, cwd=app_dir,
    )
    data = json.loads(out.stdout)
    assert data["env"]["MLFLOW_TRACKING_URI"] == f"sqlite:///{app_dir}/mlflow.db"
    assert data["env"]["MLFLOW_EXPERIMENT_NAME"] == "from env"


def test_launcher_bad_option_is_one_line_and_the_app_still_runs(run_py, app_dir):
    out = run_py(
        "-m", "synalinks_obs.run", "--tracking-uri", "http://", "app.py", "ok",
        env={"SHOW_ENV": "1"}, cwd=app_dir,
    )
    assert out.returncode == 0
    assert len(out.stderr.splitlines()) == 1, out.stderr
    assert out.stderr.startswith("synalinks-obs: --tracking-uri='http://' is not valid")
    data = json.loads(out.stdout)
    assert data["argv"] == ["app.py", "ok"]
    assert data["env"]["MLFLOW_TRACKING_URI"] == f"sqlite:///{app_dir}/mlflow.db"
    bad_env = run_py(
        "-m", "synalinks_obs.run", "app.py",
        env={"SHOW_ENV": "1", "SYNALINKS_OBS_SAMPLE_RATE": "lots"}, cwd=app_dir,
    )
    assert bad_env.returncode == 0
    assert len(bad_env.stderr.splitlines()) == 1
    assert "SYNALINKS_OBS_SAMPLE_RATE='lots'" in bad_env.stderr


USER_SITECUSTOMIZE = """\
import os
with open(os.environ["MARKER"], "a") as f:
    f.write(str(os.getpid()) + "\\n")
if os.environ.get("USER_SITECUSTOMIZE_FAILS"):
    raise RuntimeError("the user's sitecustomize failed")
"""

PARENT = """\
import json, subprocess, sys
child = (
    "import json, os, sys, synalinks_obs as s; "
    "print(json.dumps({'sitecustomize': sys.modules['sitecustomize'].__file__, "
    "'enabled': [s.is_enabled(), s.activation_source()], "
    "'finders': [type(f).__name__ for f in sys.meta_path].count('PostImportFinder'), "
    "'ours_on_path': [p for p in sys.path if p.endswith(('_sitecustomize', 'sitecustomize_pkg'))], "
    "'pid': os.getpid()}))"
)
out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
sys.stderr.write(out.stderr)
print(out.stdout.strip())
"""


@pytest.mark.parametrize("fails", [False, True])
def test_user_sitecustomize_still_runs_once(run_py, tmp_path, fails):
    user = tmp_path / "user-site"
    user.mkdir()
    (user / "sitecustomize.py").write_text(USER_SITECUSTOMIZE)
    (tmp_path / "parent.py").write_text(PARENT)
    marker = tmp_path / "marker"
    env = {"PYTHONPATH": user, "MARKER": marker, "USER_SITECUSTOMIZE_FAILS": "1" if fails else None}
    out = run_py("-m", "synalinks_obs.run", "parent.py", env=env)
    assert out.returncode == 0, out.stderr
    child = json.loads(out.stdout.strip().splitlines()[-1])
    pids = marker.read_text().split()
    assert len(pids) == 2 and pids[1] == str(child["pid"]), pids  # launcher, then child: once each
    assert child["enabled"] == [True, "run"] and child["finders"] == 1
    assert child["ours_on_path"] == []
    if fails:
        expected = "Error in sitecustomize; set PYTHONVERBOSE for traceback:\nRuntimeError: the user's sitecustomize failed\n"
        assert out.stderr.count(expected) == 2  # as site reports it: in the launcher, in the child
    else:
        assert child["sitecustomize"] == str(user / "sitecustomize.py")
        assert out.stderr == ""


# -- traces in the store (these processes import synalinks) ----------------------------------
def _load(uri, experiment, stderr=""):
    """``load_traces``, failing with the writer's stderr when nothing landed."""
    try:
        return load_traces(uri, experiment)
    except LookupError as exc:
        raise AssertionError(f"{exc}; the traced process said:\n{stderr}") from None


def _shape(node):
    return (node["name"], node["span_type"], node["status"], [_shape(c) for c in node["children"]])


def _shapes(traces):
    return [_shape(span_tree(t)) for t in traces]


def _by_root(traces, name):
    found = [t for t in traces if span_tree(t)["name"] == name]
    assert len(found) == 1, [span_tree(t)["name"] for t in traces]
    return span_tree(found[0])


def _find(node, name):
    if node["name"] == name:
        return node
    for child in node["children"]:
        hit = _find(child, name)
        if hit is not None:
            return hit
    return None


def _popen(wheel_python, args, env, cwd):
    return subprocess.Popen(
        [wheel_python, *map(str, args)], env=env, cwd=cwd,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_env_activation_traces_like_enable(wheel_python, tmp_path):
    """SYNALINKS_OBSERVABILITY=1 python agent.py == enable() + the same program."""
    # Two stores: MLflow's first-use schema migration of one sqlite file is not safe
    # against two processes doing it at the same moment.
    env_db, api_db = (f"sqlite:///{tmp_path / name}" for name in ("env.db", "api.db"))
    home = tmp_path / "home"
    env_run = _popen(
        wheel_python, [EXAMPLES / "agent.py"],
        _clean_env(SYNALINKS_OBSERVABILITY="1", MLFLOW_TRACKING_URI=env_db,
                   MLFLOW_EXPERIMENT_NAME="by_env", SYNALINKS_HOME=home),
        tmp_path,
    )
    api_code = (
        "import runpy, sys, synalinks_obs; "
        f"synalinks_obs.enable(tracking_uri={api_db!r}, experiment_name='by_api'); "
        f"sys.argv = [{str(EXAMPLES / 'agent.py')!r}]; sys.path.insert(0, {str(EXAMPLES)!r}); "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    api_run = _popen(wheel_python, ["-c", api_code], _clean_env(SYNALINKS_HOME=home), tmp_path)
    outputs, errors = {}, {}
    for name, process in (("env", env_run), ("api", api_run)):
        outputs[name], errors[name] = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0, f"{name}: {errors[name]}"
    assert outputs["env"] == outputs["api"]
    by_env = _load(env_db, "by_env", errors["env"])
    by_api = _load(api_db, "by_api", errors["api"])
    assert _shapes(by_env) == _shapes(by_api)
    root = _by_root(by_env, "Functional:calculator_agent")
    agent = _find(root, "FunctionCallingAgent:math_agent")
    assert agent["span_type"] == "AGENT"
    tool = _find(agent, "Tool:calculate")
    assert tool is not None and tool["span_type"] == "TOOL"
    assert tool["attributes"]["synalinks.parent_call_id"]
    chat = [n for n in _walk(agent) if n["span_type"] == "CHAT_MODEL"]
    assert chat and all(n["attributes"]["synalinks.cost"] > 0 for n in chat)
    assert root["attributes"]["synalinks.cost"] == pytest.approx(
        sum(n["attributes"]["synalinks.cost"] for n in chat)
    )


def _walk(node):
    yield node
    for child in node["children"]:
        yield from _walk(child)


FAILING_APP = """\
import asyncio, os, subprocess, sys
sys.path.insert(0, os.environ["EXAMPLES_DIR"])
import synalinks

class Question(synalinks.DataModel):
    question: str

class Failing(synalinks.Module):
    async def call(self, inputs, training=False):
        raise ValueError("boom from a module")

child = subprocess.run(
    [sys.executable, os.path.join(os.environ["EXAMPLES_DIR"], "chain_of_thought.py")],
    cwd=os.environ["CHILD_CWD"],
)
print("child exited with", child.returncode, flush=True)
asyncio.run(Failing(name="failing")(Question(question="why?")))
"""


def test_launcher_module_traces_app_and_subprocess_into_one_store(run_py, tmp_path):
    """-m target, a traced child in another directory, an uncaught module exception."""
    work = tmp_path / "work"
    (work / "tracedapp").mkdir(parents=True)
    (work / "tracedapp" / "__init__.py").write_text("")
    (work / "tracedapp" / "__main__.py").write_text(FAILING_APP)
    child_cwd = tmp_path / "child-cwd"
    child_cwd.mkdir()
    out = run_py(
        "-m", "synalinks_obs.run", "--tracking-uri", "sqlite:///traces.db",
        "--experiment-name", "launched", "-m", "tracedapp",
        env={"EXAMPLES_DIR": EXAMPLES, "CHILD_CWD": child_cwd}, cwd=work,
    )
    assert out.returncode == 1, out.stderr
    assert "child exited with 0" in out.stdout
    assert out.stderr.rstrip().endswith("ValueError: boom from a module"), out.stderr
    assert not (child_cwd / "traces.db").exists()  # the child wrote to the launcher's store
    traces = _load(f"sqlite:///{work / 'traces.db'}", "launched", out.stderr)
    child_root = _by_root(traces, "Functional:chain_of_thought_program")
    assert _find(child_root, "ChainOfThought:step_by_step")["span_type"] == "LLM"
    failing = _by_root(traces, "Failing:failing")
    assert failing["status"] == "ERROR"
    assert failing["attributes"]["synalinks.success"] is False
    [event] = [e for e in failing["events"] if e["name"] == "exception"]
    assert event["attributes"]["exception.type"] == "ValueError"
    assert event["attributes"]["exception.message"] == "boom from a module"


def test_launcher_default_store_and_traces_view(run_py, tmp_path):
    """The README demo's path: qa.py into ./mlflow.db, then the terminal tree."""
    start_ms = int(time.time() * 1000)
    out = run_py("-m", "synalinks_obs.run", EXAMPLES / "qa.py", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert '"answer"' in out.stdout
    assert (tmp_path / "mlflow.db").exists()
    traces = _load(f"sqlite:///{tmp_path / 'mlflow.db'}", "synalinks_traces", out.stderr)
    root = _by_root(traces, "Functional:qa_program")
    assert _shape(root) == (
        "Functional:qa_program", "CHAIN", "OK", [
            ("Generator:answer_generator", "LLM", "OK", [
                ("LanguageModel:language_model", "CHAT_MODEL", "OK", []),
            ]),
        ],
    )
    view = run_py("-m", "synalinks_obs", "traces", "--since-ms", start_ms, cwd=tmp_path)
    assert view.returncode == 0, view.stderr
    lines = view.stdout.splitlines()
    assert lines[0].startswith("1 trace of real (non-symbolic) calls in experiment 'synalinks_traces'")
    tree = "\n".join(lines)
    assert "└── Functional:qa_program  CHAIN  " in tree
    assert "    └── Generator:answer_generator  LLM  " in tree
    assert "        └── LanguageModel:language_model  CHAT_MODEL  " in tree
    assert "$0.0000" in tree and " tokens" in tree


# -- launcher helpers, in process ------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, options, target",
    [
        (["app.py"], {}, ("path", "app.py", [])),
        (["--tracking-uri", "u", "--experiment-name=e", "app.py", "--tracking-uri", "x"],
         {"tracking_uri": "u", "experiment_name": "e"}, ("path", "app.py", ["--tracking-uri", "x"])),
        (["--", "-m", "pkg.mod", "-m", "y"], {}, ("module", "pkg.mod", ["-m", "y"])),
        (["-mpkg", "a"], {}, ("module", "pkg", ["a"])),
        (["--experiment-name", "e", "--", "--weird-name.py"], {"experiment_name": "e"},
         ("path", "--weird-name.py", [])),
    ],
)
def test_parse_args(argv, options, target):
    from synalinks_obs.run import parse_args

    parsed_options, parsed_target = parse_args(argv)
    assert {k: v for k, v in parsed_options.items() if v is not None} == options
    assert parsed_target == target

"""The server set-ups of ``examples/deploy/`` (SPEC section 6), run for real.

Docker does not run here, so each test takes the ``mlflow server`` command line out of a
compose file and runs it directly on 127.0.0.1: the same options, with only the host and
port (a free loopback port), the container paths (``/mlflow/...`` -> a temp directory)
and the PostgreSQL host (``postgres:5432`` -> a throw-away PostgreSQL from Debian's
packages, tests/postgres.py) changed, plus ``--workers 1`` (tests/conftest.py). Then an
app traced against the server lands its traces, a training run's artifacts land in the
server's ``--artifacts-destination`` through the artifact proxy, and ``doctor`` passes.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import types
from pathlib import Path

import pytest
from traces import load_traces, render

DEPLOY = Path(__file__).resolve().parents[2] / "examples" / "deploy"
COMPOSE_FILES = ("docker-compose.yml", "docker-compose.postgres.yml", "docker-compose.auth.yml",
                 "docker-compose.tls-proxy.yml")
FLUSH_TIMEOUT = 120


# -- the command lines of the deploy files ---------------------------------------------

def server_args(words):
    """The options after ``mlflow server`` in a list of words."""
    for i in range(len(words) - 1):
        if words[i] == "mlflow" and words[i + 1] == "server":
            return words[i + 2:]
    raise AssertionError(f"no 'mlflow server' in {words}")


def compose_args(name):
    """The mlflow service's ``mlflow server`` options, its ``MLFLOW_BACKEND_STORE_URI``
    (where the set-ups keep the database password off the command line) as
    ``--backend-store-uri``."""
    import yaml

    service = yaml.safe_load((DEPLOY / name).read_text())["services"]["mlflow"]
    args = server_args(shlex.split(service["command"]))
    backend = (service.get("environment") or {}).get("MLFLOW_BACKEND_STORE_URI")
    if backend and "--backend-store-uri" not in args:
        args += ["--backend-store-uri", backend]
    return args


def docker_run_args():
    text = (DEPLOY / "docker-run.sh").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    command = re.search(r"^docker run .*?(?<!\\)$", "\n".join(lines), re.S | re.M).group(0)
    return server_args(shlex.split(command.replace("\\\n", " ")))


def options(args):
    """``{--option: value or True}`` of a command line."""
    found, i = {}, 0
    while i < len(args):
        if i + 1 < len(args) and not args[i + 1].startswith("--"):
            found[args[i]] = args[i + 1]
            i += 2
        else:
            found[args[i]] = True
            i += 1
    return found


def localized(args, workdir, postgres_uri=None):
    """The command line for 127.0.0.1: no host/port (the fixture sets them), container
    paths under ``workdir``, the compose ``postgres`` host replaced by ``postgres_uri``."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in ("--host", "--port"):
            skip = True
            continue
        if arg.startswith("postgresql://"):
            assert postgres_uri, "a PostgreSQL URI in a sqlite set-up"
            arg = postgres_uri
        elif arg.startswith("sqlite:///mlflow/"):
            arg = f"sqlite:///{workdir}/{arg[len('sqlite:///mlflow/'):]}"
        elif arg.startswith("/mlflow/"):
            arg = str(workdir / arg[len("/mlflow/"):])
        out.append(arg)
    return out


def test_deploy_files_carry_the_artifact_proxy_options():
    """Every set-up proxies artifacts; the docker run script is the sqlite compose."""
    run = docker_run_args()
    for args in (run, *(compose_args(name) for name in COMPOSE_FILES)):
        found = options(args)
        assert found["--serve-artifacts"] is True
        assert found["--default-artifact-root"] == "mlflow-artifacts:/"
        assert found["--artifacts-destination"] == "/mlflow/artifacts"
        assert "--no-serve-artifacts" not in found
    assert run == compose_args("docker-compose.yml")
    postgres = options(compose_args("docker-compose.postgres.yml"))
    assert postgres["--backend-store-uri"].startswith("postgresql://mlflow:${POSTGRES_PASSWORD:?")
    assert postgres["--backend-store-uri"].endswith("@postgres:5432/mlflow")
    import yaml

    compose = yaml.safe_load((DEPLOY / "docker-compose.postgres.yml").read_text())
    mlflow_service = compose["services"]["mlflow"]
    assert mlflow_service["depends_on"]["postgres"]["condition"] == "service_healthy"
    # The official image lacks the PostgreSQL driver: the service is built with it.
    dockerfile = (DEPLOY / mlflow_service["build"]["dockerfile"]).read_text()
    assert "psycopg" in dockerfile
    assert os.access(DEPLOY / "docker-run.sh", os.X_OK)


# -- the servers, for real -------------------------------------------------------------

@pytest.fixture
def postgres():
    """A PostgreSQL server on 127.0.0.1 (skipped, with the reason, only where none can
    be had; TEST_REQUIRE_POSTGRES=1, as in CI, makes that a failure)."""
    import postgres as pg

    reason = pg.unavailable()
    if reason:
        if os.environ.get("TEST_REQUIRE_POSTGRES"):
            pytest.fail(f"PostgreSQL required (TEST_REQUIRE_POSTGRES=1): {reason}")
        pytest.skip(reason)
    server = pg.PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def sl():
    import synalinks

    class Question(synalinks.DataModel):
        question: str = synalinks.Field(description="The question to answer")

    class Answer(synalinks.DataModel):
        answer: str = synalinks.Field(description="The answer")

    return types.SimpleNamespace(synalinks=synalinks, Question=Question, Answer=Answer)


@pytest.fixture
def obs():
    import synalinks_obs

    yield synalinks_obs
    synalinks_obs.flush(FLUSH_TIMEOUT)
    synalinks_obs.disable()


def start_compose_server(name, workdir, postgres_uri=None):
    from conftest import MlflowServer

    args = localized(compose_args(name), workdir, postgres_uri)
    return MlflowServer(workdir, args).start()


async def app_and_training(sl, lm, uri):
    """A traced app (two QA calls) and a one-epoch fit() with the training Monitor."""
    import numpy as np

    from synalinks_obs.callbacks import Monitor

    synalinks = sl.synalinks
    inputs = synalinks.Input(data_model=sl.Question)
    outputs = await synalinks.Generator(data_model=sl.Answer, language_model=lm, name="gen")(inputs)
    program = synalinks.Program(inputs=inputs, outputs=outputs, name="deployed_qa")
    for question in ("What is the capital of France?", "And of Italy?"):
        await program(sl.Question(question=question))
    program.compile(
        reward=synalinks.rewards.ExactMatch(in_mask=["answer"]),
        optimizer=synalinks.optimizers.RandomFewShot(),
    )
    x = np.array([sl.Question(question=f"Question {i}?") for i in range(2)], dtype="object")
    y = np.array([sl.Answer(answer="Example answer.") for _ in range(2)], dtype="object")
    monitor = Monitor(tracking_uri=uri, experiment_name="deploy_training", run_name="deploy-fit")
    await program.fit(x=x, y=y, epochs=1, batch_size=2, callbacks=[monitor], verbose=0)
    return monitor.run_id


def check_server(server, sl, lm, obs):
    """What every set-up must give: traces, proxied artifacts, a passing doctor."""
    import mlflow

    from synalinks_obs.cli import doctor

    uri = server.uri
    obs.enable(tracking_uri=uri, experiment_name="deploy_app")
    run_id = asyncio.run(app_and_training(sl, lm, uri))
    assert obs.flush(FLUSH_TIMEOUT)

    traces = load_traces(uri, "deploy_app")
    real = [t for t in traces
            if not any(s.attributes.get("synalinks.is_symbolic") for s in t.data.spans)]
    assert len(real) == 2, "\n".join(render(t, attributes=False) for t in traces)
    for trace in real:
        assert sorted(s.span_type for s in trace.data.spans) == ["CHAIN", "CHAT_MODEL", "LLM"], render(trace)
        root = next(s for s in trace.data.spans if s.parent_id is None)
        assert root.name == "Functional:deployed_qa"
        assert root.attributes["synalinks.cost"] > 0

    client = mlflow.MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    prefix = server.artifacts_dir / run.info.experiment_id / run_id / "artifacts"
    landed = sorted(p.relative_to(prefix).as_posix() for p in prefix.rglob("*") if p.is_file())
    for name in ("model/state_tree.json", "model/model_info.json",
                 "program_plots/deployed_qa.svg"):
        assert name in landed, landed
    assert json.loads((prefix / "model/model_info.json").read_text())["name"] == "deployed_qa"
    linked = client.search_traces(
        locations=[run.info.experiment_id], run_id=run_id, include_spans=False
    )
    assert linked, "no trace of fit() linked to the training run"

    checks = {c.name: c for c in doctor.run_checks(uri, "deploy_app", timeout=30)}
    for name in ("tracing", "tracking store", "server health", "trace write", "artifact proxy"):
        assert checks[name].ok, checks[name].line()
    assert "artifact proxy" in checks["artifact proxy"].detail or "proxy" in checks["artifact proxy"].detail
    # The doctor cleaned up after itself: its scratch run is deleted, its file gone.
    experiment = client.get_experiment_by_name("deploy_app")
    active = client.search_runs([experiment.experiment_id])
    assert not [r for r in active if r.info.run_name == "synalinks-obs-doctor"]
    return checks


@pytest.mark.server
def test_sqlite_compose_server(sl, lm, obs, tmp_path):
    server = start_compose_server("docker-compose.yml", tmp_path)
    try:
        assert options(server.args)["--backend-store-uri"] == f"sqlite:///{tmp_path}/mlflow.db"
        check_server(server, sl, lm, obs)
        assert (tmp_path / "mlflow.db").exists()
    finally:
        obs.flush(FLUSH_TIMEOUT)
        obs.disable()
        server.stop()


@pytest.mark.server
def test_postgres_compose_server(sl, lm, obs, tmp_path, postgres):
    server = start_compose_server("docker-compose.postgres.yml", tmp_path, postgres.uri)
    try:
        assert options(server.args)["--backend-store-uri"] == postgres.uri
        check_server(server, sl, lm, obs)
        # The runs and traces are in PostgreSQL, not in a sqlite file.
        import postgres as pg

        connection = pg.connect(postgres.uri)
        try:
            cursor = connection.cursor()
            cursor.execute("SELECT count(*) FROM trace_info")
            assert cursor.fetchone()[0] >= 3
            cursor.execute("SELECT count(*) FROM runs WHERE name = 'deploy-fit'")
            assert cursor.fetchone()[0] == 1
        finally:
            connection.close()
        assert not list(tmp_path.glob("*.db"))
    finally:
        obs.flush(FLUSH_TIMEOUT)
        obs.disable()
        server.stop()

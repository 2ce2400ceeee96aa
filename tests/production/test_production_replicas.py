"""Many app replicas, one authenticated MLflow server, for real.

``examples/deploy/replica_app.py`` served by gunicorn with 4 workers (``--preload``: tracing
turns on in the master, each forked worker writes its own spans), started with
``SYNALINKS_OBSERVABILITY=1`` and MLflow's basic-auth credentials in its environment,
against one ``mlflow server --workers 2 --app-name basic-auth`` on a throw-away
PostgreSQL. Concurrent HTTP requests (the fake LLM answering after 0.2 s, so that every
worker is busy) each make one trace; gunicorn is then stopped as Docker or Kubernetes
stop it (SIGTERM to the master). Every span of every replica must be in the store,
read back through MLflow's client, none twice.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from support_base import ServiceUnavailable, free_port, skip_or_fail, start_process, stop_process_group, tail
from test_production_deploy import DEPLOY, postgres  # noqa: F401  (fixture)

REPLICAS = 4
SERVER_WORKERS = 2
REQUESTS = 48
CONCURRENCY = 8
LM_LATENCY = 0.2
USER, PASSWORD = "replicas", "replicas-Pw-4Gk8Hs2"


def ask(port, number):
    body = json.dumps({"question": f"question-{number:03d}"}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/answer", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=120) as reply:
        return number, json.loads(reply.read())


def wait_ready(port, process, log, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited:\n{tail(log)}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"gunicorn not ready after {timeout} s:\n{tail(log)}")


@pytest.mark.server
def test_four_replicas_one_authenticated_server_every_span_once(postgres, fake_llm, tmp_path, monkeypatch):  # noqa: F811
    import mlflow_servers

    server = mlflow_servers.MlflowServer(basic_auth=True, backend_store_uri=postgres.uri,
                                         workers=SERVER_WORKERS)
    try:
        server.start()
    except ServiceUnavailable as missing:
        skip_or_fail(missing)
    gunicorn = None
    log = tmp_path / "gunicorn.log"
    try:
        server.create_user(USER, PASSWORD)
        fake_llm.inject_latency(LM_LATENCY)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        env.update({
            "SYNALINKS_OBSERVABILITY": "1", "MLFLOW_TRACKING_URI": server.url,
            "MLFLOW_EXPERIMENT_NAME": "replicas", "MLFLOW_TRACKING_USERNAME": USER,
            "MLFLOW_TRACKING_PASSWORD": PASSWORD, "SYNALINKS_EXAMPLE_MODEL": "openai/gpt-4o-mini",
            "SYNALINKS_EXAMPLE_API_BASE": fake_llm.base_url, "OPENAI_API_KEY": "sk-replicas-test",
            "SYNALINKS_HOME": str(tmp_path / "home"), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        })
        with open(log, "wb") as out:
            gunicorn = start_process(
                [sys.executable, "-m", "gunicorn", "--workers", str(REPLICAS), "--preload",
                 "--bind", f"127.0.0.1:{port}", "--chdir", str(DEPLOY), "--timeout", "20",
                 "--graceful-timeout", "120", "replica_app:app"],
                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path,
            )
        wait_ready(port, gunicorn, log)
        started = time.monotonic()
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            answers = dict(pool.map(lambda n: ask(port, n), range(REQUESTS)))
        answered = time.monotonic()
        gunicorn.send_signal(signal.SIGTERM)  # as `docker stop` / Kubernetes: the master only
        assert gunicorn.wait(240) == 0, tail(log)
        stopped = time.monotonic()
    finally:
        stop_process_group(gunicorn)
        fake_llm.reset()

    try:
        text = log.read_text(errors="replace")
        assert "span(s) were not written" not in text and "synalinks-obs: " not in text, tail(log, 80)
        replicas = {answer["replica"] for answer in answers.values()}
        assert len(replicas) == REPLICAS, replicas  # every worker served requests
        assert all(answer["answer"] for answer in answers.values())

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", server.admin_username)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.admin_password)
        import mlflow

        client = mlflow.MlflowClient(server.url)
        experiment_id = client.get_experiment_by_name("replicas").experiment_id
        traces, token = [], None
        while True:
            page = client.search_traces(locations=[experiment_id], max_results=200, page_token=token)
            traces.extend(page)
            token = page.token
            if not token:
                break
        real = [t for t in traces if not any(s.attributes.get("synalinks.is_symbolic") for s in t.data.spans)]
        roots = [json.dumps(next(s for s in t.data.spans if s.parent_id is None).inputs) for t in real]
        questions = sorted(re.findall(r'"question": "([^"]+)"', root)[0] for root in roots)
        assert questions == [f"question-{n:03d}" for n in range(REQUESTS)]  # each once
        spans = [s for t in real for s in t.data.spans]
        assert all(sorted(s.span_type for s in t.data.spans) == ["CHAIN", "CHAT_MODEL", "LLM"] for t in real)
        assert len({(s.trace_id, s.span_id) for s in spans}) == len(spans) == 3 * REQUESTS
        assert len({t.info.trace_id for t in traces}) == len(traces)
        print(f"\n{REPLICAS} replicas x {REQUESTS} requests: {len(spans)} spans landed, each once; "
              f"answered in {answered - started:.1f} s (LM latency {LM_LATENCY} s per call), "
              f"replicas stopped and flushed {stopped - answered:.1f} s later "
              "(the server's own rate: benchmarks/replicas.py)")
    finally:
        server.stop()

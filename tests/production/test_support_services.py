"""Proves each test-support service of ``tests/support/`` works, with MLflow's own client.

The services (see each module's docstring): ``tls`` (a throw-away CA with server and client
certificates), ``nginx`` (a real nginx terminating TLS, optionally requiring a bearer token
and/or a client certificate, in front of an ``mlflow server``), ``mlflow_servers`` (plain and
basic-auth ``mlflow server`` subprocesses, SQLite or PostgreSQL backend), ``otlp`` (an
OTLP/HTTP, optionally gRPC, traces receiver) and ``old_mlflow`` (MLflow 3.4.0's server from
a cached venv). They are plain modules: this file puts ``tests/support`` on ``sys.path`` and
imports them by name, as a feature test would. MLflow client calls that depend on
environment variables (``MLFLOW_TRACKING_TOKEN``, ``MLFLOW_TRACKING_USERNAME``, the TLS
paths...) run in a fresh subprocess (`run_client`), since MLflow reads and caches them
in-process; what landed is then read back with an in-process ``MlflowClient`` talking to the
server directly. A missing binary or package skips (`skip_or_fail`), or fails when its
``TEST_REQUIRE_*`` switch is 1.
"""

import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
for _path in (TESTS / "support", TESTS):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import mlflow_servers  # noqa: E402
import nginx  # noqa: E402
import old_mlflow  # noqa: E402
import otlp  # noqa: E402
import tls  # noqa: E402
from support_base import (
    ServiceUnavailable,  # noqa: E402
    skip_or_fail,  # noqa: E402
)

ARTIFACT_MB = 8  # well above nginx's default 1 MB request-body limit
TOKEN = "test-token-42"

# Runs in a fresh interpreter: argv = tracking URL, experiment name, artifact size in MB.
# Prints one JSON line: what the run holds, or the MLflow error.
CLIENT_SCENARIO = r"""
import json, os, sys, tempfile
import mlflow
from mlflow.exceptions import MlflowException

url, name, artifact_mb = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = mlflow.MlflowClient(url)
try:
    experiment_id = client.create_experiment(name)
except MlflowException as exc:
    print(json.dumps({"error": str(exc)[:2000]}))
    raise SystemExit(0)
run_id = client.create_run(experiment_id).info.run_id
client.log_param(run_id, "param", "value")
client.log_metric(run_id, "metric", 1.5)
if artifact_mb:
    path = os.path.join(tempfile.mkdtemp(), "big.bin")
    with open(path, "wb") as handle:
        handle.write(os.urandom(artifact_mb * 1024 * 1024))
    client.log_artifact(run_id, path)
client.set_terminated(run_id)
run = client.get_run(run_id)
print(json.dumps({
    "experiment_id": experiment_id, "run_id": run_id, "status": run.info.status,
    "params": run.data.params, "metrics": run.data.metrics,
    "artifacts": {f.path: f.file_size for f in client.list_artifacts(run_id)},
}))
"""


def run_client(url, name, env, artifact_mb=0, script=CLIENT_SCENARIO, timeout=300):
    """Run `script` (default `CLIENT_SCENARIO`) in a fresh Python with `env` added to a
    copy of ours stripped of MLflow tracking variables; returns its JSON line."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    clean.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "120", **env})
    done = subprocess.run([sys.executable, "-c", script, url, name, str(artifact_mb)],
                          env=clean, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def http_get(url, headers=None, context=None):
    """(status, body) of a GET; HTTP errors are returned."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60, context=context) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def leftover_processes(workdir):
    """Our processes whose command line or working directory mentions `workdir` (what a
    stopped service must not leave behind: nginx workers, uvicorn workers, job runners)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if int(pid) != os.getpid() and (str(workdir) in cmdline or cwd.startswith(str(workdir))):
            found.append((int(pid), cmdline[:120]))
    return found


def start(service):
    """``service.start()``, a missing binary or package turned into `skip_or_fail`."""
    try:
        return service.start()
    except ServiceUnavailable as missing:
        skip_or_fail(missing)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    return tls.make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory):
    """One plain ``mlflow server`` (SQLite) for the module's nginx tests."""
    server = mlflow_servers.MlflowServer(tmp_path_factory.mktemp("mlflow-plain")).start()
    yield server
    server.stop()


def make_proxy(upstream, tmp_path, **options):
    reason = nginx.unavailable()
    if reason:
        skip_or_fail(reason, nginx.REQUIRE_ENV)
    return nginx.NginxProxy(upstream, workdir=tmp_path / "nginx", **options)


def test_tls_files_form_a_verifiable_chain(tmp_path):
    from cryptography import x509

    files = tls.make_tls_files(tmp_path, client=True)
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    client = x509.load_pem_x509_certificate(files.client_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    client.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1"}
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.server_cert, files.server_key)  # key matches certificate
    context.load_cert_chain(files.client_pem)  # one file holding both, as MLflow wants
    assert oct(files.server_key.stat().st_mode & 0o777) == "0o600"


@pytest.mark.server
def test_nginx_tls_and_bearer_token_in_front_of_mlflow(plain_server, tls_files, tmp_path):
    proxy = make_proxy(plain_server.url, tmp_path, tls=tls_files, token=TOKEN)
    with start(proxy):
        assert proxy.url.startswith("https://127.0.0.1:")
        trusted = ssl.create_default_context(cafile=str(tls_files.ca_cert))
        assert http_get(f"{proxy.url}/health", context=trusted)[0] == 401
        assert http_get(f"{proxy.url}/health", {"Authorization": "Bearer wrong"},
                        trusted)[0] == 401
        assert http_get(f"{proxy.url}/health", {"Authorization": f"Bearer {TOKEN}"},
                        trusted) == (200, "OK")

        env = {"MLFLOW_TRACKING_TOKEN": TOKEN,
               "MLFLOW_TRACKING_SERVER_CERT_PATH": str(tls_files.ca_cert)}
        got = run_client(proxy.url, "through-nginx", env, artifact_mb=ARTIFACT_MB)
        assert got["status"] == "FINISHED"
        assert got["params"] == {"param": "value"} and got["metrics"] == {"metric": 1.5}
        assert got["artifacts"] == {"big.bin": ARTIFACT_MB * 1024 * 1024}

        refused = run_client(proxy.url, "no-token", {
            "MLFLOW_TRACKING_SERVER_CERT_PATH": str(tls_files.ca_cert)})
        assert "401" in refused["error"], refused
        assert "missing or wrong bearer token" in refused["error"]
    assert leftover_processes(proxy.workdir) == []

    # What landed, read from the server directly (no proxy).
    import mlflow

    client = mlflow.MlflowClient(plain_server.url)
    experiment = client.get_experiment_by_name("through-nginx")
    assert experiment.experiment_id == got["experiment_id"]
    assert client.get_run(got["run_id"]).data.params == {"param": "value"}
    assert client.get_experiment_by_name("no-token") is None
    stored = plain_server.artifacts_dir / got["experiment_id"] / got["run_id"] / "artifacts"
    assert (stored / "big.bin").stat().st_size == ARTIFACT_MB * 1024 * 1024


@pytest.mark.server
def test_nginx_mutual_tls_needs_the_client_certificate(plain_server, tls_files, tmp_path):
    proxy = make_proxy(plain_server.url, tmp_path, tls=tls_files, require_client_cert=True)
    with start(proxy):
        no_cert = ssl.create_default_context(cafile=str(tls_files.ca_cert))
        status, body = http_get(f"{proxy.url}/health", context=no_cert)
        assert status == 400 and "No required SSL certificate" in body

        with_cert = ssl.create_default_context(cafile=str(tls_files.ca_cert))
        with_cert.load_cert_chain(tls_files.client_pem)
        assert http_get(f"{proxy.url}/health", context=with_cert) == (200, "OK")

        got = run_client(proxy.url, "through-mtls", {
            "MLFLOW_TRACKING_SERVER_CERT_PATH": str(tls_files.ca_cert),
            "MLFLOW_TRACKING_CLIENT_CERT_PATH": str(tls_files.client_pem),
        })
        assert got["status"] == "FINISHED"

    import mlflow

    assert mlflow.MlflowClient(plain_server.url).get_experiment_by_name("through-mtls")


AS_AUTH_CLIENT = r"""
import json, sys
from mlflow.server.auth.client import AuthServiceClient

user = AuthServiceClient(sys.argv[1]).get_user(sys.argv[2])
print(json.dumps({"username": user.username, "is_admin": user.is_admin}))
"""


@pytest.mark.server
def test_basic_auth_server(tmp_path):
    server = mlflow_servers.MlflowServer(tmp_path / "mlflow-auth", basic_auth=True)
    with start(server):
        assert http_get(f"{server.url}/health") == (200, "OK")  # public
        assert http_get(f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1")[0] == 401
        server.create_user("alice", "alice-password-1")

        # MLflow's own AuthServiceClient, as the admin, sees the user.
        user = run_client(server.url, "alice", server.credentials_env(), script=AS_AUTH_CLIENT)
        assert user == {"username": "alice", "is_admin": False}

        got = run_client(server.url, "alice-experiment",
                         server.credentials_env("alice", "alice-password-1"), artifact_mb=1)
        assert got["status"] == "FINISHED" and got["artifacts"] == {"big.bin": 1024 * 1024}

        refused = run_client(server.url, "wrong-password",
                             server.credentials_env("alice", "not-the-password"))
        assert "401" in refused["error"], refused

        status, body = server.request(
            "GET", "/api/2.0/mlflow/experiments/get-by-name?experiment_name=alice-experiment")
        assert status == 200 and body["experiment"]["experiment_id"] == got["experiment_id"]
        assert server.request("GET", "/api/2.0/mlflow/experiments/get-by-name"
                              "?experiment_name=wrong-password")[0] == 404
    assert leftover_processes(server.workdir) == []


@pytest.mark.server
def test_postgres_backend_and_two_workers(tmp_path):
    import postgres

    reason = postgres.unavailable()
    if reason:
        skip_or_fail(reason, "TEST_REQUIRE_POSTGRES")
    database = postgres.PostgresServer().start()
    try:
        server = mlflow_servers.MlflowServer(tmp_path / "mlflow-pg",
                                             backend_store_uri=database.uri, workers=2)
        with server:
            import mlflow

            client = mlflow.MlflowClient(server.url)
            experiment_id = client.create_experiment("in-postgres")
            run_id = client.create_run(experiment_id).info.run_id
            client.log_metric(run_id, "metric", 2.0)
            group = [pid for pid in os.listdir("/proc") if pid.isdigit()
                     and _process_group(pid) == server.pid]
            assert len(group) >= 3, group  # the server and its two workers
        with postgres.connect(database.uri) as connection:
            names = [row[0] for row in connection.execute("SELECT name FROM experiments")]
            values = [row[0] for row in connection.execute("SELECT value FROM metrics")]
        assert "in-postgres" in names and values == [2.0]
    finally:
        database.stop()


def _process_group(pid):
    try:
        return os.getpgid(int(pid))
    except (ProcessLookupError, ValueError):
        return None


def test_otlp_receiver_over_http(monkeypatch):
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    with otlp.OtlpReceiver() as receiver:
        provider = TracerProvider(resource=Resource.create({"service.name": "support-test"}))
        for compression in (Compression.Gzip, Compression.NoCompression):
            exporter = OTLPSpanExporter(endpoint=receiver.traces_url, compression=compression)
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("support-test")
        receiver.inject_errors(1, 503)  # the exporter retries
        with tracer.start_as_current_span("parent", attributes={
                "text": "a", "number": 3, "ratio": 0.5, "flag": True, "list": [1, 2]}):
            with tracer.start_as_current_span("child") as child:
                child.add_event("happened", {"why": "test"})
        provider.shutdown()

        spans = receiver.wait_for_spans(4)
        requests = receiver.requests
    assert sorted(span.name for span in spans) == ["child", "child", "parent", "parent"]
    assert {r["headers"].get("content-encoding") for r in requests} == {"gzip", None}
    parent = next(span for span in spans if span.name == "parent")
    child = next(span for span in spans if span.name == "child")
    assert parent.parent_span_id == "" and child.parent_span_id == parent.span_id
    assert child.trace_id == parent.trace_id and len(parent.trace_id) == 32
    assert parent.attributes == {"text": "a", "number": 3, "ratio": 0.5, "flag": True,
                                 "list": [1, 2]}
    assert child.events == (("happened", {"why": "test"}),)
    assert parent.resource["service.name"] == "support-test"


MLFLOW_TRACED = r"""
import mlflow

@mlflow.trace(span_type="CHAIN")
def outer(x):
    return inner(x) + 1

@mlflow.trace(span_type="LLM")
def inner(x):
    return x * 2

assert outer(20) == 41
"""


def test_otlp_receiver_gets_mlflow_traces():
    """MLflow's own tracing, pointed at the receiver by the standard OTel variables."""
    with otlp.OtlpReceiver() as receiver:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "OTEL_"))}
        env.update({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.traces_url,
                    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
                    "OTEL_SERVICE_NAME": "mlflow-traced"})
        done = subprocess.run([sys.executable, "-c", MLFLOW_TRACED], env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        spans = {span.name: span for span in receiver.wait_for_spans(2)}
    assert set(spans) == {"outer", "inner"}
    assert spans["inner"].parent_span_id == spans["outer"].span_id
    assert spans["outer"].attributes["mlflow.spanType"] == '"CHAIN"'
    assert spans["inner"].attributes["mlflow.spanOutputs"] == "40"


def test_otlp_receiver_over_grpc():
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        skip_or_fail(f"no OTLP/gRPC exporter (pip install "
                     f"opentelemetry-exporter-otlp-proto-grpc): {exc}", otlp.REQUIRE_GRPC_ENV)
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    with start(otlp.OtlpReceiver(grpc=True)) as receiver:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(
            OTLPSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True)))
        with provider.get_tracer("grpc-test").start_as_current_span("over-grpc",
                                                                    attributes={"n": 1}):
            pass
        provider.shutdown()
        (span,) = receiver.wait_for_spans(1)
    assert (span.name, span.transport, span.attributes) == ("over-grpc", "grpc", {"n": 1})


@pytest.mark.server
def test_old_mlflow_server_with_todays_client(tmp_path):
    started = time.monotonic()
    try:
        server = old_mlflow.OldMlflowServer(tmp_path / "mlflow-old")
    except ServiceUnavailable as missing:
        skip_or_fail(missing)
    built = time.monotonic() - started
    print(f"old MLflow venv ready in {built:.1f} s; build info: {old_mlflow.build_info()}")
    with server:
        import mlflow

        status, body = server.request("GET", "/version")
        assert status == 200 and body == old_mlflow.DEFAULT_VERSION
        client = mlflow.MlflowClient(server.url)
        experiment_id = client.create_experiment("today-client-old-server")
        run = client.create_run(experiment_id, tags={"origin": "support-test"})
        client.log_param(run.info.run_id, "param", "value")
        client.log_metric(run.info.run_id, "metric", 3.0, step=2)
        artifact = tmp_path / "note.txt"
        artifact.write_text("hello old server\n")
        client.log_artifact(run.info.run_id, str(artifact))
        client.set_terminated(run.info.run_id)

        back = client.get_run(run.info.run_id)
        assert back.info.status == "FINISHED"
        assert back.data.params == {"param": "value"}
        assert back.data.metrics == {"metric": 3.0}
        assert back.data.tags["origin"] == "support-test"
        assert [f.path for f in client.list_artifacts(run.info.run_id)] == ["note.txt"]
        (found,) = client.search_runs([experiment_id])
        assert found.info.run_id == run.info.run_id
    assert leftover_processes(server.workdir) == []

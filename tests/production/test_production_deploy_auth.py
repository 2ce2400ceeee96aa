"""The authenticated set-ups of ``examples/deploy/``, run for real (no Docker here).

- No file publishes a server without authentication on all interfaces, and no file holds
  a password, key or token: every one comes from the environment (``${VAR:?...}``).
- ``docker-compose.auth.yml``: its ``mlflow server`` command line and environment, with
  ``basic_auth.ini``, on 127.0.0.1 against a throw-away PostgreSQL: the admin creates a
  user through MLflow's own auth client; as that user an app's traces, a training run's
  proxied artifacts and ``doctor`` all work.
- ``docker-compose.tls-proxy.yml``: its ``mlflow server`` command line, and the real
  nginx rendering ``nginx/mlflow-proxy.conf.template`` (its token from the environment,
  certificates from a throw-away CA): the same checks through TLS and the token.

Paths, host and port are localised as in test_production_deploy.py (same helpers).
"""

from __future__ import annotations

import os
import re
import secrets
import types

import pytest
from support_base import ServiceUnavailable, skip_or_fail
from test_production_deploy import (
    COMPOSE_FILES,
    DEPLOY,
    check_server,
    compose_args,
    localized,
    obs,  # noqa: F401  (fixture)
    options,
    postgres,  # noqa: F401  (fixture)
    sl,  # noqa: F401  (fixture)
)

TEST_WORKERS = "2"  # the files say 4; each worker imports MLflow, this machine has 2 cores
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY", re.I)
_FROM_ENV = re.compile(r"^\$\{[A-Z_]+:\?[^}]+\}$")


def compose(name):
    import yaml

    return yaml.safe_load((DEPLOY / name).read_text())


def environment_of(service, values):
    """A service's environment with ``${VAR:?...}`` replaced from ``values``."""
    def fill(match):
        return values[match.group(1)]
    return {k: re.sub(r"\$\{([A-Z_]+):\?[^}]*\}", fill, str(v)) for k, v in (service.get("environment") or {}).items()}


def test_nothing_open_on_all_interfaces_and_no_secret_in_the_files():
    authenticated = {"docker-compose.auth.yml": "mlflow", "docker-compose.tls-proxy.yml": "proxy"}
    for name in COMPOSE_FILES:
        for service_name, service in compose(name)["services"].items():
            for port in service.get("ports") or []:
                if not str(port).startswith("127.0.0.1:"):
                    assert authenticated.get(name) == service_name, (name, service_name, port)
            for key, value in (service.get("environment") or {}).items():
                value = str(value)
                if _SECRET_NAME.search(key) and key != "NGINX_ENVSUBST_FILTER":
                    assert _FROM_ENV.match(value), (name, key, value)
                for userinfo in re.findall(r"://([^/@\s]+)@", value):
                    assert ":${" in userinfo, (name, key, value)
    assert "--app-name" in compose_args("docker-compose.auth.yml")
    assert options(compose_args("docker-compose.auth.yml"))["--app-name"] == "basic-auth"
    template = (DEPLOY / "nginx" / "mlflow-proxy.conf.template").read_text()
    assert '"Bearer ${MLFLOW_PROXY_TOKEN}" 1;' in template and "return 401" in template
    assert "listen 8443 ssl;" in template
    run = (DEPLOY / "docker-run.sh").read_text()
    assert '-p "127.0.0.1:' in run
    import configparser

    ini = configparser.ConfigParser()
    ini.read(DEPLOY / "basic_auth.ini")
    assert "admin_password" not in ini["mlflow"] and "@" not in ini["mlflow"]["database_uri"]
    example = (DEPLOY / "env.example").read_text()
    for variable in ("POSTGRES_PASSWORD", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_PROXY_TOKEN"):
        assert re.search(rf"^{variable}=$", example, re.M), variable
    assert "Flask-WTF" in (DEPLOY / "mlflow-postgres.Dockerfile").read_text()


def server_command(name, workdir, postgres_uri):
    args = localized(compose_args(name), workdir, postgres_uri)
    if "--workers" in args:
        args[args.index("--workers") + 1] = TEST_WORKERS
    return args


@pytest.mark.server
def test_basic_auth_compose_server(sl, lm, obs, tmp_path, postgres, monkeypatch):  # noqa: F811
    from conftest import MlflowServer

    admin_password = "admin-" + secrets.token_hex(8)
    values = {"POSTGRES_PASSWORD": "unused-here", "MLFLOW_ADMIN_PASSWORD": admin_password,
              "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16)}
    service = compose("docker-compose.auth.yml")["services"]["mlflow"]
    env = environment_of(service, values)
    env.pop("MLFLOW_BACKEND_STORE_URI")  # on the command line here (the test's database)
    (tmp_path / "auth").mkdir()
    ini = (DEPLOY / "basic_auth.ini").read_text().replace("sqlite:////mlflow/", f"sqlite:///{tmp_path}/")
    (tmp_path / "basic_auth.ini").write_text(ini)
    env["MLFLOW_AUTH_CONFIG_PATH"] = str(tmp_path / "basic_auth.ini")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    server = MlflowServer(tmp_path, server_command("docker-compose.auth.yml", tmp_path, postgres.uri)).start()
    try:
        assert options(server.args)["--app-name"] == "basic-auth"
        # The admin (from the environment) creates a user with MLflow's own auth client.
        import mlflow.server

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin_password)
        password = "carol-" + secrets.token_hex(8)
        mlflow.server.get_app_client("basic-auth", tracking_uri=server.uri).create_user("carol", password)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "carol")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        checks = check_server(server, sl, lm, obs)
        assert "as user 'carol'" in checks["server health"].detail
        assert (tmp_path / "auth" / "basic_auth.db").exists()
    finally:
        obs.flush(120)
        obs.disable()
        server.stop()


@pytest.mark.server
def test_tls_proxy_compose_server(sl, lm, obs, tmp_path, postgres, monkeypatch):  # noqa: F811
    import nginx
    import tls
    from conftest import MlflowServer

    files = tls.make_tls_files(tmp_path / "certs")
    token = secrets.token_urlsafe(24)
    server = MlflowServer(tmp_path, server_command("docker-compose.tls-proxy.yml", tmp_path, postgres.uri)).start()
    proxy = None
    try:
        rendered = (DEPLOY / "nginx" / "mlflow-proxy.conf.template").read_text()
        rendered = (rendered.replace("${MLFLOW_PROXY_TOKEN}", token)
                    .replace("listen 8443 ssl;", "listen 127.0.0.1:{port} ssl;")
                    .replace("/etc/nginx/certs/server.pem", str(files.server_cert))
                    .replace("/etc/nginx/certs/server-key.pem", str(files.server_key))
                    .replace("http://mlflow:5000", server.uri))
        try:
            proxy = nginx.NginxProxy(server.uri, tls=files, server_config=rendered)
            proxy.start()
        except ServiceUnavailable as missing:
            skip_or_fail(missing)
        monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
        monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(files.ca_cert))
        through_proxy = types.SimpleNamespace(uri=proxy.url, artifacts_dir=server.artifacts_dir)
        checks = check_server(through_proxy, sl, lm, obs)
        detail = checks["server health"].detail
        assert "bearer token" in detail and "TLS verified with" in detail
        assert '" 401 ' not in proxy.access_log.read_text()  # every request carried the token
    finally:
        obs.flush(120)
        obs.disable()
        if proxy is not None:
            proxy.stop()
        server.stop()
    assert os.path.exists(files.ca_cert)

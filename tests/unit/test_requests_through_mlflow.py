"""Every request synalinks-obs sends to a store goes the way MLflow's client goes.

A static audit of the package's source: no module imports an HTTP client of its own
(``urllib.request``, ``http.client``, ``requests``, ``httpx``, ``urllib3``, ``aiohttp``);
MLflow's REST helper and host credentials are reached only through
``compat/mlflow.py`` (``http_get``, ``host_creds``), and the server checks call those.
That this path honours MLflow's credential and TLS variables is proven against real
servers in tests/production/test_production_auth.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "src" / "synalinks_obs"
HTTP_CLIENTS = ("urllib.request", "http.client", "requests", "httpx", "urllib3", "aiohttp", "pycurl")


def modules():
    files = sorted(SOURCE.rglob("*.py"))
    assert len(files) > 40, SOURCE
    return files


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SOURCE)))
def test_no_http_client_of_our_own(path):
    found = [name for name in imported(path)
             if any(name == client or name.startswith(client + ".") for client in HTTP_CLIENTS)]
    assert not found, f"{path.relative_to(SOURCE)} imports {found}: send requests through MLflow's client"


def test_mlflows_rest_helper_only_through_compat():
    users = {path.relative_to(SOURCE).as_posix() for path in modules()
             if "mlflow.utils.rest_utils" in imported(path) or "mlflow.utils.credentials" in imported(path)}
    assert users == {"compat/mlflow.py"}, users
    callers = {path.relative_to(SOURCE).as_posix() for path in modules()
               if "http_get" in path.read_text() or "host_creds" in path.read_text()}
    assert {"store/health.py", "cli/store_checks.py"} <= callers, callers

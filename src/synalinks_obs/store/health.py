"""Is a tracking server usable? ``probe`` asks the way MLflow's client asks.

``GET /health`` (reachable, TLS, a proxy's own authentication), then one authenticated
read, ``GET /api/2.0/mlflow/experiments/search?max_results=1`` (MLflow's ``basic-auth``
app leaves ``/health`` public). The requests go through MLflow's own REST helper with
the credentials and TLS settings MLflow resolves for the URI
(``MLFLOW_TRACKING_USERNAME/PASSWORD``, ``MLFLOW_TRACKING_TOKEN``,
``MLFLOW_TRACKING_SERVER_CERT_PATH``, ``MLFLOW_TRACKING_INSECURE_TLS``, client
certificates, request-header plugins): no HTTP stack of our own. A short timeout and no
retries: a store that is down fails at once, and ``StoreUnavailable`` says why in one
line, credentials never included: unreachable, too slow, TLS verification failed (with
the fix), authentication or permission refused (``StoreRejected``, with the fix), or
another HTTP status. ``rejection`` recognises the same refusal in an error MLflow's
client raised (a write answered 401/403).
"""

from __future__ import annotations

from synalinks_obs import reporting, uris
from synalinks_obs.compat import mlflow as mlflow_compat

PROBE_TIMEOUT = 3.0  # seconds a GET /health may take before the store counts as down
AUTHENTICATED_ENDPOINT = "/api/2.0/mlflow/experiments/search?max_results=1"


class StoreUnavailable(Exception):
    """The store did not pass the health probe (the message says how, in one line)."""


class StoreRejected(StoreUnavailable):
    """The store answered but refused us: authentication (``status`` 401) or permission
    (403)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


def auth_fix(uri: str) -> str:
    return (
        f"authentication failed for {uris.display(uri)}: check MLFLOW_TRACKING_USERNAME/"
        "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)"
    )


def permission_fix(uri: str) -> str:
    return (
        f"permission denied by {uris.display(uri)}: the account in MLFLOW_TRACKING_USERNAME "
        "(or MLFLOW_TRACKING_TOKEN) may not write there; ask the server's admin for EDIT "
        "permission on the experiment, or use another account"
    )


def tls_fix(uri: str, detail: str) -> str:
    return (
        f"TLS verification failed for {uris.display(uri)} ({detail}): set "
        "MLFLOW_TRACKING_SERVER_CERT_PATH to the CA bundle that signed the server's "
        "certificate (or MLFLOW_TRACKING_INSECURE_TLS=true to skip verification)"
    )


def _root_cause(exc: BaseException) -> BaseException:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        nxt = exc.__cause__ or exc.__context__
        if nxt is None:
            return exc
        exc = nxt
    return exc


def describe_failure(uri: str, exc: BaseException, timeout: float | None = None) -> str:
    """One line for a request to ``uri`` that raised ``exc`` (no credentials in it)."""
    root = _root_cause(exc)
    names = {type(e).__name__ for e in (exc, root)}
    text = f"{reporting.first_line(exc)} {reporting.first_line(root)}"
    where = uris.display(uri)
    if "SSLError" in names or "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in type(root).__name__:
        detail = "certificate verify failed" if "CERTIFICATE_VERIFY_FAILED" in text else type(root).__name__
        return tls_fix(uri, detail)
    if names & {"Timeout", "ReadTimeout", "ConnectTimeout", "TimeoutError"} or "timed out" in text:
        within = f" within {timeout:g} s" if timeout else ""
        return f"tracking store {where} did not answer{within}"
    return f"tracking store {where} unreachable ({type(root).__name__})"


def status_problem(uri: str, status: int) -> StoreUnavailable | None:
    """The problem an HTTP status from the store means (None for success)."""
    if 200 <= status < 300:
        return None
    if status == 401:
        return StoreRejected(f"{auth_fix(uri)} (HTTP 401)", 401)
    if status == 403:
        return StoreRejected(f"{permission_fix(uri)} (HTTP 403)", 403)
    return StoreUnavailable(f"tracking store {uris.display(uri)} answered HTTP {status}")


_REFUSALS = {"UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403}


def rejection(uri: str, exc: BaseException) -> StoreRejected | None:
    """The ``StoreRejected`` an error of MLflow's client means (its request answered 401
    or 403), else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, StoreRejected):
            return exc
        status = _REFUSALS.get(str(getattr(exc, "error_code", "") or ""))
        if status is None:
            text = reporting.first_line(exc)
            status = next((code for code in (401, 403) if f"error code {code} " in text), None)
        if status is not None:
            return status_problem(uri, status)
        exc = exc.__cause__ or exc.__context__
    return None


def probe(uri: str, timeout: float = PROBE_TIMEOUT) -> None:
    """Raise ``StoreUnavailable`` saying why unless ``GET <uri>/health`` and an
    authenticated read both answer 2xx (``StoreRejected`` for 401/403)."""
    try:
        get = mlflow_compat.http_get_function()
    except (ImportError, AttributeError) as exc:
        from synalinks_obs.compat import note_fallback

        note_fallback("mlflow.utils.rest_utils.http_request", "servers are not health-checked", exc)
        return
    for endpoint in ("/health", AUTHENTICATED_ENDPOINT):
        try:
            response = get(uri, endpoint, timeout)
        except Exception as exc:
            raise StoreUnavailable(describe_failure(uri, exc, timeout)) from None
        problem = status_problem(uri, response.status_code)
        if problem is not None:
            raise problem

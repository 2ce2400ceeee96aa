"""Each tracking store's health as the ``Writer`` sees it: healthy or not, failures and
backoff, the reason said, a refusal of our credentials.

A server is probed (``store.health``: ``GET /health`` and an authenticated read, short
timeouts) before the first write after a failure; a failure backs off (0.5 s doubling up
to ``MAX_BACKOFF``) and its reason is said once (``problem``); a refusal (401, or a 403
that lasted ``PERMISSION_PATIENCE`` seconds) is said once (``rejected``) and the store is
left alone for ``REJECTED_RETRY_AFTER`` seconds, its spans dropped with that reason; new
credentials end that at once. A write that succeeds resets the store and takes over its
spool files.
"""

from __future__ import annotations

import time

from synalinks_obs import reporting, uris
from synalinks_obs.compat import mlflow as mlflow_compat
from synalinks_obs.store.health import StoreRejected, StoreUnavailable, probe

MAX_BACKOFF = 5.0
REJECTED_RETRY_AFTER = 60.0  # seconds a store that refused our credentials is left alone
# Seconds a permission refusal (HTTP 403) is asked again, its spans kept, before it is
# believed. MLflow's basic-auth app grants an experiment's creator its permission just
# after creating the experiment: a replica that finds the experiment a sibling created a
# moment ago is refused until then.
PERMISSION_PATIENCE = 3.0


class StoreState:
    __slots__ = (
        "healthy", "failures", "next_try", "reason", "rejected_until", "refused_since", "span_seconds",
    )

    def __init__(self):
        self.healthy = False  # a probe (http) or a write succeeded since the last failure
        self.failures = 0
        self.next_try = 0.0
        self.reason = ""
        self.rejected_until = 0.0  # refused our credentials: spans are dropped until then
        self.refused_since = 0.0  # the first refusal since the last write that worked
        self.span_seconds = 0.0  # recent seconds per span written (0: not known yet)


class StoreHealth:
    """The ``Writer``'s per-store health (a mixin: it uses the Writer's ``_stores``,
    ``_notify``, ``_done_with``, ``_drop_destination_uri``, ``spool`` and
    ``_adopt_spool``)."""

    def _state(self, uri) -> StoreState:
        state = self._stores.get(uri)
        if state is None:
            state = self._stores[uri] = StoreState()
        return state

    def _check_store(self, uri) -> None:
        state = self._state(uri)
        if state.healthy or not uris.is_http(uri):
            return
        probe(uri)
        if state.failures:
            mlflow_compat.clear_server_version_cache()
        state.healthy = True

    def _failed(self, uri, exc) -> None:
        state = self._state(uri)
        was_healthy = state.healthy
        state.healthy = False
        state.failures += 1
        state.next_try = time.monotonic() + min(MAX_BACKOFF, 0.5 * 2 ** (state.failures - 1))
        self._versions_checked.discard(uri)  # asked again next time: it may be replaced
        if isinstance(exc, StoreUnavailable):
            reason = str(exc)
        else:
            reason = f"{type(exc).__name__}: {reporting.first_line(exc)}"
            if "server version" in reason:
                mlflow_compat.clear_server_version_cache()
        if reason != state.reason:
            state.reason = reason
            self._notify("problem", reason)
        return was_healthy

    def _rejected(self, uri, refused: StoreRejected, batch, count) -> bool:
        """The store refused us. A refused password (401) is believed at once, a refused
        permission (403) once it has lasted ``PERMISSION_PATIENCE`` seconds (until then
        the batch is kept and asked again after the usual backoff); then what goes there
        is dropped and the store asked again later. True when the batch is done."""
        state = self._state(uri)
        now = time.monotonic()
        state.healthy = False
        state.failures += 1
        if refused.status == 403:
            state.refused_since = state.refused_since or now
            if now - state.refused_since < PERMISSION_PATIENCE:
                state.next_try = now + min(MAX_BACKOFF, 0.5 * 2 ** (state.failures - 1))
                return False
        state.rejected_until = now + REJECTED_RETRY_AFTER
        reason = str(refused)
        if reason != state.reason:
            state.reason = reason
            self._notify("rejected", reason)
        self._done_with(batch, count, reason)
        self._drop_destination_uri(uri, reason)
        return True

    def forget_rejections(self) -> None:
        """New credentials: stores that refused the old ones are asked again at once."""
        for state in self._stores.values():
            if state.rejected_until or state.refused_since:
                state.rejected_until = state.refused_since = 0.0
                state.healthy = False
                state.reason = ""

    def _ok(self, uri) -> None:
        state = self._state(uri)
        state.healthy = True
        state.failures = 0
        state.next_try = 0.0
        state.reason = ""
        state.rejected_until = state.refused_since = 0.0
        if self.spool is not None and uri not in self._adopted:
            self._adopt_spool(uri)

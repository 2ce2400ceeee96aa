"""Each tracking store's health as the ``Writer`` sees it: healthy or not, failures and
backoff, the reason said, a refusal of our credentials.

A server is probed (``store.health``: ``GET /health`` and an authenticated read, short
timeouts) before the first write after a failure; a failure backs off (0.5 s doubling up
to ``MAX_BACKOFF``) and its reason is said once (``problem``); a refusal (401/403) is
said once (``rejected``) and the store is left alone for ``REJECTED_RETRY_AFTER``
seconds, its spans dropped with that reason; new credentials end that at once. A write
that succeeds resets the store and takes over its spool files.
"""

from __future__ import annotations

import time

from synalinks_obs import reporting, uris
from synalinks_obs.compat import mlflow as mlflow_compat
from synalinks_obs.store.health import StoreRejected, StoreUnavailable, probe

MAX_BACKOFF = 5.0
REJECTED_RETRY_AFTER = 60.0  # seconds a store that refused our credentials is left alone


class StoreState:
    __slots__ = ("healthy", "failures", "next_try", "reason", "rejected_until", "span_seconds")

    def __init__(self):
        self.healthy = False  # a probe (http) or a write succeeded since the last failure
        self.failures = 0
        self.next_try = 0.0
        self.reason = ""
        self.rejected_until = 0.0  # refused our credentials: spans are dropped until then
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

    def _rejected(self, uri, refused: StoreRejected, batch, count) -> None:
        """The store refused our credentials: drop what goes there, ask again later."""
        state = self._state(uri)
        state.healthy = False
        state.failures += 1
        state.rejected_until = time.monotonic() + REJECTED_RETRY_AFTER
        reason = str(refused)
        if reason != state.reason:
            state.reason = reason
            self._notify("rejected", reason)
        self._done_with(batch, count, reason)
        self._drop_destination_uri(uri, reason)

    def forget_rejections(self) -> None:
        """New credentials: stores that refused the old ones are asked again at once."""
        for state in self._stores.values():
            if state.rejected_until:
                state.rejected_until = 0.0
                state.healthy = False
                state.reason = ""

    def _ok(self, uri) -> None:
        state = self._state(uri)
        state.healthy = True
        state.failures = 0
        state.next_try = 0.0
        state.reason = ""
        state.rejected_until = 0.0
        if self.spool is not None and uri not in self._adopted:
            self._adopt_spool(uri)

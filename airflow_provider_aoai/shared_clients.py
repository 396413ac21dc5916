"""One HTTP client per connection id, shared by every trigger of a process (the triggerer).

A triggerer runs hundreds of waits in one event loop. If each built its own hook, each would keep its own
socket open and fetch its own Entra ID token. Here they share one
:class:`~airflow_provider_aoai.http.client.AzureOpenAIClient` per connection id, with its connection pool and
token cache (both thread-safe). The connection is read again at most every ``recheck_seconds``. If its fields
changed (their fingerprint differs), the next call gets a new client and the old one is closed; requests
still running on it finish first. Blocking: call it from a worker thread (as
:mod:`~airflow_provider_aoai.polling` does). This module imports nothing heavy; the hook is imported on first
use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_aoai.hooks import AzureOpenAIHook

log = logging.getLogger(__name__)

# How often a shared client's connection is read again to notice a change (seconds).
DEFAULT_RECHECK_SECONDS = 30.0


def connection_fingerprint(conn: Any) -> str:
    """A digest of every field of an Airflow connection that the client is built from (no secret is kept)."""
    fields = [
        getattr(conn, name, None) for name in ("conn_type", "host", "schema", "login", "password", "port")
    ]
    extra = getattr(conn, "extra", None)
    fields.append(extra if isinstance(extra, (str, type(None))) else json.dumps(extra, sort_keys=True))
    return hashlib.sha256(json.dumps(fields, default=str).encode()).hexdigest()


@dataclass
class _Entry:
    fingerprint: str
    hook: AzureOpenAIHook
    checked_at: float


class SharedClients:
    """Hooks on shared clients, one per connection id; thread-safe. Call :meth:`hook` from a worker thread.

    :param recheck_seconds: read a connection again at most this often to notice a change.
    """

    def __init__(self, recheck_seconds: float = DEFAULT_RECHECK_SECONDS) -> None:
        self.recheck_seconds = recheck_seconds
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._building: dict[str, threading.Lock] = {}

    def hook(self, conn_id: str) -> AzureOpenAIHook:
        """The hook of ``conn_id``, on the process's client for it (built, or rebuilt, when needed).

        Blocking: it may read the connection and build a client.

        :raises AzureOpenAIConfigError: the connection is unusable (the message names the field).
        """
        with self._lock:
            entry = self._entries.get(conn_id)
            building = self._building.setdefault(conn_id, threading.Lock())
        if entry is not None and time.monotonic() - entry.checked_at < self.recheck_seconds:
            return entry.hook
        if entry is not None and not building.acquire(blocking=False):
            return entry.hook  # another thread is reading the connection again; this one goes on
        if entry is None:
            building.acquire()  # the first calls wait for the one client all of them will use
        try:
            return self._refresh(conn_id)
        finally:
            building.release()

    def _refresh(self, conn_id: str) -> AzureOpenAIHook:
        from airflow_provider_aoai.connection import build_client
        from airflow_provider_aoai.hooks import AzureOpenAIHook

        entry = self._entries.get(conn_id)
        if entry is not None and time.monotonic() - entry.checked_at < self.recheck_seconds:
            return entry.hook  # refreshed by another thread while this one waited
        conn = AzureOpenAIHook.get_connection(conn_id)
        fingerprint = connection_fingerprint(conn)
        if entry is not None and entry.fingerprint == fingerprint:
            entry.checked_at = time.monotonic()
            return entry.hook
        hook = AzureOpenAIHook.from_client(build_client(conn, conn_id), conn_id)
        with self._lock:
            self._entries[conn_id] = _Entry(fingerprint, hook, time.monotonic())
        if entry is not None:
            log.info("Connection %s changed; the triggers now use a new client for it", conn_id)
            entry.hook.client.close()  # requests in flight on it finish; none starts there again
        return hook

    def clear(self) -> None:
        """Close and forget every shared client."""
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
        for entry in entries:
            entry.hook.client.close()


shared_clients = SharedClients()

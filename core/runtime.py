"""One process's wiring: settings -> store, metadata, retriever, queue. Shared by the API and the workers."""

from __future__ import annotations

import logging
import secrets
import threading
from functools import cached_property
from pathlib import Path
from typing import Any

from core.settings import Settings, get_settings

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, settings: Settings, store: Any = None, retriever: Any = None, queue: Any = None) -> None:
        self.settings = settings
        self._store = store
        self._retriever = retriever
        self._queue = queue
        self._lock = threading.RLock()

    @property
    def store(self) -> Any:
        with self._lock:
            if self._store is None:
                from store import open_store

                Path(self.settings.data_dir).mkdir(parents=True, exist_ok=True)
                s = self.settings
                self._store = open_store(
                    s.store_url, Path(s.data_dir), s.qdrant_api_key, s.shard_number, s.replication_factor
                )
            return self._store

    @cached_property
    def meta(self) -> Any:
        from store.meta import MetaStore

        return MetaStore(self.store, job_retention_s=self.settings.job_retention_days * 86400.0, lock=self._meta_lock())

    def _meta_lock(self) -> Any:
        """The metadata's update lock, across the processes sharing this store where they have a lock in common."""
        from store.locks import UpdateLock, file_lock, redis_lock

        s = self.settings
        if s.store_url == "embedded-shared":
            return UpdateLock(file_lock(Path(s.data_dir) / "meta.lock"))
        if s.store_url.startswith(("http://", "https://")):
            redis_url = s.lock_url or (s.broker_url if s.broker_url.startswith(("redis://", "rediss://")) else None)
            if redis_url is not None:
                return UpdateLock(redis_lock(redis_url, s.store_url))
            if not s.broker_url.startswith("memory://"):
                log.warning(
                    "metadata updates are locked within each process only: processes sharing the Qdrant server "
                    "have no lock in common with broker %s (set RR_LOCK_URL to a Redis, or use a Redis broker)",
                    s.broker_url.split("://", 1)[0],
                )
        return UpdateLock()

    @cached_property
    def events(self) -> Any:
        """Recent searches and ingestion batches, buffered here and shared through the store (``store.events``)."""
        from store.events import EventLog

        return EventLog(self.store, self.settings.events_retention_minutes * 60.0, self.settings.events_flush_seconds)

    @property
    def retriever(self) -> Any:
        with self._lock:
            if self._retriever is None:
                from router.serving import Retriever
                from router.workbench import make_encoder, registry_for

                self._retriever = Retriever(
                    make_encoder(self.settings), registry_for(self.settings, self.settings.expert_mode), self.store
                )
            return self._retriever

    @property
    def queue(self) -> Any:
        with self._lock:
            if self._queue is None:
                from workers.queue import make_queue

                self._queue = make_queue(self.settings, self)
            return self._queue

    def ensure_admin_key(self) -> str | None:
        """RR_ADMIN_KEY wins; else the embedded default makes one on first start and stores it in the data dir.

        Returns the path of the key file when one was generated or exists, for the start-up message.
        """
        from store.meta import ADMIN

        if self.settings.admin_key:
            if self.meta.tenant_for_key(self.settings.admin_key) != ADMIN:
                self.meta.create_key(ADMIN, self.settings.admin_key)
            return None
        path = Path(self.settings.data_dir) / "admin.key"
        if path.is_file():
            key = path.read_text().strip()
            if self.meta.tenant_for_key(key) != ADMIN:
                self.meta.create_key(ADMIN, key)
            return str(path)
        key = self.meta.create_key(ADMIN, f"rr_admin_{secrets.token_urlsafe(24)}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(key + "\n")
        path.chmod(0o600)
        return str(path)

    def flush_events(self) -> None:
        """Write buffered events now (process shutdown); nothing to do where none were recorded."""
        if "events" in self.__dict__:
            self.events.close()

    def close(self) -> None:
        if self._queue is not None:
            self._queue.close()
        self.flush_events()
        if self._store is not None:
            self._store.close()


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime(get_settings())
        return _runtime


def current_runtime() -> Runtime | None:
    """This process's runtime if one was made, without making one (shutdown hooks)."""
    return _runtime


def set_runtime(rt: Runtime | None) -> None:
    global _runtime
    with _runtime_lock:
        _runtime = rt

"""The lock that the metadata's read-modify-write updates hold, within a process and across the processes sharing it.

Threads of one process (the API's requests, the embedded default's in-process worker) are serialised by an RLock.
Processes sharing one store (`rr serve` beside `rr worker` processes, uvicorn's workers, the docker-compose
services) also take a lock they all see, when one exists:

- ``embedded-shared``: an exclusive ``flock`` on a file beside the store's shards;
- a Qdrant server with a Redis broker: a Redis lock, named after the store's URL, that expires on its own after
  ``timeout_s`` should its holder die;
- a Qdrant server with another broker: none (`Runtime` warns at start), and the window is the two store calls.
"""

from __future__ import annotations

import fcntl
import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType

from core.errors import StoreError

ProcessLock = Callable[[], AbstractContextManager[object]]


class UpdateLock:
    """An RLock for this process's threads; the outermost holder also takes ``across`` (another process's holder
    waits there)."""

    def __init__(self, across: ProcessLock | None = None) -> None:
        self._threads = threading.RLock()
        self._across = across
        self._depth = 0
        self._held: AbstractContextManager[object] | None = None

    def __enter__(self) -> UpdateLock:
        self._threads.acquire()
        self._depth += 1
        if self._depth == 1 and self._across is not None:
            try:
                held = self._across()
                held.__enter__()
            except BaseException:
                self._depth -= 1
                self._threads.release()
                raise
            self._held = held
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._depth == 1 and self._held is not None:
                held, self._held = self._held, None
                held.__exit__(exc_type, exc, tb)
        finally:
            self._depth -= 1
            self._threads.release()


def file_lock(path: Path) -> ProcessLock:
    """An exclusive ``flock`` on ``path`` (created), for processes on one machine."""
    path = Path(path)

    @contextmanager
    def held() -> Iterator[object]:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield fh
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    return held


def redis_lock(redis_url: str, scope: str, timeout_s: float = 30.0, wait_s: float = 30.0) -> ProcessLock:
    """A Redis lock shared by every process that names the same ``scope`` (the store's URL) on that Redis. It expires
    after ``timeout_s`` if its holder dies; a Redis that cannot be reached, or a lock not got within ``wait_s``, is a
    :class:`StoreError` (503 in the API, retried by the workers)."""
    import redis
    from redis.exceptions import LockError, RedisError

    client = redis.Redis.from_url(redis_url)
    name = f"rr:meta-lock:{hashlib.sha256(scope.encode()).hexdigest()[:16]}"

    @contextmanager
    def held() -> Iterator[object]:
        lock = client.lock(name, timeout=timeout_s, blocking_timeout=wait_s)
        try:
            got = lock.acquire()
        except RedisError as e:
            raise StoreError(f"the metadata lock in Redis could not be taken: {e}") from e
        if not got:
            raise StoreError(f"the metadata lock in Redis was not free within {wait_s:g} s")
        try:
            yield lock
        finally:
            try:
                lock.release()
            except LockError:  # it expired meanwhile (the update took longer than timeout_s): nothing to free
                pass
            except RedisError as e:  # the lock expires on its own
                raise StoreError(f"the metadata lock in Redis could not be freed: {e}") from e

    return held

"""The embedded engine shared by several processes on one machine, through a file lock.

qdrant-edge lets one process open a shard at a time. ``SharedEdgeStore`` takes an exclusive lock on the store's folder
for each call, opens the shards it needs, does the call, flushes and closes. That lets `rr serve` and separate
`rr worker` processes (Redis broker) share one embedded store without a Qdrant server; every call pays for opening
its shards, so it suits a few processes on one machine. Beyond that, use a Qdrant server (RR_STORE_URL=http://...).
"""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from store.edge import EdgeStore

T = TypeVar("T")


class SharedEdgeStore:
    def __init__(self, root: Path, optimize_every: int | None = 20_000) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.optimize_every = optimize_every
        self._thread_lock = threading.RLock()

    def __repr__(self) -> str:
        return f"SharedEdgeStore({str(self.root)!r})"

    @contextmanager
    def _store(self) -> Iterator[EdgeStore]:
        with self._thread_lock, (self.root / ".lock").open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            store = EdgeStore(self.root, self.optimize_every)
            try:
                yield store
            finally:
                store.close()
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _call(self, method: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            with self._store() as store:
                return getattr(store, method)(*args, **kwargs)

        call.__name__ = method
        return call

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_") or not callable(getattr(EdgeStore, name, None)):
            raise AttributeError(name)
        return self._call(name)

    def close(self) -> None:
        """Nothing stays open between calls."""

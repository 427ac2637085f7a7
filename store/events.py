"""Recent operational events (searches, ingestion batches), shared by every API and worker process.

Where they live: a collection of the vector store (``_rr_events``), beside the metadata collection. The store is the
one thing every deployment shares (the embedded default, several local processes through ``embedded-shared``, a
Qdrant server in compose), while Redis exists only where Celery is the broker; keeping events there gives one
implementation that behaves the same everywhere, as ``store.meta`` does for tenants and jobs. Prometheus counters
(``core.metrics``) answer "how many in total"; the dashboard also needs per-tenant views and exact percentiles over
time windows, which need the events themselves.

Cheap on the search path: ``record`` appends to an in-memory buffer under a lock and returns. A daemon thread writes
the buffer every ``flush_s`` seconds as one point per (kind, minute, tenant) holding a list of events, so a busy
process writes a handful of points per flush, not one per search. A failed write is logged and retried at the next
flush (the buffer is bounded, dropping the oldest first): a search never fails because an event could not be
stored. ``flush`` can also be called directly, e.g. by the dashboard before it reads, to include its own process.

Time windows with the store's equality-only filters: every point carries its ``minute`` (unix seconds // 60); a window
query asks for the list of minutes it spans and then cuts the exact start. Pruning deletes whole minutes older than
the retention, sweeping from where the previous prune stopped (at most a day back on a process's first prune).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from core.errors import Conflict
from store.base import PointIn, iter_points

log = logging.getLogger(__name__)

EVENTS = "_rr_events"
_VEC = "v"
KINDS = ("search", "ingest")
_PRUNE_EVERY_S = 60.0
_FIRST_SWEEP_MIN = 24 * 60


def _clean(value: Any) -> Any:
    """Plain JSON for the store: numpy scalars become Python numbers, NaN and infinity become None."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f if math.isfinite(f) else None


class EventLog:
    """Buffered, shared, time-windowed events. One per process (see ``Runtime.events``)."""

    def __init__(
        self, store: Any, retention_s: float = 7200.0, flush_s: float = 2.0, max_buffer: int = 100_000
    ) -> None:
        self.store = store
        self.retention_s = retention_s
        self.flush_s = flush_s
        self.max_buffer = max_buffer
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._buffer: list[tuple[str, dict[str, Any]]] = []
        self._seq = 0
        self._proc = uuid.uuid4().hex[:12]
        self._pid = os.getpid()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._last_prune = 0.0
        self._pruned_until: int | None = None
        self.dropped = 0
        if not store.collection_exists(EVENTS):
            with contextlib.suppress(Conflict):  # another process created it first
                store.create_collection(EVENTS, {_VEC: 1})

    # ---- writing -------------------------------------------------------------------------------------------
    def record(self, kind: str, **fields: Any) -> None:
        """Buffer one event (``t`` defaults to now). Never raises: the caller is serving a request."""
        try:
            if kind not in KINDS:
                raise ValueError(f"unknown event kind {kind!r}; one of {KINDS}")
            event = {"t": time.time(), **fields}
            with self._lock:
                self._after_fork()
                self._buffer.append((kind, event))
                if len(self._buffer) > self.max_buffer:
                    over = len(self._buffer) - self.max_buffer
                    del self._buffer[:over]
                    self.dropped += over
                self._ensure_thread()
        except Exception:
            log.warning("could not record a %s event", kind, exc_info=True)

    def _after_fork(self) -> None:
        """A forked child (Celery prefork) inherits the parent's buffer, which the parent flushes itself."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._proc = uuid.uuid4().hex[:12]
            self._buffer = []
            self._thread = None
            self._flush_lock = threading.Lock()

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="rr-events", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()
            if time.time() - self._last_prune >= _PRUNE_EVERY_S:
                try:
                    self.prune()
                except Exception:
                    log.warning("could not prune old events", exc_info=True)

    def flush(self) -> int:
        """Write the buffered events now; returns how many were written (0 when the write failed: they stay)."""

        with self._flush_lock:
            with self._lock:
                self._after_fork()
                batch, self._buffer = self._buffer, []
            if not batch:
                return 0
            groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
            for kind, ev in batch:
                groups.setdefault((kind, int(ev["t"] // 60), str(ev.get("tenant", ""))), []).append(ev)
            points = []
            for (kind, minute, tenant), events in groups.items():
                self._seq += 1
                points.append(
                    PointIn(
                        f"{kind}/{minute}/{self._proc}/{self._seq}",
                        {_VEC: [1.0]},
                        {"kind": kind, "minute": minute, "tenant": tenant, "events": _clean(events)},
                    )
                )
            try:
                self.store.upsert(EVENTS, points)
            except Exception:
                log.warning("could not write %d events; keeping them for the next flush", len(batch), exc_info=True)
                with self._lock:
                    self._buffer[:0] = batch
                return 0
            return len(batch)

    # ---- reading -------------------------------------------------------------------------------------------
    def query(self, kind: str, since: float, tenant: str | None = None, until: float | None = None) -> list[dict]:  # type: ignore[type-arg]
        """Events of one kind with ``since <= t < until`` (default now), oldest first; one tenant's, or everyone's."""
        until = time.time() if until is None else until
        flt: dict[str, Any] = {"kind": kind, "minute": list(range(int(since // 60), int(until // 60) + 1))}
        if tenant is not None:
            flt["tenant"] = tenant
        out = [e for p in self._scan(flt) for e in p.get("events", []) if since <= e.get("t", 0.0) < until]
        out.sort(key=lambda e: e["t"])
        return out

    def _scan(self, flt: dict[str, Any]) -> Iterator[dict[str, Any]]:
        return (p.payload for p in iter_points(self.store, EVENTS, filter=flt))

    # ---- upkeep --------------------------------------------------------------------------------------------
    def prune(self, now: float | None = None) -> int:
        """Delete the points of minutes older than the retention; returns how many points went."""
        now = time.time() if now is None else now
        self._last_prune = now
        cutoff = int((now - self.retention_s) // 60)  # minutes before this one are past the retention
        start = cutoff - _FIRST_SWEEP_MIN if self._pruned_until is None else self._pruned_until
        if start >= cutoff:
            return 0
        ids: list[str] = []
        offset: str | None = None
        minutes = list(range(start, cutoff))
        while True:
            points, offset = self.store.scroll(EVENTS, 256, offset, filter={"minute": minutes})
            ids.extend(p.doc_id for p in points)
            if offset is None:
                break
        if ids:
            self.store.delete(EVENTS, ids)
        self._pruned_until = cutoff
        return len(ids)

    def close(self) -> None:
        """Stop the flusher and write what is left."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=self.flush_s + 5)
        self.flush()

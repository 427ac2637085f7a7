"""The shared event log on both engines: windows, tenants, pruning, and a store failure never reaching the caller."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient

from core.errors import StoreError
from store import EdgeStore, QdrantServerStore
from store.events import EventLog


@pytest.fixture(params=["edge", "server"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    s = EdgeStore(tmp_path / "edge") if request.param == "edge" else QdrantServerStore(QdrantClient(":memory:"))
    yield s
    s.close()


def test_window_and_tenant_queries(store: Any) -> None:
    log = EventLog(store, retention_s=7200, flush_s=60)
    now = 1_800_000_000.0
    for i, tenant in enumerate(["a", "b", "a"]):
        log.record("search", t=now - 10 * i, tenant=tenant, collection="c", expert="bio", ms=1.5, ok=True)
    log.record("search", t=now - 3000, tenant="a", collection="c", expert="base", ms=2.0, ok=False)
    log.record("ingest", t=now - 5, tenant="a", collection="c", docs=3, encoders={"base": 0.25})
    assert log.flush() == 5
    assert [e["t"] for e in log.query("search", now - 60, until=now + 1)] == [now - 20, now - 10, now]
    assert len(log.query("search", now - 3600, until=now + 1)) == 4
    assert len(log.query("search", now - 60, tenant="a", until=now + 1)) == 2
    assert log.query("search", now - 60, tenant="nobody", until=now + 1) == []
    (ing,) = log.query("ingest", now - 60, until=now + 1)
    assert ing["docs"] == 3 and ing["encoders"] == {"base": 0.25}
    log.close()


def test_two_logs_share_one_store(store: Any) -> None:
    """Two processes' logs (here two instances) see each other's events once flushed."""
    a, b = EventLog(store, flush_s=60), EventLog(store, flush_s=60)
    a.record("search", tenant="t", collection="c", expert="x", ms=1.0, ok=True)
    b.record("search", tenant="t", collection="c", expert="y", ms=1.0, ok=True)
    a.flush()
    b.flush()
    since = time.time() - 60
    assert sorted(e["expert"] for e in a.query("search", since)) == ["x", "y"]
    a.close()
    b.close()


def test_prune_deletes_minutes_past_the_retention(store: Any) -> None:
    log = EventLog(store, retention_s=3600, flush_s=60)
    now = 1_800_000_000.0
    log.record("search", t=now - 7200, tenant="a", collection="c", ms=1.0, ok=True)
    log.record("search", t=now - 60, tenant="a", collection="c", ms=1.0, ok=True)
    log.flush()
    assert log.prune(now) == 1
    assert [e["t"] for e in log.query("search", now - 10_000, until=now)] == [now - 60]
    assert log.prune(now) == 0  # the next sweep starts where this one stopped


class _Broken:
    """A store whose writes fail, as a server that went away."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def upsert(self, *args: Any, **kwargs: Any) -> None:
        raise StoreError("down")


def test_a_failing_store_never_reaches_the_caller(store: Any) -> None:
    broken = _Broken(store)
    log = EventLog(broken, flush_s=60)
    log.record("search", tenant="a", collection="c", ms=1.0, ok=True)  # does not raise
    assert log.flush() == 0  # kept for the next flush
    log.store = store  # the server is back
    assert log.flush() == 1
    log.record("nonsense")  # an unknown kind is logged, not raised
    log.close()

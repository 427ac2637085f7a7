"""Platform metadata under concurrent updates: the API's request threads and the in-process worker share a MetaStore."""

from __future__ import annotations

import multiprocessing
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

import store.meta as store_meta
from core.errors import Conflict, NotFound, StoreError
from store.edge import EdgeStore
from store.locks import UpdateLock, file_lock, redis_lock
from store.meta import ADMIN, MetaStore, key_id
from store.shared import SharedEdgeStore


class SlowReads:
    """The edge store with a pause after every read, so that concurrent updates all read before any of them writes."""

    def __init__(self, store: Any, delay_s: float = 0.02) -> None:
        self._store, self._delay = store, delay_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def retrieve(self, *args: Any, **kwargs: Any) -> Any:
        out = self._store.retrieve(*args, **kwargs)
        time.sleep(self._delay)  # after the read: what was read may be out of date by the time it is used
        return out

    def scroll(self, *args: Any, **kwargs: Any) -> Any:
        out = self._store.scroll(*args, **kwargs)
        time.sleep(self._delay)
        return out


@pytest.fixture
def meta(tmp_path: Path) -> Any:
    store = EdgeStore(tmp_path / "store")
    yield MetaStore(SlowReads(store))
    store.close()


def _together(calls: list[Callable[[], Any]]) -> list[BaseException | None]:
    """Run the calls in threads started at once; each one's exception, or None."""
    start = threading.Barrier(len(calls))
    out: list[BaseException | None] = [None] * len(calls)

    def run(i: int) -> None:
        start.wait()
        try:
            calls[i]()
        except BaseException as e:  # reported to the test
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_concurrent_backfill_updates_of_one_collection_are_all_kept(meta: MetaStore) -> None:
    meta.create_tenant("acme")
    meta.add_collection("acme", "docs", None, {"base": "done"})
    experts = [f"e{i}" for i in range(8)]
    errors = _together([partial(meta.set_backfill, "acme", "docs", e, "done", vectors_from=f"fp-{e}") for e in experts])
    assert errors == [None] * len(experts)
    info = meta.get_collection("acme", "docs")
    assert info.backfill == {"base": "done", **dict.fromkeys(experts, "done")}
    assert info.vectors_from == {e: f"fp-{e}" for e in experts}


def test_a_collection_deleted_during_backfill_updates_stays_deleted(meta: MetaStore) -> None:
    meta.create_tenant("acme")
    meta.add_collection("acme", "docs", None, {})
    calls: list[Callable[[], Any]] = [partial(meta.set_backfill, "acme", "docs", e, "done") for e in ("a", "b", "c")]

    def remove() -> None:  # while the updates have read the record and not yet written it
        time.sleep(0.005)
        meta.remove_collection("acme", "docs")

    errors = _together([*calls, remove])
    assert all(e is None or isinstance(e, NotFound) for e in errors), errors
    with pytest.raises(NotFound):
        meta.get_collection("acme", "docs")


def test_the_last_admin_key_survives_concurrent_revocations(meta: MetaStore) -> None:
    keys = [meta.create_key(ADMIN) for _ in range(2)]
    errors = _together([partial(meta.revoke_key, ADMIN, key_id(k)) for k in keys])
    assert sorted(type(e).__name__ for e in errors) == ["Conflict", "NoneType"], errors
    assert len(meta.list_keys(ADMIN)) == 1
    assert sum(meta.tenant_for_key(k) == ADMIN for k in keys) == 1


def test_one_of_two_concurrent_creations_of_a_collection_is_refused(meta: MetaStore) -> None:
    meta.create_tenant("acme")
    errors = _together([partial(meta.add_collection, "acme", "docs", p, {}) for p in ("x", "y")])
    assert sorted(type(e).__name__ for e in errors) == ["Conflict", "NoneType"], errors
    assert isinstance(next(e for e in errors if e is not None), Conflict)


def test_a_job_is_read_by_its_keys_without_scanning_the_others(tmp_path: Path) -> None:
    class CountingScrolls(EdgeStore):
        scrolls = 0

        def scroll(self, *args: Any, **kwargs: Any) -> Any:
            self.scrolls += 1
            return super().scroll(*args, **kwargs)

    store = CountingScrolls(tmp_path / "store")
    try:
        meta = MetaStore(store)
        meta.create_tenant("acme")
        jobs = [meta.create_job("acme", "docs", [2, 3, 1]) for _ in range(20)]
        meta.set_batch(jobs[5], 1, "failed", 0, 3, [{"ids": ["x"], "reason": "bad"}])
        meta.set_batch(jobs[5], 0, "done", 2, 2, [])
        meta.set_batch(jobs[5], 2, "done", 1, 1, [])
        store.scrolls = 0
        job = meta.get_job(jobs[5])
        assert store.scrolls == 0  # the job record's batch count names its batch records
        assert (job.status, job.done, job.total, job.errors) == ("failed", 3, 6, [{"ids": ["x"], "reason": "bad"}])
        assert meta.get_job(jobs[0]).status == "queued"
    finally:
        store.close()


def test_finished_jobs_past_their_retention_are_forgotten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = EdgeStore(tmp_path / "store")
    try:
        meta = MetaStore(store, job_retention_s=3600.0)
        meta.create_tenant("acme")
        clock = [1_000_000.0]
        monkeypatch.setattr(store_meta.time, "time", lambda: clock[0])
        done, failed, running, queued = (meta.create_job("acme", "docs", [2, 1]) for _ in range(4))
        for i, n in enumerate((2, 1)):
            meta.set_batch(done, i, "done", n, n, [])
        meta.set_batch(failed, 0, "done", 2, 2, [])
        meta.set_batch(failed, 1, "failed", 0, 1, [{"ids": ["x"], "reason": "bad"}])
        meta.set_batch(running, 0, "done", 2, 2, [])
        meta.set_batch(running, 1, "running", 0, 1, [])
        clock[0] += 1800.0
        recent = meta.create_job("acme", "docs", [1])  # under the hour since the first prune: none runs
        meta.set_batch(recent, 0, "done", 1, 1, [])
        assert {j.job_id for j in meta.list_jobs()} == {done, failed, running, queued, recent}

        clock[0] += 1800.0 + 1.0  # the four first jobs are past the retention, the recent one is not
        meta.create_job("acme", "docs", [1])  # an hour since the last prune: this one prunes
        kept = {j.job_id for j in meta.list_jobs()}
        assert done not in kept and failed not in kept  # finished: forgotten
        assert {running, queued, recent} <= kept  # unfinished ones are kept however old, recent ones too
        for gone in (done, failed):
            with pytest.raises(NotFound):
                meta.get_job(gone)
            assert store.retrieve("_rr_meta", [f"batch:{gone}/0", f"batch:{gone}/1"]) == []
        # A prune stopped between its two deletes left a job record without batches: the next prune takes it.
        store.delete("_rr_meta", [f"batch:{recent}/0"])
        assert meta.prune_jobs(clock[0] + 1.0) == 1 and recent not in {j.job_id for j in meta.list_jobs()}
    finally:
        store.close()


def test_jobs_are_listed_newest_first_by_tenant_collection_and_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = EdgeStore(tmp_path / "store")
    try:
        meta = MetaStore(store)
        clock = [1_000_000.0]
        monkeypatch.setattr(store_meta.time, "time", lambda: clock[0])
        made = []
        for tenant, collection in [("acme", "docs"), ("acme", "notes"), ("beta", "docs"), ("acme", "docs")]:
            clock[0] += 1.0
            made.append(meta.create_job(tenant, collection, [1]))
        meta.set_batch(made[0], 0, "done", 1, 1, [])
        meta.set_batch(made[3], 0, "failed", 0, 1, [{"ids": ["x"], "reason": "bad"}])
        assert [j.job_id for j in meta.list_jobs()] == made[::-1]
        assert [j.job_id for j in meta.list_jobs("acme")] == [made[3], made[1], made[0]]
        assert [j.job_id for j in meta.list_jobs("acme", collection="docs")] == [made[3], made[0]]
        assert [j.job_id for j in meta.list_jobs(status="queued")] == [made[2], made[1]]
        assert [j.job_id for j in meta.list_jobs("acme", status="done")] == [made[0]]
        assert [j.job_id for j in meta.list_jobs(limit=2)] == [made[3], made[2]]
        assert [j.job_id for j in meta.list_jobs("acme", limit=1, status="queued")] == [made[1]]  # limit after state
        assert meta.list_jobs(collection="\udcff") == []  # a name the store cannot encode names no job
        # A job forgotten between the scan and the read of its batches is left out, not an error.
        real_get = meta.get_job

        def forgotten(job_id: str, tenant: str | None = None) -> Any:
            if job_id == made[1]:
                raise NotFound(job_id)
            return real_get(job_id, tenant)

        monkeypatch.setattr(meta, "get_job", forgotten)
        assert [j.job_id for j in meta.list_jobs("acme")] == [made[3], made[0]]
    finally:
        store.close()


def _backfill_from_another_process(root: str, lock: str | None, expert: str, start: Any) -> None:
    """One process of several sharing the embedded store (as `rr serve` and `rr worker` do with embedded-shared)."""
    store = SharedEdgeStore(Path(root))
    meta = MetaStore(SlowReads(store, 0.2), lock=UpdateLock(file_lock(Path(lock))) if lock else None)
    start.wait()
    meta.set_backfill("acme", "docs", expert, "done", vectors_from=f"fp-{expert}")


def test_backfill_updates_from_several_processes_are_all_kept(tmp_path: Path) -> None:
    root = tmp_path / "store"
    meta = MetaStore(SharedEdgeStore(root))
    meta.create_tenant("acme")
    meta.add_collection("acme", "docs", None, {"base": "done"})
    ctx = multiprocessing.get_context("spawn")
    experts = ["e0", "e1", "e2"]
    start = ctx.Barrier(len(experts))
    procs = [
        ctx.Process(target=_backfill_from_another_process, args=(str(root), str(tmp_path / "meta.lock"), e, start))
        for e in experts
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * len(experts)
    info = meta.get_collection("acme", "docs")
    assert info.backfill == {"base": "done", **dict.fromkeys(experts, "done")}
    assert info.vectors_from == {e: f"fp-{e}" for e in experts}


REDIS = os.environ.get("RR_TEST_REDIS", "redis://127.0.0.1:6379/15")


def _need_redis() -> None:
    """A Redis to test against: CI starts one (a failure there); elsewhere the test is skipped without one."""
    import redis

    try:
        redis.Redis.from_url(REDIS).ping()
    except redis.RedisError as e:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no Redis at {REDIS}: {e}")


def test_two_processes_on_a_qdrant_server_share_a_redis_lock(tmp_path: Path) -> None:
    """Two MetaStores with their own thread locks, as two processes have, over one store: the Redis lock is all that
    keeps their updates apart."""

    _need_redis()
    store = EdgeStore(tmp_path / "store")
    try:
        scope = f"test-{uuid.uuid4().hex}"
        metas = [MetaStore(SlowReads(store), lock=UpdateLock(redis_lock(REDIS, scope))) for _ in range(2)]
        metas[0].create_tenant("acme")
        metas[0].add_collection("acme", "docs", None, {})
        experts = [f"e{i}" for i in range(6)]
        calls: list[Callable[[], Any]] = [
            partial(metas[i % 2].set_backfill, "acme", "docs", e, "done") for i, e in enumerate(experts)
        ]
        assert _together(calls) == [None] * len(experts)
        assert metas[1].get_collection("acme", "docs").backfill == dict.fromkeys(experts, "done")

        # A Redis that cannot be reached is a StoreError (503 in the API, retried by a worker), not a lost update.
        down = MetaStore(store, lock=UpdateLock(redis_lock(f"redis://127.0.0.1:{_closed_port()}/0", scope)))
        with pytest.raises(StoreError, match="metadata lock"):
            down.set_backfill("acme", "docs", "e0", "failed")
        assert metas[0].get_collection("acme", "docs").backfill["e0"] == "done"
    finally:
        store.close()


def test_processes_on_a_qdrant_server_with_another_broker_lock_in_the_redis_named_by_lock_url(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With a RabbitMQ broker (or any but Redis) the processes sharing a Qdrant server had no lock in common, and
    nothing to set: RR_LOCK_URL names a Redis for it."""
    import hashlib
    import logging

    import redis
    from pydantic import ValidationError

    from core.runtime import Runtime
    from core.settings import Settings

    _need_redis()
    server = f"http://127.0.0.1:{_closed_port()}"  # the lock is taken before, and apart from, any store call
    common: dict[str, Any] = {
        "store_url": server,
        "broker_url": "amqp://guest:guest@127.0.0.1:5672//",
        "data_dir": tmp_path,
    }
    key = f"rr:meta-lock:{hashlib.sha256(server.encode()).hexdigest()[:16]}"
    client = redis.Redis.from_url(REDIS)
    lock = Runtime(Settings(**common, lock_url=REDIS))._meta_lock()
    with lock:
        assert client.exists(key)  # held in Redis, where every process looks
    assert not client.exists(key)

    with caplog.at_level(logging.WARNING, logger="core.runtime"):
        alone = Runtime(Settings(**common))._meta_lock()
    assert alone._across is None and "RR_LOCK_URL" in caplog.text
    with pytest.raises(ValidationError, match="RR_LOCK_URL must be a Redis URL"):
        Settings(**common, lock_url="amqp://127.0.0.1//")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_one_of_two_concurrent_creations_of_a_tenant_is_refused(meta: MetaStore) -> None:
    errors = _together([partial(meta.create_tenant, "acme") for _ in range(2)])
    assert sorted(type(e).__name__ for e in errors) == ["Conflict", "NoneType"], errors

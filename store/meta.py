"""Platform metadata (tenants, API keys, collections, jobs) kept as payload-only points in the vector store.

Keeping it in the store means one implementation for both engines: the embedded default persists it beside the
vectors, and in production every API and worker process sees the same records on the Qdrant server. Job progress is
written as one record per batch (no read-modify-write), so concurrent workers never lose an update. The updates
that read a record first (a collection's backfill states, creating or deleting a collection, revoking a key) hold
an :class:`store.locks.UpdateLock`: the threads of a process (the API's requests and the embedded default's
in-process worker) and, where the deployment has a lock they share (a file for ``embedded-shared``, Redis beside a
Qdrant server), its other processes cannot undo each other's write or write back a collection deleted meanwhile.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from core.errors import Conflict, InvalidInput, NotFound
from core.text import is_unicode
from store.base import PointIn, iter_points
from store.locks import UpdateLock

META = "_rr_meta"
ADMIN = "admin"
_VEC = "v"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


KEY_ID_CHARS = 12


def key_id(key: str) -> str:
    """A key's public name: the start of its hash, enough to list and revoke it by, useless to sign in with."""
    return _id_of(hash_key(key))


def _id_of(key_hash: str) -> str:
    return key_hash[:KEY_ID_CHARS]


@dataclass
class CollectionInfo:
    tenant: str
    name: str
    pinned_expert: str | None
    created_at: float
    backfill: dict[str, str] = field(default_factory=dict)  # expert -> pending | running | done | failed
    # expert -> fingerprint of the adapter its stored document vectors were encoded with (one missing: the current)
    vectors_from: dict[str, str] = field(default_factory=dict)

    @property
    def physical(self) -> str:
        return physical_name(self.tenant, self.name)


def physical_name(tenant: str, name: str) -> str:
    return f"t_{tenant}__{name}"


@dataclass
class JobInfo:
    job_id: str
    tenant: str
    collection: str
    status: str
    done: int
    total: int
    errors: list[dict[str, Any]]
    created_at: float


PRUNE_EVERY_S = 3600.0  # how often job creation also forgets the finished jobs past their retention


class MetaStore:
    def __init__(self, store: Any, job_retention_s: float | None = None, lock: UpdateLock | None = None) -> None:
        self.store = store
        self.job_retention_s = job_retention_s  # None: jobs are kept for ever
        self._pruned_at = 0.0
        self._lock = lock or UpdateLock()  # over read-modify-write updates (see the module's docstring)
        if not store.collection_exists(META):
            with contextlib.suppress(Conflict):  # another process created it first
                store.create_collection(META, {_VEC: 1})
        store.index_payload(META, "kind")  # every listing filters on it (idempotent; older stores get it here)

    @property
    def update_lock(self) -> UpdateLock:
        """The lock over read-modify-write updates, for other shared state (the pilot scores' merges)."""
        return self._lock

    # ---- generic records ---------------------------------------------------------------------------------
    def _put(self, key: str, payload: dict[str, Any]) -> None:

        self.store.upsert(META, [PointIn(key, {_VEC: [1.0]}, payload)])

    def _get(self, key: str) -> dict[str, Any] | None:
        if not is_unicode(key):  # a name holding a lone surrogate names no record (the store cannot encode it)
            return None
        found = self.store.retrieve(META, [key])
        return found[0].payload if found else None

    def _scan(self, **match: Any) -> Iterator[dict[str, Any]]:
        return (p.payload for p in iter_points(self.store, META, filter=match))

    def _delete(self, *keys: str) -> None:
        self.store.delete(META, list(keys))

    # ---- tenants and keys --------------------------------------------------------------------------------
    def create_tenant(self, tenant: str) -> str:
        """Create a tenant and return its first API key (shown once; only its hash is kept)."""
        with self._lock:  # two creations of one name at once: one gets the Conflict
            if self._get(f"tenant:{tenant}") is not None:
                raise Conflict(f"tenant {tenant!r} exists")
            self._put(f"tenant:{tenant}", {"kind": "tenant", "tenant": tenant, "created_at": time.time()})
        return self.create_key(tenant)

    def list_tenants(self) -> list[str]:
        return sorted(r["tenant"] for r in self._scan(kind="tenant"))

    def create_key(self, tenant: str, key: str | None = None) -> str:
        if tenant != ADMIN and self._get(f"tenant:{tenant}") is None:
            raise NotFound(f"no tenant {tenant!r}")
        key = key or f"rr_{secrets.token_urlsafe(24)}"
        h = hash_key(key)
        self._put(f"key:{h}", {"kind": "key", "key_hash": h, "tenant": tenant, "created_at": time.time()})
        return key

    def _key_records(self, tenant: str) -> list[dict[str, Any]]:
        if tenant != ADMIN and self._get(f"tenant:{tenant}") is None:
            raise NotFound(f"no tenant {tenant!r}")
        return sorted(self._scan(kind="key", tenant=tenant), key=lambda r: r["created_at"])

    def list_keys(self, tenant: str) -> list[dict[str, Any]]:
        """The tenant's keys by id and creation time, oldest first (the keys themselves are not kept)."""
        return [{"key_id": _id_of(r["key_hash"]), "created_at": r["created_at"]} for r in self._key_records(tenant)]

    def revoke_key(self, tenant: str, kid: str) -> None:
        """Delete one key of the tenant; requests with it get 401 from then on. The admin's last key is kept."""
        with self._lock:  # two revocations at once cannot both pass the last-admin-key check
            records = self._key_records(tenant)
            hit = [r for r in records if _id_of(r["key_hash"]) == kid]
            if not hit:
                have = ", ".join(_id_of(r["key_hash"]) for r in records) or "none"
                raise NotFound(f"tenant {tenant!r} has no key {kid!r} (have: {have})")
            if tenant == ADMIN and len(hit) == len(records):
                raise Conflict("that is the last admin key: create another (POST /tenants/admin/keys) first")
            self._delete(*(f"key:{r['key_hash']}" for r in hit))

    def tenant_for_key(self, key: str) -> str | None:
        rec = self._get(f"key:{hash_key(key)}")
        return rec["tenant"] if rec else None

    # ---- dashboard sessions ------------------------------------------------------------------------------
    def create_session(self, key: str, max_age_s: float) -> str | None:
        """A sign-in of the dashboard: a new random token standing for ``key`` for ``max_age_s`` seconds (None when
        the key is unknown). Only the token's hash is kept, with the key's hash, so revoking the key ends the
        session; expired sessions are deleted here."""
        key_rec = self._get(f"key:{hash_key(key)}")
        if key_rec is None:
            return None
        now = time.time()
        stale = [r["session_hash"] for r in self._scan(kind="session") if r["expires_at"] <= now]
        if stale:
            self._delete(*(f"session:{h}" for h in stale))
        token = f"rrs_{secrets.token_urlsafe(32)}"
        h = hash_key(token)
        self._put(
            f"session:{h}",
            {
                "kind": "session",
                "session_hash": h,
                "key_hash": key_rec["key_hash"],
                "tenant": key_rec["tenant"],
                "expires_at": now + max_age_s,
            },
        )
        return token

    def tenant_for_session(self, token: str) -> str | None:
        """The tenant a dashboard session token signs in, while it has not expired and its key is not revoked."""
        rec = self._get(f"session:{hash_key(token)}")
        if rec is None or rec["expires_at"] <= time.time() or self._get(f"key:{rec['key_hash']}") is None:
            return None
        return str(rec["tenant"])

    def end_session(self, token: str) -> None:
        self._delete(f"session:{hash_key(token)}")

    def has_admin_key(self) -> bool:
        return any(True for _ in self._scan(kind="key", tenant=ADMIN))

    # ---- collections ---------------------------------------------------------------------------------------
    def _coll_key(self, tenant: str, name: str) -> str:
        return f"collection:{tenant}/{name}"

    def add_collection(
        self,
        tenant: str,
        name: str,
        pinned_expert: str | None,
        backfill: dict[str, str],
        vectors_from: dict[str, str] | None = None,
    ) -> CollectionInfo:
        with self._lock:  # two creations of one name at once: one gets the Conflict
            if self._get(self._coll_key(tenant, name)) is not None:
                raise Conflict(f"collection {name!r} exists")
            info = CollectionInfo(tenant, name, pinned_expert, time.time(), dict(backfill), dict(vectors_from or {}))
            self.save_collection(info)
            return info

    def save_collection(self, info: CollectionInfo) -> None:
        self._put(
            self._coll_key(info.tenant, info.name),
            {
                "kind": "collection",
                "tenant": info.tenant,
                "name": info.name,
                "pinned_expert": info.pinned_expert,
                "created_at": info.created_at,
                "backfill": info.backfill,
                "vectors_from": info.vectors_from,
            },
        )

    @staticmethod
    def _to_info(r: dict[str, Any]) -> CollectionInfo:
        return CollectionInfo(
            r["tenant"],
            r["name"],
            r.get("pinned_expert"),
            r["created_at"],
            dict(r.get("backfill") or {}),
            dict(r.get("vectors_from") or {}),
        )

    def get_collection(self, tenant: str, name: str) -> CollectionInfo:
        r = self._get(self._coll_key(tenant, name))
        if r is None:
            raise NotFound(f"no collection {name!r}")
        return self._to_info(r)

    def list_collections(self, tenant: str | None = None) -> list[CollectionInfo]:
        match: dict[str, Any] = {"kind": "collection"}
        if tenant is not None:
            match["tenant"] = tenant
        return sorted((self._to_info(r) for r in self._scan(**match)), key=lambda c: (c.tenant, c.name))

    def remove_collection(self, tenant: str, name: str) -> None:
        with self._lock:  # not between set_backfill's read and its write, which would write the record back
            self._delete(self._coll_key(tenant, name))

    def set_backfill(
        self, tenant: str, name: str, expert: str, state: str | None, vectors_from: str | None = None
    ) -> None:
        """Set an expert's backfill state on a collection (None: forget it and its vectors' adapter); with
        ``vectors_from``, also record the adapter fingerprint its stored vectors now come from."""
        with self._lock:  # another thread's update of another expert's state is read, not overwritten
            info = self.get_collection(tenant, name)
            if state is None:
                info.backfill.pop(expert, None)
                info.vectors_from.pop(expert, None)
            else:
                info.backfill[expert] = state
            if vectors_from is not None:
                info.vectors_from[expert] = vectors_from
            self.save_collection(info)

    # ---- expert scoring (Algorithm 1 run by the queue for a registered expert) --------------------------------
    def set_scoring(
        self,
        expert: str,
        status: str,
        reason: str | None = None,
        domains: list[str] | None = None,
        token: str | None = None,
    ) -> None:
        """``status``: queued, running, retrying, done or failed (``reason`` says why; ``domains`` those scored).
        ``token`` names the request the state belongs to (each request queues one), so that a copy of its task the
        broker delivers again can tell whether the work is done, under way, or superseded."""
        record = {"status": status, "reason": reason, "domains": domains or [], "at": time.time(), "token": token}
        self._put(f"scoring:{expert}", {"kind": "scoring", "expert": expert, **record})

    def scoring_record(self, expert: str) -> dict[str, Any] | None:
        """The whole record, its token included (for the task)."""
        return self._get(f"scoring:{expert}")

    def get_scoring(self, expert: str) -> dict[str, Any] | None:
        """The last scoring's state, or None for an expert the queue never scored (shipped with its scores, or
        registered without data)."""
        record = self._get(f"scoring:{expert}")
        return None if record is None else {k: record[k] for k in ("status", "reason", "domains", "at")}

    def forget_scoring(self, expert: str) -> None:
        self._delete(f"scoring:{expert}")

    # ---- jobs ------------------------------------------------------------------------------------------------
    def create_job(self, tenant: str, collection: str, batch_sizes: list[int]) -> str:
        if not batch_sizes:
            raise InvalidInput("a job needs at least one document", field="documents")
        job_id = uuid.uuid4().hex
        now = time.time()
        if self.job_retention_s is not None and now - self._pruned_at >= PRUNE_EVERY_S:
            self._pruned_at = now
            self.prune_jobs(now - self.job_retention_s)
        self._put(
            f"job:{job_id}",
            {
                "kind": "job",
                "job_id": job_id,
                "tenant": tenant,
                "collection": collection,
                "total": sum(batch_sizes),
                "batches": len(batch_sizes),
                "created_at": now,
            },
        )
        for i, n in enumerate(batch_sizes):
            self.set_batch(job_id, i, "queued", 0, n, [])
        return job_id

    def set_batch(
        self, job_id: str, batch: int, status: str, done: int, total: int, errors: list[dict[str, Any]]
    ) -> None:
        self._put(
            f"batch:{job_id}/{batch}",
            {
                "kind": "batch",
                "job_id": job_id,
                "batch": batch,
                "status": status,
                "done": done,
                "total": total,
                "errors": errors,
                "at": time.time(),
            },
        )

    def get_job(self, job_id: str, tenant: str | None = None) -> JobInfo:
        job = self._get(f"job:{job_id}")
        if job is None or (tenant is not None and job["tenant"] != tenant):
            shown = job_id if len(job_id) <= 80 else f"{job_id[:80]}..."  # not a long path echoed back whole
            raise NotFound(f"no job {shown!r}")
        # by their keys, which the job's batch count gives: no scan over every job's records
        found = self.store.retrieve(META, [f"batch:{job_id}/{i}" for i in range(int(job["batches"]))])
        batches = [p.payload for p in found]
        states = {b["status"] for b in batches}
        if states <= {"queued"}:
            status = "queued"
        elif "running" in states or "queued" in states or "retrying" in states:
            status = "running"
        elif "failed" in states:
            status = "failed"
        else:
            status = "done"
        errors = [e for b in sorted(batches, key=lambda b: b["batch"]) for e in b.get("errors", [])]
        return JobInfo(
            job_id,
            job["tenant"],
            job["collection"],
            status,
            sum(b["done"] for b in batches),
            job["total"],
            errors,
            job["created_at"],
        )

    def prune_jobs(self, created_before: float) -> int:
        """Forget the finished jobs (done or failed) created before that time, with their batch records; returns how
        many. Jobs still queued or running are kept, however old."""
        old = [r for r in self._scan(kind="job") if r["created_at"] < created_before]
        gone = 0
        for r in old:
            keys = [f"batch:{r['job_id']}/{i}" for i in range(int(r["batches"]))]
            states = {p.payload["status"] for p in self.store.retrieve(META, keys)}
            if states <= {"done", "failed"}:  # none left: a prune stopped between its two deletes
                self._delete(*keys)
                self._delete(f"job:{r['job_id']}")  # the job last, so a prune stopped here finds it next time
                gone += 1
        return gone

    def list_jobs(
        self,
        tenant: str | None = None,
        limit: int | None = None,
        collection: str | None = None,
        status: str | None = None,
    ) -> list[JobInfo]:
        """Newest first, of one tenant (None: every tenant's) and one collection if named, of one status if named;
        ``limit`` stops reading batches once that many are found (the dashboard reads the newest few). A job
        forgotten between the scan and the read of its batches is left out."""
        match: dict[str, Any] = {"kind": "job"}
        if tenant is not None:
            match["tenant"] = tenant
        if collection is not None:
            if not is_unicode(collection):  # names no collection (the store cannot encode it)
                return []
            match["collection"] = collection
        found: list[JobInfo] = []
        for r in sorted(self._scan(**match), key=lambda r: -r["created_at"]):
            if limit is not None and len(found) >= limit:
                break
            try:
                job = self.get_job(r["job_id"])
            except NotFound:
                continue
            if status is None or job.status == status:
                found.append(job)
        return found

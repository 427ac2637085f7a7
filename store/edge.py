"""The embedded engine: qdrant-edge shards in this process, one directory per collection.

Layout: ``<root>/collections/<name>/`` is one qdrant-edge shard (its ``edge_config.json``, WAL and segments).

One process at a time: a shard's WAL is locked while it is open, and this store keeps every shard it touched open
until ``close()``. A second process (or a second ``EdgeStore`` on the same root) gets a ``StoreError`` saying so.
That suits the embedded setting: the API process runs the in-process worker; Celery workers in other processes
need the server engine.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as E

from core.errors import Conflict, InvalidInput, NotFound, RRError, StoreError

from ._checks import (
    as_vector,
    check_batch,
    check_dim,
    check_filter,
    check_limit,
    check_name,
    check_offset,
    check_payload,
    check_payload_key,
    check_vector_config,
    dim_of,
    doc_id_of,
    hits_of,
    missing_docs,
    unique,
)
from .base import Filter, FilterValue, Hit, PointIn, SearchRequest, StoredPoint, Vector, point_id

CONFIG_FILE = "edge_config.json"  # written by qdrant-edge itself; its documented, persisted shard config


@contextmanager
def _engine(op: str, name: str) -> Iterator[None]:
    """qdrant-edge raises bare ``Exception``; turn what the checks could not foresee into StoreError."""
    try:
        yield
    except RRError:
        raise
    except Exception as e:
        raise StoreError(f"qdrant-edge failed to {op} in collection {name!r}: {e}") from e


def _match(key: str, values: list[FilterValue]) -> E.FieldCondition | E.Filter:
    # The binding reads a Python bool as an int (bool subclasses int), so MatchValue(True) matches nothing;
    # numpy's bool is not an int and arrives as a JSON bool.
    def one(v: FilterValue) -> E.FieldCondition:
        value = np.bool_(v) if isinstance(v, bool) else v
        return E.FieldCondition(key=key, match=E.MatchValue(value))  # type: ignore[arg-type]

    if len(values) == 1:
        return one(values[0])
    if all(isinstance(v, str) for v in values) or all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return E.FieldCondition(key=key, match=E.MatchAny(values))  # type: ignore[arg-type]
    return E.Filter(should=[one(v) for v in values])  # mixed types or bools: any of the single matches


def _filter(filter: Filter | None) -> E.Filter | None:
    conditions = check_filter(filter)
    return E.Filter(must=[_match(k, vs) for k, vs in conditions]) if conditions else None


def _request(
    r: SearchRequest, dims: Mapping[str, int], name: str, vector_name: str, with_payload: bool
) -> E.QueryRequest:
    query = as_vector(r.vector, dim_of(dims, name, vector_name), vector_name)
    return E.QueryRequest(
        query=E.Query.Nearest(query, using=vector_name),
        limit=check_limit(r.limit),
        filter=_filter(r.filter),
        with_payload=True if with_payload else ["doc_id"],
    )


def _vectors(raw: Any) -> dict[str, list[float]]:
    return {str(k): [float(x) for x in v] for k, v in (raw or {}).items()}


class EdgeStore:
    """``VectorStore`` on qdrant-edge: no server, data under ``root``.

    qdrant-edge has no background indexing: new points are searched by brute force until ``optimize()`` builds
    HNSW. So ``upsert`` and ``update_vectors`` call ``optimize`` themselves once a collection has taken
    ``optimize_every`` point writes since its last optimize. That call blocks the writer (50,000 MiniLM-sized
    points took about 100 s in the project's measurements). The count lives in memory and restarts at zero when the
    store is reopened, so call ``optimize`` after a bulk load to be sure; ``optimize_every=None`` turns the automatic
    call off. Below qdrant-edge's indexing threshold (about 10 MB of vectors) optimize builds nothing: exact search
    is fast at that size anyway.

    Thread-safe for one process: shards are opened once under a lock and shared; qdrant-edge locks internally.
    """

    def __init__(self, root: Path, optimize_every: int | None = 20_000) -> None:
        if optimize_every is not None and (isinstance(optimize_every, bool) or optimize_every < 1):
            raise InvalidInput(f"optimize_every must be a positive int or None, got {optimize_every!r}")
        self.root = Path(root)
        self.optimize_every = optimize_every
        self._dir = self.root / "collections"
        self._lock = threading.RLock()
        self._shards: dict[str, E.EdgeShard] = {}
        self._dims: dict[str, dict[str, int]] = {}
        self._pending: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"EdgeStore(root={str(self.root)!r})"

    # --- collections -------------------------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        return self._dir / check_name(name)

    def _read_dims(self, name: str) -> dict[str, int]:
        """Named vectors from the shard's own persisted config: the binding has no getter for a loaded shard."""
        path = self._path(name) / CONFIG_FILE
        try:
            vectors = json.loads(path.read_text())["vectors"]
            return {str(k): int(v["size"]) for k, v in sorted(vectors.items())}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StoreError(f"cannot read the vector config of collection {name!r} from {path}: {e}") from e

    def _open(self, name: str) -> tuple[E.EdgeShard, dict[str, int]]:
        """The open shard and its vector dimensions, loading the shard on first use."""
        with self._lock:
            shard = self._shards.get(name)
            if shard is not None:
                return shard, self._dims[name]
            path = self._path(name)
            if not (path / CONFIG_FILE).is_file():
                raise NotFound(f"collection {name!r} does not exist; create it first")
            try:
                shard = E.EdgeShard.load(str(path))
            except Exception as e:
                raise StoreError(
                    f"qdrant-edge cannot open collection {name!r} at {path}: {e}. A shard can be open in one process "
                    "at a time: is another process (or another EdgeStore) using this data directory?"
                ) from e
            self._shards[name] = shard
            self._dims[name] = self._read_dims(name)
            self._pending.setdefault(name, 0)
            return shard, self._dims[name]

    def create_collection(self, name: str, vectors: dict[str, int]) -> None:
        dims = check_vector_config(vectors)
        with self._lock:
            path = self._path(name)
            if (path / CONFIG_FILE).is_file():
                raise Conflict(f"collection {name!r} already exists; delete it first or pick another name")
            if path.exists():  # the remains of a create that failed half-way: no config, so never a collection
                shutil.rmtree(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            shard: E.EdgeShard | None = None
            try:
                config = E.EdgeConfig(
                    vectors={n: E.EdgeVectorParams(size=d, distance=E.Distance.Cosine) for n, d in dims.items()}
                )
                shard = E.EdgeShard.create(str(path), config)
                shard.update(E.UpdateOperation.create_field_index("doc_id", E.PayloadSchemaType.Keyword))
                shard.update(E.UpdateOperation.create_field_index("tenant", E.KeywordIndexParams(is_tenant=True)))
            except Exception as e:
                if shard is not None:
                    shard.close()
                shutil.rmtree(path, ignore_errors=True)
                raise StoreError(f"qdrant-edge failed to create collection {name!r} at {path}: {e}") from e
            self._shards[name] = shard
            self._dims[name] = self._read_dims(name)
            self._pending[name] = 0

    def delete_collection(self, name: str) -> None:
        with self._lock:
            path = self._path(name)
            if not (path / CONFIG_FILE).is_file():
                raise NotFound(f"collection {name!r} does not exist")
            shard = self._shards.pop(name, None)
            self._dims.pop(name, None)
            self._pending.pop(name, None)
            with _engine("close the shard", name):
                if shard is not None:
                    shard.close()
            shutil.rmtree(path)

    def list_collections(self) -> list[str]:
        if not self._dir.is_dir():
            return []
        return sorted(p.name for p in self._dir.iterdir() if (p / CONFIG_FILE).is_file())

    def collection_exists(self, name: str) -> bool:
        return (self._path(name) / CONFIG_FILE).is_file()

    def vector_names(self, name: str) -> dict[str, int]:
        return dict(self._open(name)[1])

    def add_vector(self, name: str, vector_name: str, dim: int) -> None:
        check_name(vector_name, "vector")
        check_dim(dim, vector_name)
        with self._lock:
            shard, dims = self._open(name)
            if vector_name in dims:
                # qdrant-edge would accept a same-sized duplicate silently and keep the old data.
                raise Conflict(f"collection {name!r} already has a vector named {vector_name!r}")
            with _engine(f"add vector {vector_name!r}", name):
                shard.update(E.UpdateOperation.create_dense_vector(vector_name, dim, E.Distance.Cosine))
            self._dims[name] = self._read_dims(name)

    def drop_vector(self, name: str, vector_name: str) -> None:
        """qdrant-edge deletes a named vector natively (config and data), so no sidecar is needed."""
        with self._lock:
            shard, dims = self._open(name)
            dim_of(dims, name, vector_name)
            if len(dims) == 1:
                raise InvalidInput(
                    f"{vector_name!r} is the only vector of collection {name!r}; delete the collection instead",
                    field="vector_name",
                )
            with _engine(f"drop vector {vector_name!r}", name):
                shard.update(E.UpdateOperation.delete_vector_name(vector_name))
            self._dims[name] = self._read_dims(name)

    # --- points ------------------------------------------------------------------------------------------------

    def _written(self, name: str, n: int) -> None:
        if self.optimize_every is None or n == 0:
            return
        with self._lock:
            self._pending[name] = self._pending.get(name, 0) + n
            due = self._pending[name] >= self.optimize_every
        if due:
            self.optimize(name)

    def upsert(self, name: str, points: Sequence[PointIn]) -> None:
        shard, dims = self._open(name)
        batch = []
        for p in points:
            vectors = {vn: as_vector(v, dim_of(dims, name, vn), vn) for vn, v in p.vectors.items()}
            batch.append(E.Point(point_id(name, p.doc_id), vectors, check_payload(p.doc_id, p.payload)))  # type: ignore[arg-type]
        if not batch:
            return
        with _engine("upsert points", name):
            shard.update(E.UpdateOperation.upsert_points(batch))
        self._written(name, len(batch))

    def update_vectors(self, name: str, vectors: Mapping[str, Mapping[str, Vector]]) -> None:
        shard, dims = self._open(name)
        doc_ids = unique(list(vectors))
        batch = []
        for d in doc_ids:
            if not vectors[d]:
                raise InvalidInput(f"no vectors given for document {d!r}", field="vectors")
            named = {vn: as_vector(v, dim_of(dims, name, vn), vn) for vn, v in vectors[d].items()}
            batch.append(E.PointVectors(point_id(name, d), named))  # type: ignore[arg-type]
        if not batch:
            return
        ids = [point_id(name, d) for d in doc_ids]
        with _engine("look up points", name):
            found = {str(r.id) for r in shard.retrieve(ids, False, False)}  # type: ignore[arg-type]
        missing = [d for d, i in zip(doc_ids, ids, strict=True) if i not in found]
        if missing:
            raise missing_docs(name, missing)
        with _engine("update vectors", name):
            shard.update(E.UpdateOperation.update_vectors(batch))
        self._written(name, len(batch))

    def search(
        self,
        name: str,
        vector_name: str,
        vector: Vector,
        limit: int,
        filter: Filter | None = None,
        with_payload: bool = True,
    ) -> list[Hit]:
        shard, dims = self._open(name)
        request = _request(SearchRequest(vector, check_limit(limit), filter), dims, name, vector_name, with_payload)
        with _engine("search", name):
            found = shard.query(request)
        return hits_of(found, with_payload)

    def search_batch(
        self,
        name: str,
        vector_name: str,
        requests: Sequence[SearchRequest],
        with_payload: bool = True,
    ) -> list[list[Hit]]:
        shard, dims = self._open(name)
        batch = [_request(r, dims, name, vector_name, with_payload) for r in check_batch(requests)]
        if not batch:
            return []
        with _engine("search", name):
            found = shard.query_batch(E.QueryBatchRequest(batch))
        return [hits_of(f, with_payload) for f in found]

    def index_payload(self, name: str, key: str) -> None:
        check_payload_key(key)
        with self._lock:
            shard, _ = self._open(name)
            with _engine(f"index payload key {key!r}", name):
                shard.update(E.UpdateOperation.create_field_index(key, E.PayloadSchemaType.Keyword))

    def count(self, name: str, filter: Filter | None = None) -> int:
        shard, _ = self._open(name)
        request = E.CountRequest(exact=True, filter=_filter(filter))
        with _engine("count", name):
            return int(shard.count(request))

    def scroll(
        self,
        name: str,
        limit: int,
        offset: str | None = None,
        with_vectors: bool = False,
        filter: Filter | None = None,
    ) -> tuple[list[StoredPoint], str | None]:
        shard, _ = self._open(name)
        request = E.ScrollRequest(
            offset=check_offset(offset),
            limit=check_limit(limit),
            filter=_filter(filter),
            with_payload=True,
            with_vector=with_vectors,
        )
        with _engine("scroll", name):
            records, next_id = shard.scroll(request)
        points = [
            StoredPoint(doc_id_of(r.payload, r.id), dict(r.payload or {}), _vectors(r.vector) if with_vectors else None)
            for r in records
        ]
        return points, None if next_id is None else str(next_id)

    def retrieve(self, name: str, doc_ids: Sequence[str], with_vectors: bool = False) -> list[StoredPoint]:
        shard, _ = self._open(name)
        wanted = unique(doc_ids)
        if not wanted:
            return []
        with _engine("retrieve", name):
            records = shard.retrieve([point_id(name, d) for d in wanted], True, with_vectors)  # type: ignore[arg-type]
        by_doc = {
            doc_id_of(r.payload, r.id): StoredPoint(
                doc_id_of(r.payload, r.id), dict(r.payload or {}), _vectors(r.vector) if with_vectors else None
            )
            for r in records
        }
        return [by_doc[d] for d in wanted if d in by_doc]

    def delete(self, name: str, doc_ids: Sequence[str]) -> None:
        shard, _ = self._open(name)
        ids = [point_id(name, d) for d in unique(doc_ids)]
        if ids:
            with _engine("delete points", name):
                shard.update(E.UpdateOperation.delete_points(ids))  # type: ignore[arg-type]

    def optimize(self, name: str) -> None:
        shard, _ = self._open(name)
        with _engine("optimize", name):
            shard.optimize()
        with self._lock:
            self._pending[name] = 0

    def close(self) -> None:
        """Flush and close every open shard, releasing their locks; the store reopens shards if used again."""
        with self._lock:
            shards, self._shards = self._shards, {}
            self._dims.clear()
            self._pending.clear()
            errors = []
            for name, shard in shards.items():
                try:
                    shard.flush()
                    shard.close()
                except Exception as e:
                    errors.append(f"{name!r}: {e}")
            if errors:
                raise StoreError(f"qdrant-edge failed to close collections: {'; '.join(errors)}")

"""The server engine: a Qdrant server through qdrant-client, or qdrant-client's local mode in tests.

Several processes (API, Celery workers) share one server, so this store caches only collections' vector
dimensions (to check inputs without a round trip) and re-reads them once whenever an input does not fit the cache:
another process may have added a vector. Anything the server rejects is still mapped to the project's errors.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as M
from qdrant_client.http.exceptions import UnexpectedResponse

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
    doc_id_of,
    hits_of,
    missing_docs,
    unique,
)
from .base import Filter, FilterValue, Hit, PointIn, SearchRequest, StoredPoint, Vector, point_id


def _match(key: str, values: list[FilterValue]) -> M.FieldCondition | M.Filter:
    def one(v: FilterValue) -> M.FieldCondition:
        return M.FieldCondition(key=key, match=M.MatchValue(value=v))

    if len(values) == 1:
        return one(values[0])
    if all(isinstance(v, str) for v in values) or all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return M.FieldCondition(key=key, match=M.MatchAny(any=values))  # type: ignore[arg-type]
    return M.Filter(should=[one(v) for v in values])  # MatchAny takes no bools nor mixed types


def _filter(filter: Filter | None) -> M.Filter | None:
    conditions = check_filter(filter)
    return M.Filter(must=[_match(k, vs) for k, vs in conditions]) if conditions else None


def _vectors(raw: Any) -> dict[str, list[float]]:
    if not isinstance(raw, Mapping):  # an unnamed vector: not written by this store
        raise StoreError("the collection has an unnamed vector; it was not created by this store")
    return {str(k): [float(x) for x in v] for k, v in raw.items()}


class QdrantServerStore:
    """``VectorStore`` on qdrant-client: a Qdrant server (``QdrantClient(url=...)``) or local mode (``":memory:"``,
    ``path=...``), the latter for tests only: it evaluates filters in Python and scans every point.

    ``optimize`` is a no-op: the server builds HNSW in the background. Payload indexes are created on a server
    only: local mode has none (it warns when asked for one).

    ``shard_number`` and ``replication_factor``, for a distributed Qdrant, are given to every collection this store
    creates (unset: the server's defaults); local mode, which has one node, ignores them.
    """

    def __init__(
        self, client: QdrantClient, shard_number: int | None = None, replication_factor: int | None = None
    ) -> None:
        for field, value in (("shard_number", shard_number), ("replication_factor", replication_factor)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise InvalidInput(f"{field} must be a positive integer, got {value!r}", field=field)
        self.client = client
        self.shard_number = shard_number
        self.replication_factor = replication_factor
        options = getattr(client, "init_options", {}) or {}
        # The same test QdrantClient uses to pick its local engine.
        self._local = options.get("location") == ":memory:" or options.get("path") is not None
        self._dims: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"QdrantServerStore(local={self._local})"

    @contextmanager
    def _call(self, op: str, name: str) -> Iterator[None]:
        """Map qdrant-client's errors (HTTP statuses from a server, ValueError from local mode) to ours."""
        try:
            yield
        except RRError:
            raise
        except UnexpectedResponse as e:
            detail = f"Qdrant refused to {op} in collection {name!r}: {e}"
            if e.status_code == 404:
                self._forget(name)
                raise NotFound(detail) from e
            if e.status_code == 409:
                raise Conflict(detail) from e
            if e.status_code in (400, 422):
                self._forget(name)  # the cached vectors may be what was wrong: another process changed them
                raise InvalidInput(detail) from e
            raise StoreError(detail) from e
        except ValueError as e:  # local mode's (and pydantic's) way to reject input
            text = str(e)
            if text.startswith("Collection") and text.endswith("not found"):
                self._forget(name)
                raise NotFound(f"collection {name!r}: {text}") from e
            if text.startswith("Collection") and text.endswith("already exists"):
                raise Conflict(f"collection {name!r}: {text}") from e
            raise InvalidInput(f"Qdrant refused to {op} in collection {name!r}: {text}") from e
        except Exception as e:  # connection refused, timeouts, server errors
            raise StoreError(f"Qdrant failed to {op} in collection {name!r}: {e}") from e

    def _forget(self, name: str) -> None:
        with self._lock:
            self._dims.pop(name, None)

    # --- collections -------------------------------------------------------------------------------------------

    def _read_dims(self, name: str) -> dict[str, int]:
        with self._call("read the collection", name):
            vectors = self.client.get_collection(check_name(name)).config.params.vectors
        if not isinstance(vectors, Mapping):
            raise StoreError(f"collection {name!r} has an unnamed vector; it was not created by this store")
        dims = {str(k): int(v.size) for k, v in sorted(vectors.items())}
        with self._lock:
            self._dims[name] = dims
        return dims

    def _dims_of(self, name: str) -> dict[str, int]:
        with self._lock:
            cached = self._dims.get(name)
        return cached if cached is not None else self._read_dims(name)

    def _dim(self, name: str, vector_name: str) -> int:
        """A vector's dimension, re-reading the collection once if the cache does not know the name."""
        dims = self._dims_of(name)
        if vector_name not in dims:
            dims = self._read_dims(name)
        if vector_name not in dims:
            raise InvalidInput(
                f"collection {name!r} has no vector named {vector_name!r}; it has {sorted(dims)}", field="vector_name"
            )
        return dims[vector_name]

    def _vector(self, name: str, vector_name: str, vector: Vector) -> list[float]:
        dim = self._dim(name, vector_name)
        try:
            return as_vector(vector, dim, vector_name)
        except InvalidInput:
            fresh = self._read_dims(name).get(vector_name)  # another process may have re-created it
            if fresh is None or fresh == dim:
                raise
            return as_vector(vector, fresh, vector_name)

    def create_collection(self, name: str, vectors: dict[str, int]) -> None:
        check_name(name)
        dims = check_vector_config(vectors)
        with self._call("check", name):
            if self.client.collection_exists(name):
                raise Conflict(f"collection {name!r} already exists; delete it first or pick another name")
        config = {n: M.VectorParams(size=d, distance=M.Distance.COSINE) for n, d in dims.items()}
        with self._call("create the collection", name):
            self.client.create_collection(
                name,
                vectors_config=config,
                shard_number=self.shard_number,
                replication_factor=self.replication_factor,
            )
        if not self._local:
            try:
                with self._call("index the payload", name):
                    self.client.create_payload_index(name, "doc_id", M.PayloadSchemaType.KEYWORD)
                    self.client.create_payload_index(
                        name, "tenant", M.KeywordIndexParams(type=M.KeywordIndexType.KEYWORD, is_tenant=True)
                    )
            except RRError:
                with suppress(Exception):  # the index error is the one to report
                    self.client.delete_collection(name)
                raise
        with self._lock:
            self._dims[name] = dims

    def delete_collection(self, name: str) -> None:
        check_name(name)
        with self._call("delete the collection", name):
            if not self.client.collection_exists(name):
                raise NotFound(f"collection {name!r} does not exist")
            self.client.delete_collection(name)
        self._forget(name)

    def list_collections(self) -> list[str]:
        with self._call("list collections", "*"):
            return sorted(c.name for c in self.client.get_collections().collections)

    def collection_exists(self, name: str) -> bool:
        check_name(name)
        with self._call("check", name):
            return bool(self.client.collection_exists(name))

    def vector_names(self, name: str) -> dict[str, int]:
        return dict(self._read_dims(name))

    def add_vector(self, name: str, vector_name: str, dim: int) -> None:
        check_name(vector_name, "vector")
        check_dim(dim, vector_name)
        if vector_name in self._read_dims(name):
            # local mode accepts a duplicate silently and keeps the old data
            raise Conflict(f"collection {name!r} already has a vector named {vector_name!r}")
        config = M.DenseVectorNameConfig(dense=M.DenseVectorConfig(size=dim, distance=M.Distance.COSINE))
        with self._call(f"add vector {vector_name!r}", name):
            self.client.create_vector_name(name, vector_name, config)
        self._read_dims(name)

    def drop_vector(self, name: str, vector_name: str) -> None:
        """Qdrant deletes a named vector natively (config and data), so no sidecar is needed."""
        dims = self._read_dims(name)
        if vector_name not in dims:
            raise InvalidInput(
                f"collection {name!r} has no vector named {vector_name!r}; it has {sorted(dims)}", field="vector_name"
            )
        if len(dims) == 1:
            raise InvalidInput(
                f"{vector_name!r} is the only vector of collection {name!r}; delete the collection instead",
                field="vector_name",
            )
        with self._call(f"drop vector {vector_name!r}", name):
            self.client.delete_vector_name(name, vector_name)
        self._read_dims(name)

    # --- points ------------------------------------------------------------------------------------------------

    def upsert(self, name: str, points: Sequence[PointIn]) -> None:
        self._dims_of(name)  # an unknown collection is NotFound even for an empty batch, as on the edge engine
        batch = []
        for p in points:
            vectors = {vn: self._vector(name, vn, v) for vn, v in p.vectors.items()}
            payload = check_payload(p.doc_id, p.payload)
            batch.append(M.PointStruct(id=point_id(name, p.doc_id), vector=vectors, payload=payload))  # type: ignore[arg-type]
        if batch:
            with self._call("upsert points", name):
                self.client.upsert(name, batch, wait=True)

    def update_vectors(self, name: str, vectors: Mapping[str, Mapping[str, Vector]]) -> None:
        self._dims_of(name)
        doc_ids = unique(list(vectors))
        batch = []
        for d in doc_ids:
            if not vectors[d]:
                raise InvalidInput(f"no vectors given for document {d!r}", field="vectors")
            named = {vn: self._vector(name, vn, v) for vn, v in vectors[d].items()}
            batch.append(M.PointVectors(id=point_id(name, d), vector=named))  # type: ignore[arg-type]
        if not batch:
            return
        ids = [point_id(name, d) for d in doc_ids]
        with self._call("look up points", name):
            found = {str(r.id) for r in self.client.retrieve(name, ids, with_payload=False, with_vectors=False)}
        missing = [d for d, i in zip(doc_ids, ids, strict=True) if i not in found]
        if missing:
            raise missing_docs(name, missing)
        with self._call("update vectors", name):
            self.client.update_vectors(name, points=batch, wait=True)

    def search(
        self,
        name: str,
        vector_name: str,
        vector: Vector,
        limit: int,
        filter: Filter | None = None,
        with_payload: bool = True,
    ) -> list[Hit]:
        query = self._vector(name, vector_name, vector)
        query_filter = _filter(filter)
        with self._call("search", name):
            found = self.client.query_points(
                name,
                query=query,
                using=vector_name,
                limit=check_limit(limit),
                query_filter=query_filter,
                with_payload=True if with_payload else ["doc_id"],
            ).points
        return hits_of(found, with_payload)

    def search_batch(
        self,
        name: str,
        vector_name: str,
        requests: Sequence[SearchRequest],
        with_payload: bool = True,
    ) -> list[list[Hit]]:
        batch = [
            M.QueryRequest(
                query=self._vector(name, vector_name, r.vector),
                using=vector_name,
                limit=r.limit,
                filter=_filter(r.filter),
                with_payload=True if with_payload else ["doc_id"],
            )
            for r in check_batch(requests)
        ]
        if not batch:
            self._dims_of(name)  # an unknown collection is NotFound even for an empty batch, as on the edge engine
            return []
        with self._call("search", name):
            found = self.client.query_batch_points(name, requests=batch)
        return [hits_of(f.points, with_payload) for f in found]

    def index_payload(self, name: str, key: str) -> None:
        check_payload_key(key)
        self._dims_of(name)  # NotFound for an unknown collection in local mode too
        if self._local:
            return
        with self._call(f"index payload key {key!r}", name):
            self.client.create_payload_index(name, key, M.PayloadSchemaType.KEYWORD)

    def count(self, name: str, filter: Filter | None = None) -> int:
        count_filter = _filter(filter)
        check_name(name)
        with self._call("count", name):
            return int(self.client.count(name, count_filter=count_filter, exact=True).count)

    def scroll(
        self,
        name: str,
        limit: int,
        offset: str | None = None,
        with_vectors: bool = False,
        filter: Filter | None = None,
    ) -> tuple[list[StoredPoint], str | None]:
        check_name(name)
        start, size, scroll_filter = check_offset(offset), check_limit(limit), _filter(filter)
        with self._call("scroll", name):
            records, next_id = self.client.scroll(
                name,
                scroll_filter=scroll_filter,
                limit=size,
                offset=start,
                with_payload=True,
                with_vectors=with_vectors,
            )
        points = [
            StoredPoint(doc_id_of(r.payload, r.id), dict(r.payload or {}), _vectors(r.vector) if with_vectors else None)
            for r in records
        ]
        return points, None if next_id is None else str(next_id)

    def retrieve(self, name: str, doc_ids: Sequence[str], with_vectors: bool = False) -> list[StoredPoint]:
        check_name(name)
        wanted = unique(doc_ids)
        if not wanted:
            self._dims_of(name)  # still NotFound for an unknown collection
            return []
        with self._call("retrieve", name):
            records = self.client.retrieve(
                name, [point_id(name, d) for d in wanted], with_payload=True, with_vectors=with_vectors
            )
        by_doc = {
            doc_id_of(r.payload, r.id): StoredPoint(
                doc_id_of(r.payload, r.id), dict(r.payload or {}), _vectors(r.vector) if with_vectors else None
            )
            for r in records
        }
        return [by_doc[d] for d in wanted if d in by_doc]

    def delete(self, name: str, doc_ids: Sequence[str]) -> None:
        check_name(name)
        ids = [point_id(name, d) for d in unique(doc_ids)]
        if not ids:
            self._dims_of(name)  # still NotFound for an unknown collection
            return
        with self._call("delete points", name):
            self.client.delete(name, points_selector=M.PointIdsList(points=ids), wait=True)  # type: ignore[arg-type]

    def optimize(self, name: str) -> None:
        """The server indexes in the background; only check that the collection exists, as the edge engine does."""
        self._read_dims(name)

    def close(self) -> None:
        with self._call("close the client", "*"):
            self.client.close()

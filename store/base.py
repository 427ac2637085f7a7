"""The one vector-store contract both engines implement.

A document is one point with one named vector per encoder (the base encoder and each expert), so a new expert
only adds a named vector to the collection instead of copying it. Point ids are derived from the collection and
the document id, which makes every write idempotent: a worker that retries a batch overwrites what it already wrote.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, runtime_checkable

import numpy as np

from core.errors import InvalidInput

# Fixed for the life of the project: changing it would orphan every stored point.
NAMESPACE = uuid.UUID("21fd5dcb-b9cb-5380-b42e-e3bd14b836dc")

Vector: TypeAlias = np.ndarray | Sequence[float]
FilterValue: TypeAlias = str | int | bool
Filter: TypeAlias = Mapping[str, FilterValue | Sequence[FilterValue]]


def point_id(collection: str, doc_id: str) -> str:
    """The engine's id for a document: deterministic, so re-sending a document updates it instead of duplicating it.

    The collection is part of the key so that the same document id in two collections never shares a point id
    (engines that ship points between collections, such as snapshots, stay unambiguous).
    """
    return str(uuid.uuid5(NAMESPACE, f"{collection}/{doc_id}"))


@dataclass(slots=True)
class PointIn:
    """A document to write: its vectors by name and its payload (``doc_id`` is added to the payload on write)."""

    doc_id: str
    vectors: dict[str, Vector]
    payload: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.doc_id, str) or not self.doc_id:
            raise InvalidInput(f"doc_id must be a non-empty string, got {self.doc_id!r}", field="doc_id")
        if not self.vectors:
            raise InvalidInput(f"document {self.doc_id!r} has no vectors; give at least one", field="vectors")
        stored = self.payload.get("doc_id", self.doc_id)
        if stored != self.doc_id:
            raise InvalidInput(
                f"payload['doc_id'] is {stored!r} but the point's doc_id is {self.doc_id!r}; drop it from the payload",
                field="payload.doc_id",
            )


@dataclass(slots=True)
class Hit:
    """One search result; ``payload`` is empty when the search asked for none."""

    doc_id: str
    score: float
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """One search of a batch (``VectorStore.search_batch``): the ``limit`` nearest points to ``vector`` among
    those matching ``filter``."""

    vector: Vector
    limit: int
    filter: Filter | None = None


@dataclass(slots=True)
class StoredPoint:
    """A point as read back by ``scroll`` or ``retrieve``; ``vectors`` is None unless asked for.

    Vectors come back unit-length: both engines normalize cosine vectors when they store them.
    """

    doc_id: str
    payload: dict[str, Any]
    vectors: dict[str, list[float]] | None = None


@runtime_checkable
class VectorStore(Protocol):
    """Collections of documents with named dense vectors (cosine) and a JSON payload.

    Every ``name`` is a collection name. Errors: ``NotFound`` for an unknown collection, ``Conflict`` for creating
    something that exists, ``InvalidInput`` for a bad name, vector name, dimension or filter, ``StoreError`` when
    the engine itself fails (workers retry those).

    Filters are equalities on payload keys, dotted for nested objects: ``{"metadata.lang": "en", "tenant": "t1"}``;
    values are str, int or bool, and a list means "any of". All conditions must hold.
    """

    def create_collection(self, name: str, vectors: dict[str, int]) -> None:
        """Create a collection with one cosine named vector per entry (name -> dimension).

        Also indexes the ``doc_id`` and ``tenant`` payload keys where the engine uses payload indexes.
        """
        ...

    def delete_collection(self, name: str) -> None:
        """Delete a collection and all its points."""
        ...

    def list_collections(self) -> list[str]:
        """Names of all collections, sorted."""
        ...

    def collection_exists(self, name: str) -> bool:
        """Whether the collection exists."""
        ...

    def vector_names(self, name: str) -> dict[str, int]:
        """The collection's named vectors: name -> dimension."""
        ...

    def add_vector(self, name: str, vector_name: str, dim: int) -> None:
        """Add a named vector; existing points lack it until ``update_vectors`` gives it to them."""
        ...

    def drop_vector(self, name: str, vector_name: str) -> None:
        """Remove a named vector from the collection and from every point (a removed expert)."""
        ...

    def upsert(self, name: str, points: Sequence[PointIn]) -> None:
        """Write points, replacing any point with the same doc_id (its vectors and payload) entirely."""
        ...

    def update_vectors(self, name: str, vectors: Mapping[str, Mapping[str, Vector]]) -> None:
        """Set some named vectors of existing points (doc_id -> {vector_name: vector}); others are kept.

        This is how a new expert's vector is backfilled. An unknown doc_id raises ``NotFound`` before anything
        is written.
        """
        ...

    def search(
        self,
        name: str,
        vector_name: str,
        vector: Vector,
        limit: int,
        filter: Filter | None = None,
        with_payload: bool = True,
    ) -> list[Hit]:
        """The ``limit`` nearest points by one named vector, best first; points lacking that vector are skipped."""
        ...

    def search_batch(
        self,
        name: str,
        vector_name: str,
        requests: Sequence[SearchRequest],
        with_payload: bool = True,
    ) -> list[list[Hit]]:
        """Several searches by one named vector in one engine call: one result list per request, in order, each as
        ``search`` would return it. Every request is checked before any is run; an empty batch returns []."""
        ...

    def index_payload(self, name: str, key: str) -> None:
        """Index a keyword payload key, so that filters on it do not read every point's payload; idempotent.

        ``doc_id`` and ``tenant`` are indexed at creation. A no-op in qdrant-client's local mode (it has none)."""
        ...

    def count(self, name: str, filter: Filter | None = None) -> int:
        """Exact number of points (matching the filter)."""
        ...

    def scroll(
        self,
        name: str,
        limit: int,
        offset: str | None = None,
        with_vectors: bool = False,
        filter: Filter | None = None,
    ) -> tuple[list[StoredPoint], str | None]:
        """One page of the points (matching the filter), in id order; pass the returned offset back for the next
        page. The offset is None after the last page. Paging is how backfills and metadata scans see every point
        without holding them all."""
        ...

    def retrieve(self, name: str, doc_ids: Sequence[str], with_vectors: bool = False) -> list[StoredPoint]:
        """The points for these doc_ids, in the order asked; missing ids are skipped."""
        ...

    def delete(self, name: str, doc_ids: Sequence[str]) -> None:
        """Delete these documents; missing ids are ignored so that retries are harmless."""
        ...

    def optimize(self, name: str) -> None:
        """Build the vector indexes now; a no-op where the engine does it in the background."""
        ...

    def close(self) -> None:
        """Release files, locks and connections."""
        ...


def iter_points(store: VectorStore, name: str, batch: int = 256, filter: Filter | None = None) -> Iterator[StoredPoint]:
    """Every point of a collection (matching ``filter``), paging through ``scroll`` so memory stays bounded."""
    offset: str | None = None
    while True:
        points, offset = store.scroll(name, batch, offset, filter=filter)
        yield from points
        if offset is None:
            return

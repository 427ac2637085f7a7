"""Vector storage: one ``VectorStore`` interface, an embedded engine (qdrant-edge) and a server engine (Qdrant).

``open_store`` picks the engine from the one URL setting (``RR_STORE_URL``); nothing falls back to another engine.
"""

from __future__ import annotations

from pathlib import Path

from core.errors import InvalidInput

from .base import Hit, PointIn, SearchRequest, StoredPoint, VectorStore, point_id
from .edge import EdgeStore
from .server import QdrantServerStore

__all__ = [
    "EdgeStore",
    "Hit",
    "PointIn",
    "QdrantServerStore",
    "SearchRequest",
    "StoredPoint",
    "VectorStore",
    "open_store",
    "point_id",
]


def open_store(
    url: str,
    data_dir: Path,
    api_key: str | None = None,
    shard_number: int | None = None,
    replication_factor: int | None = None,
) -> VectorStore:
    """The store the settings name: ``'embedded'`` keeps qdrant-edge shards under ``data_dir/qdrant-edge``,
    ``':memory:'`` is qdrant-client's throwaway local mode, ``http(s)://...`` a Qdrant server (``api_key`` if it
    needs one, ``shard_number`` and ``replication_factor`` for the collections it creates on a distributed one; the
    caller reads them from the settings).
    """
    if not url.startswith(("http://", "https://")):
        for field, value in (("shard_number", shard_number), ("replication_factor", replication_factor)):
            if value is not None:
                raise InvalidInput(
                    f"RR_{field.upper()} applies to a Qdrant server (RR_STORE_URL=http(s)://...), not to {url!r}",
                    field=field,
                )
    if url == "embedded":
        return EdgeStore(Path(data_dir) / "qdrant-edge")
    if url == "embedded-shared":
        from .shared import SharedEdgeStore

        return SharedEdgeStore(Path(data_dir) / "qdrant-edge")  # type: ignore[return-value]
    from qdrant_client import QdrantClient

    if url == ":memory:":
        return QdrantServerStore(QdrantClient(":memory:"))
    if url.startswith(("http://", "https://")):
        return QdrantServerStore(
            QdrantClient(url=url, api_key=api_key), shard_number=shard_number, replication_factor=replication_factor
        )
    raise InvalidInput(
        f"RR_STORE_URL must be 'embedded', 'embedded-shared', ':memory:' or an http(s):// URL, got {url!r}",
        field="store_url",
    )

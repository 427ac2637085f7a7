"""One set of tests run against every VectorStore engine, so that the engines stay interchangeable.

"edge" is qdrant-edge in a temporary directory, "local" is qdrant-client's in-memory local mode (the server code
path), and "server" a real Qdrant server when QDRANT_URL is set (collections get random names there and are deleted).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import qdrant_client
from qdrant_client import QdrantClient

from core.errors import Conflict, InvalidInput, NotFound, StoreError
from store import EdgeStore, Hit, PointIn, QdrantServerStore, SearchRequest, VectorStore, open_store, point_id

QDRANT_URL = os.environ.get("QDRANT_URL")
ENGINES = [
    "edge",
    "local",
    pytest.param("server", marks=pytest.mark.skipif(not QDRANT_URL, reason="set QDRANT_URL to test a Qdrant server")),
]


def make_store(engine: str, root: Path) -> VectorStore:
    if engine == "edge":
        return EdgeStore(root / "edge")
    if engine == "local":
        return QdrantServerStore(QdrantClient(":memory:"))
    return QdrantServerStore(QdrantClient(url=QDRANT_URL))


@pytest.fixture(params=ENGINES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    s = make_store(request.param, tmp_path)
    yield s
    s.close()


@pytest.fixture
def name(store: VectorStore) -> Iterator[str]:
    """A fresh collection name; random so that tests can share a real server."""
    n = f"t_{uuid.uuid4().hex[:12]}"
    yield n
    if store.collection_exists(n):
        store.delete_collection(n)


def onehot(i: int, dim: int = 8) -> list[float]:
    v = [0.0] * dim
    v[i] = 1.0
    return v


def near(i: int, dim: int = 8) -> list[float]:
    """Closest to onehot(i), then to onehot(i + 1)."""
    v = onehot(i, dim)
    v[(i + 1) % dim] = 0.3
    return v


def ids(hits: list[Hit]) -> list[str]:
    return [h.doc_id for h in hits]


DOCS = [
    PointIn(
        "d0", {"base": onehot(0)}, {"title": "zero", "tenant": "t1", "n": 0, "flag": True, "metadata": {"lang": "en"}}
    ),
    PointIn(
        "d1", {"base": onehot(1)}, {"title": "one", "tenant": "t1", "n": 1, "flag": False, "metadata": {"lang": "fr"}}
    ),
    PointIn(
        "d2", {"base": onehot(2)}, {"title": "two", "tenant": "t2", "n": 2, "flag": True, "metadata": {"lang": "en"}}
    ),
    PointIn(
        "d3", {"base": onehot(3)}, {"title": "three", "tenant": "t2", "n": 3, "flag": False, "metadata": {"lang": "de"}}
    ),
]


@pytest.fixture
def filled(store: VectorStore, name: str) -> str:
    store.create_collection(name, {"base": 8})
    store.upsert(name, DOCS)
    return name


# --- collections ---------------------------------------------------------------------------------------------------


def test_engines_implement_the_protocol(store: VectorStore) -> None:
    assert isinstance(store, VectorStore)


def test_collection_lifecycle(store: VectorStore, name: str) -> None:
    assert not store.collection_exists(name)
    store.create_collection(name, {"base": 8, "expert": 4})
    assert store.collection_exists(name)
    listed = store.list_collections()
    assert name in listed and listed == sorted(listed)
    assert store.vector_names(name) == {"base": 8, "expert": 4}
    assert store.count(name) == 0
    store.delete_collection(name)
    assert not store.collection_exists(name)
    assert name not in store.list_collections()


def test_create_existing_is_conflict(store: VectorStore, name: str) -> None:
    store.create_collection(name, {"base": 8})
    with pytest.raises(Conflict):
        store.create_collection(name, {"base": 8})


@pytest.mark.parametrize("bad", ["", "a b", ".hidden", "a/b", "docs\n", "x" * 129])
def test_bad_collection_names_are_invalid(store: VectorStore, bad: str) -> None:
    with pytest.raises(InvalidInput, match="name"):
        store.create_collection(bad, {"base": 8})
    assert bad not in store.list_collections()


UNKNOWN_COLLECTION_CALLS: dict[str, Callable[[VectorStore, str], Any]] = {
    "delete_collection": lambda s, n: s.delete_collection(n),
    "vector_names": lambda s, n: s.vector_names(n),
    "add_vector": lambda s, n: s.add_vector(n, "x", 4),
    "drop_vector": lambda s, n: s.drop_vector(n, "base"),
    "upsert": lambda s, n: s.upsert(n, [PointIn("a", {"base": onehot(0)})]),
    "update_vectors": lambda s, n: s.update_vectors(n, {"a": {"base": onehot(0)}}),
    "search": lambda s, n: s.search(n, "base", onehot(0), 3),
    "search_batch": lambda s, n: s.search_batch(n, "base", [SearchRequest(onehot(0), 3)]),
    "empty search_batch": lambda s, n: s.search_batch(n, "base", []),
    "index_payload": lambda s, n: s.index_payload(n, "title"),
    "count": lambda s, n: s.count(n),
    "scroll": lambda s, n: s.scroll(n, 10),
    "retrieve": lambda s, n: s.retrieve(n, ["a"]),
    "delete": lambda s, n: s.delete(n, ["a"]),
    "optimize": lambda s, n: s.optimize(n),
}


@pytest.mark.parametrize("call", list(UNKNOWN_COLLECTION_CALLS))
def test_unknown_collection_is_not_found(store: VectorStore, name: str, call: str) -> None:
    with pytest.raises(NotFound):
        UNKNOWN_COLLECTION_CALLS[call](store, name)


@pytest.mark.parametrize(
    ("coll", "vectors"),
    [("../escape", {"base": 8}), ("", {"base": 8}), ("ok", {}), ("ok", {"base": 0}), ("ok", {"bad name": 8})],
)
def test_bad_collection_definitions_are_invalid(store: VectorStore, coll: str, vectors: dict[str, int]) -> None:
    with pytest.raises(InvalidInput):
        store.create_collection(coll, vectors)


# --- points ----------------------------------------------------------------------------------------------------------


def test_search_returns_nearest_first_with_payload(store: VectorStore, filled: str) -> None:
    hits = store.search(filled, "base", near(2), limit=3)
    assert len(hits) == 3 and ids(hits)[:2] == ["d2", "d3"]  # the third is a tie at 0
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].score == pytest.approx(1 / np.sqrt(1.09), abs=1e-5)
    assert hits[0].payload == {**DOCS[2].payload, "doc_id": "d2"}
    bare = store.search(filled, "base", np.asarray(near(2), dtype=np.float32), limit=1, with_payload=False)
    assert ids(bare) == ["d2"] and bare[0].payload == {}


def test_upsert_is_idempotent_and_replaces(store: VectorStore, filled: str) -> None:
    store.upsert(filled, DOCS)
    assert store.count(filled) == len(DOCS)
    store.upsert(filled, [PointIn("d0", {"base": onehot(5)}, {"title": "moved"})])
    assert store.count(filled) == len(DOCS)
    assert ids(store.search(filled, "base", onehot(5), limit=1)) == ["d0"]
    assert store.retrieve(filled, ["d0"])[0].payload == {"title": "moved", "doc_id": "d0"}


def test_point_ids_are_deterministic_per_collection() -> None:
    assert point_id("c", "d0") == point_id("c", "d0")
    assert point_id("c", "d0") != point_id("other", "d0")
    assert uuid.UUID(point_id("c", "d0")).version == 5


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"tenant": "t1"}, {"d0", "d1"}),
        ({"metadata.lang": "en"}, {"d0", "d2"}),
        ({"metadata.lang": ["fr", "de"]}, {"d1", "d3"}),
        ({"tenant": "t2", "metadata.lang": "en"}, {"d2"}),
        ({"n": 3}, {"d3"}),
        ({"n": [0, 1]}, {"d0", "d1"}),
        ({"flag": True}, {"d0", "d2"}),
        ({"flag": False}, {"d1", "d3"}),
        ({"flag": [True, False], "tenant": "t1"}, {"d0", "d1"}),
        ({"doc_id": ["d1", "d3"]}, {"d1", "d3"}),
        ({"tenant": "nobody"}, set()),
        ({"metadata.missing": "x"}, set()),
    ],
)
def test_filters(store: VectorStore, filled: str, flt: dict[str, Any], expected: set[str]) -> None:
    assert set(ids(store.search(filled, "base", near(0), limit=10, filter=flt))) == expected
    assert store.count(filled, flt) == len(expected)
    points, _ = store.scroll(filled, 10, filter=flt)
    assert {p.doc_id for p in points} == expected


@pytest.mark.parametrize("flt", [{"n": 1.5}, {"tenant": []}, {"tenant": {"a": 1}}, {"": "x"}, {"tenant": None}])
def test_bad_filters_are_invalid(store: VectorStore, filled: str, flt: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        store.search(filled, "base", near(0), limit=3, filter=flt)
    with pytest.raises(InvalidInput):
        store.count(filled, flt)


def test_search_batch_answers_each_request_as_search_would(store: VectorStore, filled: str) -> None:
    requests = [
        SearchRequest(near(2), 3),
        SearchRequest(near(0), 2, {"tenant": "t2"}),
        SearchRequest(np.asarray(near(3), dtype=np.float32), 1, {"tenant": "nobody"}),
        SearchRequest(near(1), 10, {"flag": False}),
    ]
    batch = store.search_batch(filled, "base", requests)
    assert len(batch) == len(requests)
    for r, got in zip(requests, batch, strict=True):
        want = store.search(filled, "base", r.vector, r.limit, r.filter)
        assert ids(got) == ids(want) and [h.payload for h in got] == [h.payload for h in want]
        assert [h.score for h in got] == pytest.approx([h.score for h in want], abs=1e-6)
    assert set(ids(batch[1])) == {"d2", "d3"} and batch[2] == [] and set(ids(batch[3])) == {"d1", "d3"}
    bare = store.search_batch(filled, "base", [SearchRequest(near(2), 1)], with_payload=False)
    assert ids(bare[0]) == ["d2"] and bare[0][0].payload == {}
    assert store.search_batch(filled, "base", []) == []


@pytest.mark.parametrize(
    "requests",
    [
        [SearchRequest(near(0), 0)],
        [SearchRequest(near(0), 2), SearchRequest(near(0), 2, {"n": 1.5})],  # type: ignore[dict-item]
        [SearchRequest(onehot(0, 4), 2)],
        [SearchRequest([float("nan")] * 8, 2)],
        [(near(0), 2)],
        SearchRequest(near(0), 2),
    ],
)
def test_bad_search_batches_are_invalid(store: VectorStore, filled: str, requests: Any) -> None:
    with pytest.raises(InvalidInput):
        store.search_batch(filled, "base", requests)
    with pytest.raises(InvalidInput):
        store.search_batch(filled, "nope", [SearchRequest(near(0), 2)])


def test_index_payload_is_idempotent_and_keeps_filters(store: VectorStore, filled: str) -> None:
    before = ids(store.search(filled, "base", near(0), limit=10, filter={"metadata.lang": "en"}))
    for key in ("title", "metadata.lang", "title"):
        store.index_payload(filled, key)
    assert ids(store.search(filled, "base", near(0), limit=10, filter={"metadata.lang": "en"})) == before
    assert set(ids(store.search(filled, "base", near(0), limit=10, filter={"title": ["one", "three"]}))) == {"d1", "d3"}
    store.upsert(filled, [PointIn("d4", {"base": onehot(4)}, {"title": "one"})])  # written after the index
    assert store.count(filled, {"title": "one"}) == 2
    for bad in ("", ".title", "title.", None):
        with pytest.raises(InvalidInput):
            store.index_payload(filled, bad)  # type: ignore[arg-type]


def test_add_vector_then_backfill(store: VectorStore, filled: str) -> None:
    store.add_vector(filled, "expert", 4)
    assert store.vector_names(filled) == {"base": 8, "expert": 4}
    assert store.search(filled, "expert", onehot(0, 4), limit=5) == []  # nobody has it yet
    store.update_vectors(filled, {"d1": {"expert": onehot(0, 4)}, "d3": {"expert": onehot(1, 4)}})
    hits = store.search(filled, "expert", onehot(0, 4), limit=5)
    assert ids(hits) == ["d1", "d3"]  # points lacking the vector are not returned
    assert ids(store.search(filled, "base", near(1), limit=1)) == ["d1"]  # other vectors are kept
    assert store.retrieve(filled, ["d1"])[0].payload["title"] == "one"  # and so is the payload
    with pytest.raises(Conflict):
        store.add_vector(filled, "expert", 4)
    with pytest.raises(NotFound):
        store.update_vectors(filled, {"d0": {"expert": onehot(0, 4)}, "ghost": {"expert": onehot(0, 4)}})
    assert ids(store.search(filled, "expert", onehot(0, 4), limit=5)) == ["d1", "d3"]  # nothing was written


def test_drop_vector(store: VectorStore, filled: str) -> None:
    store.add_vector(filled, "expert", 4)
    store.update_vectors(filled, {d.doc_id: {"expert": onehot(i % 4, 4)} for i, d in enumerate(DOCS)})
    store.drop_vector(filled, "expert")
    assert store.vector_names(filled) == {"base": 8}
    with pytest.raises(InvalidInput):
        store.search(filled, "expert", onehot(0, 4), limit=3)
    vectors = store.retrieve(filled, ["d0"], with_vectors=True)[0].vectors
    assert vectors is not None and set(vectors) == {"base"}
    assert store.count(filled) == len(DOCS)
    with pytest.raises(InvalidInput):
        store.drop_vector(filled, "expert")
    with pytest.raises(InvalidInput):
        store.drop_vector(filled, "base")  # the only one left
    store.add_vector(filled, "expert", 4)  # re-adding starts empty: old data does not come back
    assert store.search(filled, "expert", onehot(0, 4), limit=3) == []


def test_scroll_pages_cover_every_point_once(store: VectorStore, name: str) -> None:
    store.create_collection(name, {"base": 8})
    rng = np.random.default_rng(0)
    store.upsert(name, [PointIn(f"doc{i}", {"base": rng.normal(size=8)}, {"i": i}) for i in range(23)])
    seen: list[str] = []
    offset: str | None = None
    pages = 0
    while True:
        points, offset = store.scroll(name, 5, offset)
        seen += [p.doc_id for p in points]
        assert all(p.vectors is None for p in points)
        pages += 1
        if offset is None:
            break
    assert sorted(seen) == sorted(f"doc{i}" for i in range(23)) and len(seen) == 23
    assert pages == 5
    points, _ = store.scroll(name, 2, with_vectors=True)
    assert all(p.vectors is not None and len(p.vectors["base"]) == 8 for p in points)
    with pytest.raises(InvalidInput):
        store.scroll(name, 5, offset="not-an-offset")
    with pytest.raises(InvalidInput):
        store.scroll(name, 0)


def test_retrieve_in_order_and_skips_missing(store: VectorStore, filled: str) -> None:
    got = store.retrieve(filled, ["d3", "ghost", "d0", "d3"])
    assert [p.doc_id for p in got] == ["d3", "d0"]
    assert got[0].payload["title"] == "three" and got[0].vectors is None
    with_vectors = store.retrieve(filled, ["d1"], with_vectors=True)[0].vectors
    assert with_vectors is not None
    np.testing.assert_allclose(with_vectors["base"], onehot(1), atol=1e-6)  # cosine vectors are stored normalized
    assert store.retrieve(filled, []) == []


def test_delete(store: VectorStore, filled: str) -> None:
    store.delete(filled, ["d0", "d2", "ghost"])
    assert store.count(filled) == 2
    assert ids(store.search(filled, "base", near(0), limit=10)) == ["d1", "d3"]
    store.delete(filled, ["d0"])  # again: harmless
    assert store.count(filled) == 2


@pytest.mark.parametrize(
    "vector",
    [onehot(0, 7), onehot(0, 9), [[0.0] * 8], [float("nan")] + [0.0] * 7, ["a"] * 8],
    ids=["short", "long", "2d", "nan", "text"],
)
def test_bad_vectors_are_invalid(store: VectorStore, filled: str, vector: Any) -> None:
    with pytest.raises(InvalidInput):
        store.search(filled, "base", vector, limit=3)
    with pytest.raises(InvalidInput):
        store.upsert(filled, [PointIn("new", {"base": vector})])
    with pytest.raises(InvalidInput):
        store.update_vectors(filled, {"d0": {"base": vector}})
    assert store.count(filled) == len(DOCS)


def test_unknown_vector_name_is_invalid(store: VectorStore, filled: str) -> None:
    with pytest.raises(InvalidInput):
        store.search(filled, "nope", onehot(0), limit=3)
    with pytest.raises(InvalidInput):
        store.upsert(filled, [PointIn("new", {"nope": onehot(0)})])
    with pytest.raises(InvalidInput):
        store.update_vectors(filled, {"d0": {"nope": onehot(0)}})
    with pytest.raises(InvalidInput):
        store.search(filled, "base", onehot(0), limit=0)


@pytest.mark.parametrize(
    "payload",
    [{"x": float("nan")}, {"x": {1, 2}}, {"x": np.float32(1.0)}, {"x": {1: "a"}}, {"x": object()}],
    ids=["nan", "set", "numpy", "int-key", "object"],
)
def test_non_json_payload_is_invalid(store: VectorStore, filled: str, payload: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        store.upsert(filled, [PointIn("new", {"base": onehot(0)}, payload)])
    assert store.count(filled) == len(DOCS)


def test_points_are_checked_on_creation() -> None:
    with pytest.raises(InvalidInput):
        PointIn("", {"base": onehot(0)})
    with pytest.raises(InvalidInput):
        PointIn("a", {})
    with pytest.raises(InvalidInput):
        PointIn("a", {"base": onehot(0)}, {"doc_id": "b"})


def test_optimize_keeps_results(store: VectorStore, filled: str) -> None:
    before = store.search(filled, "base", near(1), limit=4)
    store.optimize(filled)
    assert ids(store.search(filled, "base", near(1), limit=4)) == ids(before)


# --- the embedded engine on disk ------------------------------------------------------------------------------------


def test_edge_store_persists_across_reopen(tmp_path: Path) -> None:
    first = EdgeStore(tmp_path)
    first.create_collection("docs", {"base": 8})
    first.upsert("docs", DOCS)
    first.add_vector("docs", "expert", 4)
    first.add_vector("docs", "gone", 4)
    first.update_vectors("docs", {"d2": {"expert": onehot(3, 4)}})
    first.drop_vector("docs", "gone")
    first.delete("docs", ["d3"])
    first.close()

    second = EdgeStore(tmp_path)
    try:
        assert second.list_collections() == ["docs"]
        assert second.vector_names("docs") == {"base": 8, "expert": 4}
        assert second.count("docs") == 3
        assert ids(second.search("docs", "expert", onehot(3, 4), limit=5)) == ["d2"]
        assert second.search("docs", "base", near(0), limit=1, filter={"metadata.lang": "en"})[0].payload["title"] == (
            "zero"
        )
    finally:
        second.close()


def test_edge_store_refuses_a_shard_another_store_holds_open(tmp_path: Path) -> None:
    first = EdgeStore(tmp_path)
    first.create_collection("docs", {"base": 8})
    second = EdgeStore(tmp_path)
    try:
        with pytest.raises(StoreError, match="one process"):
            second.count("docs")
        first.close()  # releases the lock: now the other store can open it
        assert second.count("docs") == 0
    finally:
        first.close()
        second.close()


def test_edge_store_optimizes_after_enough_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = EdgeStore(tmp_path, optimize_every=5)
    calls: list[str] = []
    real = s.optimize

    def spy(name: str) -> None:
        calls.append(name)
        real(name)

    monkeypatch.setattr(s, "optimize", spy)
    try:
        s.create_collection("docs", {"base": 8})
        s.upsert("docs", DOCS[:3])
        assert calls == []
        s.upsert("docs", DOCS[3:])
        s.update_vectors("docs", {"d0": {"base": onehot(4)}})
        assert calls == ["docs"]
        assert ids(s.search("docs", "base", onehot(4), limit=1)) == ["d0"]
    finally:
        s.close()
    with pytest.raises(InvalidInput):
        EdgeStore(tmp_path, optimize_every=0)


# --- congruence and selection -------------------------------------------------------------------------------------


def test_engines_agree_on_random_vectors(tmp_path: Path) -> None:
    """The same 200 unit vectors in every engine give the same top-5 as exact numpy search."""
    rng = np.random.default_rng(42)
    docs = rng.normal(size=(200, 16)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = rng.normal(size=(10, 16)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = [[f"doc{j}" for j in np.argsort(-(docs @ q))[:5]] for q in queries]
    engines = ["edge", "local"] + (["server"] if QDRANT_URL else [])
    for engine in engines:
        s = make_store(engine, tmp_path)
        coll = f"t_{uuid.uuid4().hex[:12]}"
        try:
            s.create_collection(coll, {"base": 16})
            s.upsert(coll, [PointIn(f"doc{i}", {"base": v}, {"i": i}) for i, v in enumerate(docs)])
            s.optimize(coll)
            for q, want in zip(queries, exact, strict=True):
                hits = s.search(coll, "base", q, limit=5)
                assert ids(hits) == want, engine
                np.testing.assert_allclose([h.score for h in hits], np.sort(docs @ q)[::-1][:5], atol=1e-5)
        finally:
            s.delete_collection(coll)
            s.close()


def test_open_store_picks_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    embedded = open_store("embedded", tmp_path)
    assert isinstance(embedded, EdgeStore) and embedded.root == tmp_path / "qdrant-edge"
    memory = open_store(":memory:", tmp_path)
    assert isinstance(memory, QdrantServerStore)
    for s in (embedded, memory):
        s.close()

    made: list[dict[str, Any]] = []

    class FakeClient:
        def __init__(self, **kwargs: Any) -> None:
            made.append(kwargs)

    monkeypatch.setattr(qdrant_client, "QdrantClient", FakeClient)
    remote = open_store("https://qdrant.example:6333", tmp_path, api_key="secret")
    assert isinstance(remote, QdrantServerStore)
    assert (remote.shard_number, remote.replication_factor) == (None, None)  # the server's defaults
    assert made == [{"url": "https://qdrant.example:6333", "api_key": "secret"}]
    cluster = open_store("https://qdrant.example:6333", tmp_path, None, 4, 2)
    assert isinstance(cluster, QdrantServerStore) and (cluster.shard_number, cluster.replication_factor) == (4, 2)
    with pytest.raises(InvalidInput, match="RR_STORE_URL"):
        open_store("qdrant://nowhere", tmp_path)


@pytest.mark.parametrize("url", ["embedded", "embedded-shared", ":memory:"])
@pytest.mark.parametrize("option", ["shard_number", "replication_factor"])
def test_cluster_options_are_refused_off_a_server(tmp_path: Path, url: str, option: str) -> None:
    """Sharding and replication are a Qdrant server's: set for one node, they would silently mean nothing."""
    with pytest.raises(InvalidInput, match=f"RR_{option.upper()} applies to a Qdrant server"):
        open_store(url, tmp_path, **{option: 2})  # type: ignore[arg-type]
    assert not (tmp_path / "qdrant-edge").exists()  # refused before anything is made


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_bad_cluster_options_are_invalid(bad: Any) -> None:
    for option in ("shard_number", "replication_factor"):
        with pytest.raises(InvalidInput, match=f"{option} must be a positive integer"):
            QdrantServerStore(QdrantClient(":memory:"), **{option: bad})


@pytest.mark.parametrize("engine", [e for e in ENGINES if e != "edge"])
def test_collections_are_created_with_the_cluster_options(tmp_path: Path, engine: str) -> None:
    """On a server the collection carries the shards and copies asked for (a one-node server keeps a replication
    factor as configuration); local mode has one node and accepts them without effect."""
    plain = make_store(engine, tmp_path)
    assert isinstance(plain, QdrantServerStore)
    s = QdrantServerStore(plain.client, shard_number=3, replication_factor=2)
    coll = f"rr_cluster_{uuid.uuid4().hex[:8]}"
    s.create_collection(coll, {"base": 4})
    try:
        s.upsert(coll, [PointIn("a", {"base": [1.0, 0.0, 0.0, 0.0]}, {"tenant": "t"})])
        assert [h.doc_id for h in s.search(coll, "base", [1.0, 0.0, 0.0, 0.0], limit=1)] == ["a"]
        if engine == "server":
            params = s.client.get_collection(coll).config.params
            assert (params.shard_number, params.replication_factor) == (3, 2)
    finally:
        s.delete_collection(coll)
        s.close()


def test_unreachable_server_is_store_error() -> None:
    remote = QdrantServerStore(QdrantClient(url="http://127.0.0.1:1", check_compatibility=False))
    with pytest.raises(StoreError):
        remote.list_collections()
    with pytest.raises(StoreError):
        remote.count("docs")

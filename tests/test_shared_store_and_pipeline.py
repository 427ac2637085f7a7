from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.errors import InvalidInput
from ingest.pipeline import partition_valid, validate_documents
from store.base import PointIn, SearchRequest
from store.shared import SharedEdgeStore


def test_two_shared_stores_on_one_root_see_each_others_writes(tmp_path: Path) -> None:
    a, b = SharedEdgeStore(tmp_path), SharedEdgeStore(tmp_path)  # as two processes would
    a.create_collection("c", {"v": 4})
    a.upsert("c", [PointIn("d1", {"v": [1.0, 0, 0, 0]}, {"title": "x"})])
    b.upsert("c", [PointIn("d2", {"v": [0, 1.0, 0, 0]}, {"title": "y"})])
    assert a.count("c") == 2 and b.count("c") == 2
    assert [h.doc_id for h in b.search("c", "v", [1.0, 0.1, 0, 0], 1)] == ["d1"]
    a.index_payload("c", "title")  # what routing asks of the pilot collection, through the lock too
    found = b.search_batch(
        "c", "v", [SearchRequest([1.0, 0.1, 0, 0], 1), SearchRequest([1.0, 0, 0, 0], 2, {"title": "y"})]
    )
    assert [[h.doc_id for h in f] for f in found] == [["d1"], ["d2"]]
    with pytest.raises(AttributeError):
        b._private  # noqa: B018


def test_partition_valid_reports_what_it_skips() -> None:
    ok, bad = partition_valid(
        [
            {"id": "1", "text": "fine"},
            {"id": "2", "title": "", "text": ""},
            {"text": "no id"},
            {"id": "1", "text": "dup"},
        ]
    )
    assert [d["id"] for d in ok] == ["1"]
    assert [i for i, _ in bad] == ["2", "?", "1"]
    assert "text is required" in bad[0][1] and "duplicate" in bad[2][1]


def test_validate_documents_rejects_the_whole_batch() -> None:
    with pytest.raises(InvalidInput) as err:
        validate_documents([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], 10)
    assert err.value.field == "documents[1].id"
    with pytest.raises(InvalidInput, match="metadata must be an object"):
        validate_documents([{"id": "a", "text": "x", "metadata": [1]}], 10)


def test_a_document_is_its_four_keys_and_words_in_its_text_or_title() -> None:
    (doc,) = validate_documents([{"id": "a", "title": "Shock waves on swept wings", "text": ""}], 10)
    assert (doc.title, doc.text, doc.full_text) == ("Shock waves on swept wings", "", "Shock waves on swept wings")
    with pytest.raises(InvalidInput) as err:
        validate_documents([{"id": "a", "text": "x"}, {"id": "b", "text": "y", "meta": {"k": 1}}], 10)
    assert err.value.field == "documents[1].meta" and "'meta'" in str(err.value)  # it was dropped without a word


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({"x": float("nan")}, "documents[1].metadata.x"),
        ({"x": float("inf")}, "documents[1].metadata.x"),
        ({"a": {"b": [1, -float("inf")]}}, "documents[1].metadata.a.b[1]"),
        (json.loads('{"score": NaN}'), "documents[1].metadata.score"),  # what Python's json makes of a request
    ],
)
def test_validate_documents_rejects_non_finite_metadata(metadata: dict[str, Any], field: str) -> None:
    docs: list[dict[str, Any]] = [
        {"id": "ok", "text": "x", "metadata": {"n": 1.5, "tags": ["a"], "none": None}},
        {"id": "d2", "text": "y", "metadata": metadata},
    ]
    with pytest.raises(InvalidInput, match="NaN and infinity") as err:
        validate_documents(docs, 10)
    assert err.value.field == field and "'d2'" in str(err.value)
    assert [d.id for d in validate_documents(docs[:1], 10)] == ["ok"]  # finite numbers, lists, null are fine

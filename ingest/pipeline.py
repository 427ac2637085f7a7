"""From raw documents to stored points: validation, batching, and encoding with every document encoder.

These are the plain functions the Celery tasks call; they are tested directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from core.errors import InvalidInput
from core.text import UNICODE_HINT, is_unicode
from ingest.beir import Document

log = logging.getLogger(__name__)

DOCUMENT_KEYS = ("id", "title", "text", "metadata")
MAX_ID_CHARS = 512
MAX_TEXT_CHARS = 200_000


def validate_documents(raw: Sequence[Mapping[str, Any]], max_batch: int) -> list[Document]:
    """Check every document before anything is queued, so a bad batch is rejected whole and nothing half-lands.

    Errors name the position and the field: ``documents[3].text: ...``.
    """
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        raise InvalidInput("documents must be a list", field="documents")
    if not raw:
        raise InvalidInput("documents must not be empty", field="documents")
    if len(raw) > max_batch:
        raise InvalidInput(
            f"at most {max_batch} documents per request, got {len(raw)}; split the batch", field="documents"
        )
    out: list[Document] = []
    seen: set[str] = set()
    for i, d in enumerate(raw):
        where = f"documents[{i}]"
        if not isinstance(d, Mapping):
            raise InvalidInput(f"{where} must be an object", field=where)
        unknown = sorted(str(k) for k in d if k not in DOCUMENT_KEYS)
        if unknown:  # a misspelt key would be dropped, and its value lost without a word
            raise InvalidInput(
                f"{where} has a key a document does not have: {unknown[0]!r} (it has {', '.join(DOCUMENT_KEYS)})",
                field=f"{where}.{unknown[0]}",
            )
        doc_id = d.get("id")
        if isinstance(doc_id, int) and not isinstance(doc_id, bool):
            doc_id = str(doc_id)
        if not isinstance(doc_id, str) or not doc_id.strip():
            raise InvalidInput(f"{where}.id is required (a non-empty string)", field=f"{where}.id")
        if len(doc_id) > MAX_ID_CHARS:
            raise InvalidInput(f"{where}.id is longer than {MAX_ID_CHARS} characters", field=f"{where}.id")
        if doc_id in seen:
            raise InvalidInput(f"{where}.id {doc_id!r} appears twice in this batch", field=f"{where}.id")
        seen.add(doc_id)
        title = "" if d.get("title") is None else d["title"]  # null is no title; false or 0 is not a title
        text = d.get("text")
        if not isinstance(title, str):
            raise InvalidInput(f"{where}.title must be a string", field=f"{where}.title")
        if not isinstance(text, str) or not (text.strip() or title.strip()):
            raise InvalidInput(
                f"{where}.text is required: a string, not blank unless the title is not", field=f"{where}.text"
            )
        if len(text) + len(title) > MAX_TEXT_CHARS:
            raise InvalidInput(f"{where}.text is longer than {MAX_TEXT_CHARS} characters", field=f"{where}.text")
        for name, value in (("id", doc_id), ("title", title), ("text", text)):
            if not is_unicode(value):
                raise InvalidInput(f"{where}.{name} {UNICODE_HINT}", field=f"{where}.{name}")
        meta = {} if d.get("metadata") is None else d["metadata"]
        if not isinstance(meta, Mapping):
            raise InvalidInput(f"{where}.metadata must be an object", field=f"{where}.metadata")
        _check_metadata(where, doc_id, meta)
        out.append(Document(doc_id, title.strip(), text.strip(), dict(meta)))
    return out


def _check_metadata(where: str, doc_id: str, meta: Mapping[str, Any]) -> None:
    """Metadata is stored as payload: refuse here what the store's payload check would refuse in the worker, such as
    NaN (Python's json reads it), so the API answers 400 and nothing is queued."""
    from store._checks import first_non_json, non_json_problem

    bad = first_non_json(dict(meta))
    if bad is None:
        return
    path, value = bad
    field = f"{where}.metadata.{path}" if path else f"{where}.metadata"
    problem = non_json_problem(value)
    raise InvalidInput(f"{field} of document {doc_id!r} {problem}", field=field)


def partition_valid(raw: Sequence[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], list[tuple[str, str]]]:
    """Split documents into those the API accepts and (id, reason) for the rest, so a bulk loader can report and
    skip them instead of having whole batches rejected (Cranfield, for one, has two empty documents)."""
    ok: list[Mapping[str, Any]] = []
    bad: list[tuple[str, str]] = []
    seen: set[str] = set()
    for d in raw:
        try:
            (doc,) = validate_documents([d], 1)
        except InvalidInput as e:
            bad.append(
                (
                    str(d.get("id", "?")) if isinstance(d, Mapping) else "?",
                    str(e).replace("documents[0].", "").replace("documents[0]", "document"),
                )
            )
            continue
        if doc.id in seen:
            bad.append((doc.id, "duplicate id"))
            continue
        seen.add(doc.id)
        ok.append(d)
    return ok, bad


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def document_payload(doc: Document, tenant: str) -> dict[str, Any]:
    return {
        "doc_id": doc.id,
        "title": doc.title,
        "text": doc.text,
        "metadata": doc.metadata,
        "tenant": tenant,
        "ingested_at": time.time(),
    }


def index_documents(
    retriever: Any,
    store: Any,
    physical: str,
    tenant: str,
    docs: Sequence[Document],
    encoders: Sequence[str] | None = None,
    before_write: Callable[[], object] | None = None,
) -> dict[str, float]:
    """Encode a batch with every document encoder and upsert the named vectors; returns seconds per encoder.
    ``before_write`` runs between the encoding (long) and the upsert, to check that the batch still belongs there.

    Point ids derive from (collection, document id), so sending a document again overwrites it: idempotent.
    """
    from store.base import PointIn

    names = list(encoders) if encoders is not None else retriever.document_encoders
    vectors, timings = _encode(retriever, docs, names)
    points = [PointIn(d.id, {n: vectors[n][i] for n in names}, document_payload(d, tenant)) for i, d in enumerate(docs)]
    if before_write is not None:
        before_write()
    store.upsert(physical, points)
    return timings


def update_documents(
    retriever: Any, store: Any, physical: str, docs: Sequence[Document], encoders: Sequence[str]
) -> dict[str, float]:
    """Encode stored documents with some encoders and set just those named vectors; returns seconds per encoder."""
    vectors, timings = _encode(retriever, docs, encoders)
    store.update_vectors(physical, {d.id: {n: vectors[n][i] for n in encoders} for i, d in enumerate(docs)})
    return timings


def _encode(
    retriever: Any, docs: Sequence[Document], encoders: Sequence[str]
) -> tuple[dict[str, Any], dict[str, float]]:
    """Each encoder's document vectors for ``docs``, and the seconds each took."""
    texts = [d.full_text for d in docs]
    vectors: dict[str, Any] = {}
    timings: dict[str, float] = {}
    for name in encoders:
        t0 = time.perf_counter()
        vectors[name] = retriever.encode_documents(texts, [name])[name]
        timings[name] = time.perf_counter() - t0
    return vectors, timings


RECHECKS = 5  # how many times a backfill batch is read again for documents re-sent while it was encoded


def backfill_vector(retriever: Any, store: Any, physical: str, expert: str, batch_size: int = 64) -> int:
    """Encode every stored document of a collection into a newly added named vector; returns how many.

    A document re-sent while its batch was encoded gets its new text and every vector from the ingestion, and then
    this batch's vector from the old text: so each batch is read again once written, and a document whose title or
    text changed meanwhile is encoded again from what is stored now (whatever came last is right: an ingestion
    writing after the check encodes its own text)."""
    from store.base import iter_points

    def as_doc(p: Any) -> Document:
        return Document(p.doc_id, p.payload.get("title", ""), p.payload.get("text", ""))

    n = 0
    for points in batched(iter_points(store, physical, batch_size), batch_size):
        docs = [as_doc(p) for p in points]
        for _ in range(RECHECKS):
            update_documents(retriever, store, physical, docs, [expert])
            encoded = {d.id: (d.title, d.text) for d in docs}
            now = [as_doc(p) for p in store.retrieve(physical, list(encoded))]  # one deleted meanwhile: gone
            docs = [d for d in now if (d.title, d.text) != encoded[d.id]]
            if not docs:
                break
        else:
            log.warning("%d documents of %s kept changing during the backfill of %r", len(docs), physical, expert)
        n += len(points)
    return n

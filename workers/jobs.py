"""What the tasks do, as plain functions over a Runtime (tested without Celery)."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from core import metrics
from core.errors import InvalidInput, NotFound, QueueError
from ingest.pipeline import backfill_vector, index_documents, update_documents, validate_documents
from router.pilots import BASE
from store.meta import CollectionInfo

log = logging.getLogger(__name__)

RESIZE_SPARE = "_rr_resize"  # not an expert name (those start with a letter or digit)


def run_ingest_batch(
    rt: Any,
    job_id: str,
    batch: int,
    tenant: str,
    collection: str,
    documents: list[dict[str, Any]],
    collection_created: float | None = None,
) -> int:
    """Encode and store one batch; progress and failures go to the job's batch record, and the documents and
    per-encoder seconds to the metrics and the shared event log (the dashboard's ingestion rates).

    ``collection_created`` is the collection's creation time when the job was queued: a collection deleted and
    created again under its name since is another collection, and the batch fails rather than land in it (a
    message queued by an older version carries none)."""
    docs = validate_documents(documents, max_batch=len(documents) or 1)

    def still_its_collection() -> CollectionInfo:
        info = rt.meta.get_collection(tenant, collection)
        if collection_created is not None and info.created_at != collection_created:
            raise NotFound(
                f"collection {collection!r} was deleted since this job was queued (one of that name is newer)"
            )
        return info

    info = still_its_collection()
    rt.meta.set_batch(job_id, batch, "running", 0, len(docs), [])
    rt.retriever.refresh()
    for attempt in (1, 2):
        encoders = _encoders(rt, info)
        try:
            # checked again after the encoding: the collection may have been deleted, and made again, meanwhile
            timings = index_documents(
                rt.retriever, rt.store, info.physical, tenant, docs, encoders, before_write=still_its_collection
            )
            break
        except (NotFound, InvalidInput):
            # An expert removed (or its named vector dropped) while the batch was encoded with it: the batch is
            # written with the encoders left, once. Nothing was stored: the upsert comes after every encoding.
            rt.retriever.refresh()
            info = rt.meta.get_collection(tenant, collection)
            if attempt == 2 or set(encoders) <= set(_encoders(rt, info)):
                raise
            log.info("an expert went while batch %d of job %s was encoded: writing it without", batch, job_id)
    # An expert registered meanwhile may have added its named vector after the encoders were chosen, and its
    # backfill may already have passed these documents: give them that vector now, so none is left without it.
    rt.retriever.refresh()
    late = [e for e in _encoders(rt, rt.meta.get_collection(tenant, collection)) if e not in encoders]
    if late:
        timings |= update_documents(rt.retriever, rt.store, info.physical, docs, late)
    rt.meta.set_batch(job_id, batch, "done", len(docs), len(docs), [])
    metrics.observe_ingest(len(docs), timings)
    try:
        rt.events.record(
            "ingest", tenant=tenant, collection=collection, job_id=job_id, docs=len(docs), encoders=timings
        )
    except Exception:  # the batch is stored; a missing event must not make the task fail and retry
        log.warning("could not record an ingestion event", exc_info=True)
    return len(docs)


def _encoders(rt: Any, info: Any) -> list[str]:
    """The document encoders a batch is written with: those whose named vector the collection has, not dropping."""
    have = rt.store.vector_names(info.physical)
    return [
        e
        for e in rt.retriever.document_encoders
        if (e == BASE or e in have) and info.backfill.get(e, "done") != "dropping"
    ]


def fail_batch(rt: Any, job_id: str, batch: int, documents: list[dict[str, Any]], reason: str) -> None:
    ids = [str(d.get("id")) for d in documents]
    rt.meta.set_batch(job_id, batch, "failed", 0, len(documents), [{"ids": ids, "reason": reason}])


def run_backfill(rt: Any, tenant: str, collection: str, expert: str) -> int:
    """Encode every stored document into the expert's named vector (new, or holding a replaced adapter's vectors),
    or with ``expert`` "base" into the base vector (another base model encoded it); routing to it waits for
    'done'."""
    try:
        info = rt.meta.get_collection(tenant, collection)
    except NotFound:
        return 0  # the collection was deleted meanwhile
    rt.retriever.refresh()
    enc = rt.retriever.encoder
    if expert == BASE:
        fingerprint = enc.base_fingerprint
    elif expert not in rt.retriever.experts:
        return 0  # the expert was removed meanwhile
    else:
        # The adapter encoding the vectors, recorded with 'done': one replaced meanwhile shows as stale on the next
        # search.
        fingerprint = enc.adapter_fingerprint(expert)
    if info.backfill.get(expert) == "done" and info.vectors_from.get(expert) == fingerprint:
        # Done already with this adapter: the job was queued twice (two API processes found the expert stale on
        # the same collection at once), and the first to run did it.
        log.info("backfill of %r on %s/%s is done already; skipping", expert, tenant, collection)
        return 0
    rt.meta.set_backfill(tenant, collection, expert, "running")
    have = rt.store.vector_names(info.physical)
    if expert in have and have[expert] != enc.dim:  # a base model of another width: the vector is made anew
        # a collection keeps at least one named vector: a spare one stands in while the only one is remade
        alone = len(have) == 1
        if alone:
            rt.store.add_vector(info.physical, RESIZE_SPARE, enc.dim)
        rt.store.drop_vector(info.physical, expert)
        rt.store.add_vector(info.physical, expert, enc.dim)
        if alone:
            rt.store.drop_vector(info.physical, RESIZE_SPARE)
        have = {expert: enc.dim}
    if expert not in have:
        rt.store.add_vector(info.physical, expert, enc.dim)
    n = backfill_vector(rt.retriever, rt.store, info.physical, expert)
    rt.meta.set_backfill(tenant, collection, expert, "done", vectors_from=fingerprint)
    return n


def run_drop_vector(rt: Any, tenant: str, collection: str, expert: str) -> None:
    """Drop a removed expert's named vector, unless it was registered again since (its state is no longer
    'dropping'): with several workers its new backfill may run first, and the drop would take its vectors."""
    try:
        info = rt.meta.get_collection(tenant, collection)
    except NotFound:
        return
    rt.retriever.refresh()
    if expert in rt.retriever.experts and info.backfill.get(expert) != "dropping":
        log.info(
            "expert %r was registered again before its vector on %s/%s was dropped: kept", expert, tenant, collection
        )
        return
    if expert in rt.store.vector_names(info.physical):
        rt.store.drop_vector(info.physical, expert)
    rt.meta.set_backfill(tenant, collection, expert, None)


def _check_same_domain(ds: Any, known: Any, data: str) -> None:
    """A known domain is scored on the training queries and the corpus its pilots were built on (the API checks the
    queries before it queues; the folder may have changed since). Scores on another corpus do not compare."""
    known.check_training_queries(ds.name, ds.qrels["train"], data)
    if ds.name in known.corpus_sizes:
        expected = int(known.corpus_sizes[ds.name].sum())
        if len(ds.corpus) != expected:
            raise InvalidInput(
                f"data {data!r}: the corpus of {ds.name!r} has {len(ds.corpus)} documents, the pilot library's "
                f"{expected}: the other experts were scored against that corpus",
                field="data",
            )


class ExpertGone(NotFound):
    """The expert to score is not in the registry (removed before or while it was scored)."""


UNDER_WAY = "another worker is scoring it (it reported progress within the visibility timeout)"


def _scoring_to_skip(rt: Any, expert: str, token: str, lease_s: float) -> str | None:
    """Why a delivery of the scoring task that queued ``token`` must not run, or None. The broker delivers a task
    again when it ran longer than its visibility timeout (``lease_s``; scoring every corpus can take longer): the
    copy finds the request done, superseded by a newer one, or under way in a worker that still reports progress
    (:data:`UNDER_WAY`: it is looked at again later). One whose worker stopped reporting (it died) runs."""
    rec = rt.meta.scoring_record(expert)
    if rec is None or rec.get("token") != token:
        return "a newer request superseded it (or the expert was removed)"
    if rec["status"] in ("done", "failed"):
        return f"it is {rec['status']} already"
    if rec["status"] == "running" and time.time() - float(rec["at"]) < lease_s:
        return UNDER_WAY
    return None


def run_score_expert(
    rt: Any, expert: str, data: str, token: str | None = None, lease_s: float = float("inf")
) -> list[str]:
    """Algorithm 1 for a newly registered expert: score it on every known domain's training queries (and on its own
    domain, which joins the library with its corpus pilots), then rebuild the pilots. No gradient training. Returns
    the domains scored. ``token`` is the request's (see :func:`_scoring_to_skip`); progress is recorded while it
    encodes, at least every quarter of ``lease_s`` (at most every minute), and after each domain: one expert on one
    domain (a document expert on a large corpus, or vectors not yet cached) can take longer than the lease."""
    from ingest.beir import discover, load_dataset
    from router.pilots import PilotScores
    from router.serving import SCORES_FILE
    from router.workbench import Workbench

    r = rt.retriever
    r.refresh()
    if expert not in r.manifests:
        raise ExpertGone(f"unknown expert {expert!r}")
    if token is not None and (why := _scoring_to_skip(rt, expert, token, lease_s)) is not None:
        if why == UNDER_WAY and math.isfinite(lease_s):
            # This copy is acknowledged and the broker keeps no other: should that worker die, nothing would come
            # back. Look again in half the lease (below the visibility timeout, so the broker holds one copy).
            try:
                rt.queue.submit_later("score_expert", lease_s / 2, expert=expert, data=data, token=token)
                why += f"; looking again in {lease_s / 2:.0f} s"
            except QueueError as e:  # not a failure of the scoring, which runs elsewhere
                log.warning("scoring of %s: the queue did not take the later look at it: %s", expert, e)
        log.info("scoring of %s delivered again, not run: %s", expert, why)
        return []
    rt.meta.set_scoring(expert, "running", token=token)
    scored: list[str] = []
    every = min(60.0, lease_s / 4)
    last = time.monotonic()

    def mark() -> None:  # still under way
        nonlocal last
        rt.meta.set_scoring(expert, "running", domains=scored, token=token)
        last = time.monotonic()

    def alive(_n: int) -> None:  # the encoder's progress callback
        if time.monotonic() - last >= every:
            mark()

    def bench(mode: str) -> Workbench:
        return Workbench(r.encoder, mode, lambda _label, _total: alive)

    path = r.registry.root / SCORES_FILE
    known = PilotScores.load(path) if path.is_file() else PilotScores()
    computed = PilotScores()  # only what this scoring adds, merged into the scores as they are at its end
    own_domain = r.manifests[expert].manifest.domain
    sides = {n: e.manifest.sides for n, e in r.manifests.items()}  # as registered now: one removed later is gone
    try:
        for folder in discover(data):
            if folder.name not in known.domains and folder.name != own_domain:
                continue
            ds = load_dataset(folder, ("train",))
            new_domain = ds.name not in known.domains
            if new_domain:
                qids, base_q = bench("query").query_matrix(ds, "train", None)
                computed.add_domain(ds.name, qids, base_q)
                docs = [d.full_text for d in ds.corpus]
                computed.add_corpus(ds.name, r.encoder.encode(docs, None, "document", progress=alive))
            else:
                _check_same_domain(ds, known, data)
                computed.add_domain(ds.name, known.domains[ds.name], known.embeddings[ds.name])
            for name in sorted(sides) if new_domain else [expert]:
                sc = bench(sides[name]).score(ds, "train", name).per_query
                computed.set_scores(ds.name, name, [sc[q] for q in computed.domains[ds.name]])
            scored.append(ds.name)
            mark()
    except NotFound as e:  # the encoder no longer has it: removed while it was scored
        r.refresh()
        if expert not in r.manifests:
            raise ExpertGone(f"expert {expert!r} was removed while it was scored") from e
        raise
    with rt.meta.update_lock:  # another process's scoring merges before or after this one, not over it
        if expert not in r.merge_scores(computed):  # removed while it was scored: its pilots must not come back
            raise ExpertGone(f"expert {expert!r} was removed while it was scored")
    rt.meta.set_scoring(expert, "done", domains=scored, token=token)
    return scored

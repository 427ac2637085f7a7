"""The platform's operations as plain functions over a Runtime. They raise core errors; the routes map them to HTTP."""

from __future__ import annotations

import contextlib
import logging
import re
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core import metrics
from core.errors import Conflict, InvalidInput, NotFound, QueueError
from core.text import UNICODE_HINT, is_unicode
from ingest.pipeline import batched, validate_documents
from router.encoders import BASE
from store._checks import INT_MAX, INT_MIN
from store.meta import ADMIN, CollectionInfo, physical_name
from workers.jobs import fail_batch

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,59}$")
# Physical collection names are t_{tenant}__{name}: with no "__" in a tenant name and no "_" at its end, the first
# "__" after "t_" ends the tenant, so tenant "a" + "b__c" and tenant "a__b" + "c" can never collide.
TENANT_NAME_RE = re.compile(r"^(?!.*__)[a-z0-9][a-z0-9_\-]{0,59}(?<!_)$")
FILTER_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")
BATCH = 64


def check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"{kind} name {name!r} is invalid: 1-60 of a-z, 0-9, '-', '_', starting alphanumeric", field="name"
        )
    return name


# ---- tenants -----------------------------------------------------------------------------------------------
def create_tenant(rt: Any, name: str) -> str:
    check_name("tenant", name)
    if name == ADMIN:
        raise InvalidInput(f"{ADMIN!r} is reserved", field="name")
    if not TENANT_NAME_RE.fullmatch(name):
        raise InvalidInput(f"tenant name {name!r} is invalid: it may not contain '__' nor end with '_'", field="name")
    return str(rt.meta.create_tenant(name))


# ---- collections -------------------------------------------------------------------------------------------
def create_collection(rt: Any, tenant: str, name: str, expert: str | None = None) -> CollectionInfo:
    check_name("collection", name)
    rt.retriever.refresh()
    if expert is not None and expert != BASE:
        rt.retriever.vector_for(expert)  # NotFound for an unknown expert
    physical = physical_name(tenant, name)
    if rt.store.collection_exists(physical):
        raise Conflict(f"collection {name!r} exists")
    # The store collection first, then its record: a failed create leaves neither behind.
    rt.store.create_collection(physical, {e: rt.retriever.encoder.dim for e in rt.retriever.document_encoders})
    experts = [e for e in rt.retriever.document_encoders if e != BASE]
    try:
        info: CollectionInfo = rt.meta.add_collection(
            tenant,
            name,
            expert,
            {e: "done" for e in experts},
            {BASE: rt.retriever.encoder.base_fingerprint}
            | {e: rt.retriever.encoder.adapter_fingerprint(e) for e in experts},
        )
    except Exception:
        try:
            rt.store.delete_collection(physical)
        except Exception:
            log.warning("could not delete collection %r after its record failed to write", physical, exc_info=True)
        raise
    return info


def describe_collection(rt: Any, info: CollectionInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "tenant": info.tenant,
        "expert": info.pinned_expert,
        "documents": rt.store.count(info.physical),
        "vectors": sorted(rt.store.vector_names(info.physical)),
        "backfill": info.backfill,
        "created_at": info.created_at,
    }


def delete_collection(rt: Any, tenant: str, name: str) -> None:
    info = rt.meta.get_collection(tenant, name)
    if rt.store.collection_exists(info.physical):
        rt.store.delete_collection(info.physical)
    rt.meta.remove_collection(tenant, name)


# ---- documents ---------------------------------------------------------------------------------------------
def submit_documents(rt: Any, tenant: str, name: str, documents: Any) -> str:
    """Validate the whole request, then queue it in batches; returns the job id. Nothing is queued on a bad input,
    nor while the collection is re-encoded for another base model."""
    info = rt.meta.get_collection(tenant, name)
    check_base_vectors(rt, info)
    docs = validate_documents(documents, rt.settings.max_batch_documents)
    raw = [{"id": d.id, "title": d.title, "text": d.text, "metadata": d.metadata} for d in docs]
    batches = list(batched(raw, BATCH))
    job_id = str(rt.meta.create_job(tenant, name, [len(b) for b in batches]))
    for i, b in enumerate(batches):
        try:
            rt.queue.submit(
                "ingest_batch",
                job_id=job_id,
                batch=i,
                tenant=tenant,
                collection=name,
                documents=b,
                collection_created=info.created_at,
            )
        except QueueError as e:  # the batches not queued fail in the job's record: it ends, naming their ids
            for j in range(i, len(batches)):
                fail_batch(rt, job_id, j, batches[j], f"not queued: {e}")
            sent = f"the first {i} of its {len(batches)} batches were queued" if i else "nothing was queued"
            raise QueueError(f"{e}; {sent} (job {job_id} lists the documents that were not)") from e
    return job_id


# ---- search ------------------------------------------------------------------------------------------------
def _check_query(rt: Any, query: Any) -> str:
    if not isinstance(query, str) or not query.strip():
        raise InvalidInput("query must be a non-empty string", field="query")
    if len(query) > rt.settings.max_query_chars:
        raise InvalidInput(f"query is longer than {rt.settings.max_query_chars} characters", field="query")
    if not is_unicode(query):
        raise InvalidInput(f"query {UNICODE_HINT}", field="query")
    return query


def _store_filter(flt: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if flt is None:
        return out
    if not isinstance(flt, Mapping):
        raise InvalidInput("filter must be an object of metadata key -> value (or list of values)", field="filter")
    for k, v in flt.items():
        if not isinstance(k, str) or not FILTER_KEY_RE.fullmatch(k):
            raise InvalidInput(f"filter key {k!r} is invalid: letters, digits, '_' or '-'", field="filter")
        values = v if isinstance(v, list) else [v]
        if not values or not all(isinstance(x, str | int | bool) for x in values):
            raise InvalidInput(
                f"filter value for {k!r} must be a string, integer, boolean or a list of them", field="filter"
            )
        if not all(is_unicode(x) for x in values if isinstance(x, str)):
            raise InvalidInput(f"filter value for {k!r} {UNICODE_HINT}", field="filter")
        big = [x for x in values if isinstance(x, int) and not isinstance(x, bool) and not INT_MIN <= x <= INT_MAX]
        if big:  # named by the user's key here; the store's own check names its payload path (metadata.<key>)
            raise InvalidInput(
                f"filter value for {k!r}: {big[0]} is outside the 64-bit integers ({INT_MIN}..{INT_MAX}) a payload "
                "holds",
                field="filter",
            )
        out[f"metadata.{k}"] = v
    return out


def check_base_vectors(rt: Any, info: CollectionInfo) -> None:
    """Refuse (409) a collection whose base named vector another base model encoded (``RR_BASE_MODEL`` changed
    since), and queue its re-encoding once: its stored text is encoded again with the base model now loaded, and
    the collection answers once that is done. Experts trained on the old base are refused when loaded (those
    trained on the new one are backfilled as any replaced expert is), so there is nothing to search meanwhile. A
    record that names no base model counts as the one now loaded."""
    fp = rt.retriever.encoder.base_fingerprint
    was = info.vectors_from.get(BASE, fp)
    if was == fp:
        return
    if info.backfill.get(BASE) not in ("pending", "running"):
        log.info(
            "collection %s/%s was encoded with base model %s, not %s: re-encoding it", info.tenant, info.name, was, fp
        )
        rt.meta.set_backfill(info.tenant, info.name, BASE, "pending")
        info.backfill[BASE] = "pending"
        rt.queue.submit("backfill", tenant=info.tenant, collection=info.name, expert=BASE)
    raise Conflict(
        f"collection {info.name!r} was encoded with base model {was}, not the loaded {fp} "
        f"({rt.retriever.encoder.base_model}); it is being re-encoded, try again later"
    )


def routable_experts(rt: Any, info: CollectionInfo) -> list[str]:
    """Experts a query on this collection may go to: query-side ones, and document-side ones whose backfill is done
    with the adapter now loaded. A document-side expert replaced under its name since (``rr experts train
    --replace``, files copied in) holds the old adapter's vectors: it is backfilled anew, and routed to once done;
    so is one whose backfill failed (its task's retries ran out), at the next search that finds it so."""
    r = rt.retriever
    out: list[str] = []
    stale: list[str] = []
    for e, expert in sorted(dict(r.manifests).items()):  # one snapshot: another thread may remove an expert meanwhile
        if not expert.manifest.encodes_documents:
            out.append(e)
        elif info.backfill.get(e) == "done":
            try:
                fp = r.encoder.adapter_fingerprint(e)
            except NotFound:  # unloaded by another thread's refresh just now
                continue
            (out if info.vectors_from.get(e, fp) == fp else stale).append(e)
        elif info.backfill.get(e) == "failed":  # its retries ran out (the store was down): queued again
            stale.append(e)
        elif e not in info.backfill:
            # never encoded here: the collection predates the expert's registration in this registry (the platform
            # switched to RR_EXPERT_MODE=query+document, or the expert's files were copied in)
            stale.append(e)
    for e in stale:
        log.info(
            "backfilling expert %r on collection %s/%s (new here, replaced since, or failed before)",
            e,
            info.tenant,
            info.name,
        )
        add_vector(rt, info.physical, e)  # a collection that never had the expert has no named vector for it
        rt.meta.set_backfill(info.tenant, info.name, e, "pending")
        info.backfill[e] = "pending"
        rt.queue.submit("backfill", tenant=info.tenant, collection=info.name, expert=e)
    return out


def _named(rt: Any, info: CollectionInfo, expert: str) -> str:
    """A search's expert named in the request or pinned by its collection: refused while it is not served (404) or
    its named vector on this collection is still being (re)built (409, which queues what is stale)."""
    if expert == BASE:
        return BASE
    r = rt.retriever
    if expert not in r.experts:
        raise NotFound(f"unknown expert {expert!r} (have: {', '.join(r.experts) or 'none'}; or 'auto', 'base')")
    if expert not in routable_experts(rt, info):
        raise Conflict(f"expert {expert!r} is still being backfilled on collection {info.name!r}; try again later")
    return expert


def route(rt: Any, query: str, info: CollectionInfo | None = None) -> dict[str, Any]:
    """The expert a query would go to; on a collection, as its search would, refusing (409) while the collection is
    re-encoded for another base model."""
    _check_query(rt, query)
    if info is not None:
        check_base_vectors(rt, info)
    rt.retriever.refresh()
    lib = rt.retriever.library
    rule = lib.rule if lib is not None else None
    if info is not None and info.pinned_expert:  # as search does: a pinned collection is never routed
        return {"expert": _named(rt, info, info.pinned_expert), "rule": rule, "scores": {}, "timings": {}}
    allowed = routable_experts(rt, info) if info is not None else None
    r = rt.retriever.route(query, allowed)
    return {"expert": r.expert, "rule": rule, "scores": r.scores, "timings": r.timings}


def search(
    rt: Any,
    tenant: str,
    name: str,
    query: Any,
    top_k: int = 10,
    flt: Mapping[str, Any] | None = None,
    expert: str = "auto",
    explain: bool = False,
) -> dict[str, Any]:
    """Route (unless pinned or forced) and search. Every call, answered or refused, is counted in the metrics and
    recorded as a search event for the dashboard; neither can make the search itself fail."""
    t0 = time.perf_counter()
    try:
        out = _search(rt, tenant, name, query, top_k, flt, expert, explain, t0)
    except Exception as e:
        _observe_search(rt, tenant, name, None, t0, e)
        raise
    _observe_search(rt, tenant, name, out["route"]["expert"], t0, None)
    return out


def _observe_search(rt: Any, tenant: str, name: str, expert: str | None, t0: float, error: Exception | None) -> None:
    metrics.observe_search(expert, error is None)
    try:
        rt.events.record(
            "search",
            tenant=tenant,
            collection=name,
            expert=expert,
            ms=(time.perf_counter() - t0) * 1000,
            ok=error is None,
            error=None if error is None else type(error).__name__,
        )
    except Exception:  # the event log could not even be opened: the search still answers
        log.warning("could not record a search event", exc_info=True)


def _search(
    rt: Any,
    tenant: str,
    name: str,
    query: Any,
    top_k: int,
    flt: Mapping[str, Any] | None,
    expert: str,
    explain: bool,
    t0: float,
) -> dict[str, Any]:
    r = rt.retriever
    r.refresh()  # before the collection is read: its record then says what became of any expert refresh changed
    info = rt.meta.get_collection(tenant, name)
    _check_query(rt, query)
    check_base_vectors(rt, info)
    if not isinstance(top_k, int) or not 1 <= top_k <= rt.settings.max_top_k:
        raise InvalidInput(f"top_k must be between 1 and {rt.settings.max_top_k}", field="top_k")
    store_filter = _store_filter(flt)
    routed = expert == "auto" and not info.pinned_expert
    named = info.pinned_expert if expert == "auto" else expert  # a pinned collection searches as if it were named
    for attempt in (1, 2):
        timings: dict[str, float] = {}
        scores: dict[str, float] = {}
        if routed:
            decision = r.route(query, routable_experts(rt, info))
            chosen, scores = decision.expert, decision.scores
            timings.update(decision.timings)
        else:
            chosen = _named(rt, info, named)
        try:
            vector = r.vector_for(chosen)
            t1 = time.perf_counter()
            qvec = r.encode_query(query, chosen)
            t2 = time.perf_counter()
            hits = rt.store.search(info.physical, vector, qvec, top_k, filter=store_filter or None)
            break
        except (NotFound, InvalidInput):
            # The expert stopped being served, or its named vector went, while this request used it: an expert
            # removed or replaced by another request or process. A routed search routes once more over what is
            # served now; a named one gets the refusal it would get now (404, or 409 while it is backfilled).
            r.refresh()
            info = rt.meta.get_collection(tenant, name)
            if chosen == BASE or (chosen in r.experts and chosen in routable_experts(rt, info)):
                raise  # not a change of experts: the request's own error
            if not routed:
                _named(rt, info, chosen)
            if attempt == 2:
                raise Conflict("the experts changed twice during this search; try again") from None
            log.info("expert %r went during a search on %s/%s: routing it again", chosen, tenant, name)
    t3 = time.perf_counter()
    timings.update({"expert_pass_ms": (t2 - t1) * 1000, "search_ms": (t3 - t2) * 1000, "total_ms": (t3 - t0) * 1000})
    results = [
        {
            "id": h.doc_id,
            "score": h.score,
            "title": h.payload.get("title", ""),
            "metadata": h.payload.get("metadata", {}),
        }
        | ({"text": h.payload.get("text", "")} if explain else {})
        for h in hits
    ]
    return {
        "results": results,
        "route": {"expert": chosen, "scores": scores, "vector": vector},
        "timings": {k: round(v, 3) for k, v in timings.items()},
    }


# ---- experts -----------------------------------------------------------------------------------------------
def list_experts(rt: Any) -> list[dict[str, Any]]:
    r = rt.retriever
    r.refresh()
    pilots: dict[tuple[str, str], int] = {}  # (expert, kind) -> count
    if r.library is not None:
        for p in r.library.pilots:
            pilots[p.expert, p.kind] = pilots.get((p.expert, p.kind), 0) + 1
    return [
        {
            "name": n,
            "domain": e.manifest.domain,
            "sides": e.manifest.sides,
            "pilots": pilots.get((n, "query"), 0),  # Algorithm-1 pilots
            "corpus_pilots": pilots.get((n, "corpus"), 0),  # of the domains it leads (router.pilots)
            "scores": e.manifest.scores,
            "scoring": rt.meta.get_scoring(n),  # Algorithm 1 in the queue: None when it never ran for this expert
        }
        for n, e in sorted(r.manifests.items())
    ]


def register_expert(rt: Any, path: str, data: str | None = None) -> dict[str, Any]:
    """Add an expert: no training. Its pilot scores are computed in the queue when ``data`` names BEIR collections;
    document-side experts are backfilled into every collection, and are routed to per collection once done there."""
    from router.experts import Manifest

    for name, value in (("path", path), ("data", data)):
        if value is not None and not value.strip():  # '' would be the server's working directory
            raise InvalidInput(f"{name} must not be empty", field=name)
    src = Path(path)
    if not src.is_dir():
        raise InvalidInput(f"path {path!r} is not a directory on the server", field="path")
    if data is not None and not Path(data).is_dir():
        raise InvalidInput(f"data {data!r} is not a directory on the server", field="data")
    try:
        name = Manifest.load(src).name
    except InvalidInput as e:  # no manifest.json, or a broken one
        raise InvalidInput(str(e), field="path") from e
    rt.retriever.refresh()
    registered = rt.retriever.manifests.get(name)
    if registered is not None:
        if data is None or registered.path.resolve() != src.resolve():
            raise Conflict(
                f"expert {name!r} is registered; DELETE /experts/{name} first, or send its registry folder "
                f"{str(registered.path)!r} with data to score it again"
            )
        _check_scoring_data(rt, src, Path(data))  # scoring it again, e.g. after a failed scoring
        _queue_scoring(rt, name, data, registered_now=False)
        return {"name": name, "sides": registered.manifest.sides, "domain": registered.manifest.domain}
    if data is not None:
        _check_scoring_data(rt, src, Path(data))
    expert = rt.retriever.register(src)
    if data is not None:
        _queue_scoring(rt, expert.name, data, registered_now=True)
    if expert.manifest.encodes_documents:
        for info in rt.meta.list_collections():
            # The named vector now, not in the backfill: a worker's ingest batch that already encodes with the new
            # expert must find it (its upsert would be refused otherwise).
            add_vector(rt, info.physical, expert.name)
            rt.meta.set_backfill(info.tenant, info.name, expert.name, "pending")
            rt.queue.submit("backfill", tenant=info.tenant, collection=info.name, expert=expert.name)
    return {"name": expert.name, "sides": expert.manifest.sides, "domain": expert.manifest.domain}


def _queue_scoring(rt: Any, name: str, data: str, registered_now: bool) -> None:
    previous = rt.meta.scoring_record(name)
    token = uuid.uuid4().hex  # this request's: a copy of an older request's task still in the queue does nothing
    rt.meta.set_scoring(name, "queued", token=token)
    try:
        rt.queue.submit("score_expert", expert=name, data=data, token=token)
    except QueueError as e:
        if not registered_now:  # a scoring again that was not queued: the expert keeps its state
            if previous is None:
                rt.meta.forget_scoring(name)
            else:
                rt.meta.set_scoring(
                    name, previous["status"], previous["reason"], previous["domains"], previous.get("token")
                )
            raise
        # taken out again, so that the same request can be sent once the queue is back
        rt.retriever.unregister(name)
        rt.meta.forget_scoring(name)
        raise QueueError(f"{e}; expert {name!r} was not registered") from e


def _check_scoring_data(rt: Any, src: Path, data: Path) -> None:
    """Refuse (400, ``data``) a folder the queue could not score the expert on: Algorithm 1 scores it on the training
    queries of every domain the pilot library knows, and of its own domain when that is new. Checked before anything
    is registered (the task failed in the queue, and the expert stayed without pilots)."""
    from ingest.beir import available_splits, discover, load_qrels
    from router.experts import Manifest
    from router.pilots import PilotScores
    from router.serving import SCORES_FILE

    own = Manifest.load(src).domain
    scores = rt.retriever.registry.root / SCORES_FILE
    library = PilotScores.load(scores) if scores.is_file() else PilotScores()
    known = set(library.domains)
    try:
        folders = discover(data)
    except NotFound as e:  # a folder, but of no collection: the request's fault, not an unknown resource
        raise InvalidInput(str(e), field="data") from e
    with_train = {f.name for f in folders if "train" in available_splits(f)}
    missing = sorted(known - with_train)
    if missing:
        raise InvalidInput(
            f"data {str(data)!r} has no train split of {', '.join(map(repr, missing))}: the expert is scored on every "
            f"known domain's training queries (have: {', '.join(sorted(with_train)) or 'none'})",
            field="data",
        )
    for folder in folders:
        if folder.name in known:  # the same training queries the other experts were scored on, or a superset
            library.check_training_queries(folder.name, load_qrels(folder, "train"), str(data))
    if own not in known and own not in with_train:
        raise InvalidInput(
            f"data {str(data)!r} has no train split of the expert's own domain {own!r}, which the pilot library does "
            "not know yet: its queries and corpus join the library",
            field="data",
        )


def add_vector(rt: Any, physical: str, expert: str) -> None:
    """Give a collection the expert's named vector unless it has it (or the collection is gone)."""
    if not rt.store.collection_exists(physical) or expert in rt.store.vector_names(physical):
        return
    with contextlib.suppress(Conflict):  # another process added it meanwhile
        rt.store.add_vector(physical, expert, rt.retriever.encoder.dim)


def remove_expert(rt: Any, name: str) -> None:
    """Out of routing at once; its named vectors are dropped afterwards by the queue. Refused (Conflict) while a
    collection is pinned to it: that collection's searches would fail."""
    r = rt.retriever
    r.refresh()
    pinned = [f"{c.tenant}/{c.name}" for c in rt.meta.list_collections() if c.pinned_expert == name]
    if name in r.manifests and pinned:
        raise Conflict(
            f"expert {name!r} is pinned by collection(s) {', '.join(pinned)}; delete those collections first"
        )
    encodes_docs = name in r.manifests and r.manifests[name].manifest.encodes_documents
    r.unregister(name)
    rt.meta.forget_scoring(name)
    if encodes_docs:
        for info in rt.meta.list_collections():
            rt.meta.set_backfill(info.tenant, info.name, name, "dropping")
            rt.queue.submit("drop_vector", tenant=info.tenant, collection=info.name, expert=name)

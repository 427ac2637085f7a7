"""The operations (api/service.py) and the jobs (workers/jobs.py, workers/tasks.py) as plain functions, on the
embedded store and a queue that only records what was sent, so every step runs in the order the test says."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api import service
from core.errors import Conflict, InvalidInput, NotFound, QueueError, StoreError
from core.runtime import Runtime
from router.serving import PILOTS_FILE, SCORES_FILE
from store.edge import EdgeStore
from store.meta import META, physical_name
from tests.platform_fixtures import build_pilot_scores, make_settings
from workers.jobs import run_backfill, run_drop_vector, run_ingest_batch

DOCS: list[dict[str, Any]] = [
    {"id": "a1", "title": "wing flow", "text": "flow over the wing at supersonic mach"},
    {"id": "a2", "title": "shock layer", "text": "shock and boundary layer on a plate"},
    {"id": "b1", "title": "protein gene", "text": "the protein binds the gene in the cell"},
]


class RecordingQueue:
    """Keeps what was submitted; the test runs the jobs itself."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.later: list[tuple[str, float, dict[str, Any]]] = []

    def submit(self, task: str, **kwargs: Any) -> None:
        self.sent.append((task, kwargs))

    def submit_later(self, task: str, delay_s: float, **kwargs: Any) -> None:
        self.later.append((task, delay_s, kwargs))

    def depth(self) -> int:
        return len(self.sent)

    def workers(self, timeout: float = 0.5) -> int:
        return 0

    def join(self, timeout: float | None = None) -> bool:
        return True

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def bio_scores(tiny_model: Path, beir_root: Path, tiny_experts: dict[str, Path]) -> Any:
    return build_pilot_scores(tiny_model, beir_root, {"bio": tiny_experts["bio"]})


def make_rt(
    tiny_model: Path, tiny_experts: dict[str, Path], bio_scores: Any, root: Path, store: Any = None, queue: Any = None
) -> Runtime:
    """A runtime serving the query-side 'bio' expert; 'aero' (query+document) is left to register."""
    settings = make_settings(tiny_model, root)
    reg = Path(settings.experts_dir) / "query"
    reg.mkdir(parents=True)
    shutil.copytree(tiny_experts["bio"], reg / "bio")
    bio_scores.save(reg / SCORES_FILE)
    bio_scores.build(["bio"]).save(reg / PILOTS_FILE)
    return Runtime(settings, store=store, queue=queue or RecordingQueue())


@pytest.fixture
def rt(tiny_model: Path, tiny_experts: dict[str, Path], bio_scores: Any, tmp_path: Path) -> Iterator[Runtime]:
    runtime = make_rt(tiny_model, tiny_experts, bio_scores, tmp_path)
    yield runtime
    runtime.close()


def ingest(rt: Runtime, tenant: str, name: str, docs: list[dict[str, Any]]) -> int:
    job_id = rt.meta.create_job(tenant, name, [len(docs)])
    n = run_ingest_batch(rt, job_id, 0, tenant, name, docs)
    assert rt.meta.get_job(job_id).status == "done"
    return n


def vectors_of(rt: Runtime, physical: str, ids: list[str]) -> dict[str, set[str]]:
    return {p.doc_id: set(p.vectors or {}) for p in rt.store.retrieve(physical, ids, with_vectors=True)}


# ---- 1. an ingest batch right after a query+document expert was registered --------------------------------------
def test_an_ingest_batch_after_registering_a_document_expert_stores_its_vector(
    rt: Runtime, tiny_experts: dict[str, Path]
) -> None:
    service.create_tenant(rt, "acme")
    info = service.create_collection(rt, "acme", "docs")
    service.register_expert(rt, str(tiny_experts["aero"]))
    assert "aero" in rt.store.vector_names(info.physical)  # at once, not only in the backfill
    assert rt.meta.get_collection("acme", "docs").backfill["aero"] == "pending"
    assert ingest(rt, "acme", "docs", DOCS) == 3  # the batch encodes with 'aero' too, and is stored
    assert vectors_of(rt, info.physical, ["a1", "a2", "b1"]) == {d["id"]: {"base", "aero"} for d in DOCS}
    assert rt.queue.sent == [("backfill", {"tenant": "acme", "collection": "docs", "expert": "aero"})]
    assert run_backfill(rt, "acme", "docs", "aero") == 3
    assert rt.meta.get_collection("acme", "docs").backfill["aero"] == "done"


class RegisterDuringUpsert(EdgeStore):
    """Registers 'aero' and runs its backfill while an ingest batch, encoded without it, is being written."""

    target = ""
    expert: Path | None = None
    rt: Runtime | None = None

    def upsert(self, name: str, points: Any) -> None:
        if name == self.target and self.expert is not None and self.rt is not None:
            expert, self.expert = self.expert, None
            service.register_expert(self.rt, str(expert))
            assert run_backfill(self.rt, "acme", "docs", "aero") == 0  # the batch's documents are not there yet
        super().upsert(name, points)


def test_an_ingest_batch_that_raced_a_registration_gets_the_new_vector(
    tiny_model: Path, tiny_experts: dict[str, Path], bio_scores: Any, tmp_path: Path
) -> None:
    store = RegisterDuringUpsert(tmp_path / "data" / "qdrant-edge")
    rt = make_rt(tiny_model, tiny_experts, bio_scores, tmp_path, store=store)
    try:
        service.create_tenant(rt, "acme")
        info = service.create_collection(rt, "acme", "docs")
        store.target, store.expert, store.rt = info.physical, tiny_experts["aero"], rt
        assert ingest(rt, "acme", "docs", DOCS) == 3
        assert store.expert is None  # the registration did happen mid-batch
        assert vectors_of(rt, info.physical, ["a1", "a2", "b1"]) == {d["id"]: {"base", "aero"} for d in DOCS}
        hits = rt.store.search(info.physical, "aero", rt.retriever.encode_query("wing flow", "aero"), 3)
        assert len(hits) == 3
    finally:
        rt.close()


class ResendDuringBackfill(EdgeStore):
    """A document re-sent (new text, every vector) while the backfill's batch holding it is being written."""

    resend: dict[str, Any] | None = None
    rt: Runtime | None = None

    def update_vectors(self, name: str, vectors: Any) -> None:
        if self.resend is not None and self.rt is not None and self.resend["id"] in vectors:
            doc, self.resend = self.resend, None
            ingest(self.rt, "acme", "docs", [doc])  # encoded from the new text with every encoder, 'aero' too
        super().update_vectors(name, vectors)


def test_a_document_re_sent_during_a_backfill_keeps_the_vector_of_its_new_text(
    tiny_model: Path, tiny_experts: dict[str, Path], bio_scores: Any, tmp_path: Path
) -> None:
    import numpy as np

    store = ResendDuringBackfill(tmp_path / "data" / "qdrant-edge")
    rt = make_rt(tiny_model, tiny_experts, bio_scores, tmp_path, store=store)
    try:
        service.create_tenant(rt, "acme")
        info = service.create_collection(rt, "acme", "docs")
        ingest(rt, "acme", "docs", DOCS)
        service.register_expert(rt, str(tiny_experts["aero"]))
        new = {"id": "a1", "title": "protein gene", "text": "the gene of the cell binds a protein"}
        store.resend, store.rt = new, rt
        assert run_backfill(rt, "acme", "docs", "aero") == 3
        assert store.resend is None  # the re-send did happen mid-backfill
        (point,) = rt.store.retrieve(info.physical, ["a1"], with_vectors=True)
        assert point.payload["text"] == new["text"]
        want = rt.retriever.encode_documents([f"{new['title']} {new['text']}"], ["aero"])["aero"][0]
        got = np.asarray(point.vectors["aero"])
        assert float(got @ want / np.linalg.norm(want)) > 0.999  # from the new text, not the old one
    finally:
        rt.close()


# ---- 2. a backfill that keeps failing on the store ends "failed" ----------------------------------------------
class FailingBackfill(EdgeStore):
    down = True

    def update_vectors(self, name: str, vectors: Any) -> None:
        if self.down:
            raise StoreError(f"store down while updating {name!r}")
        super().update_vectors(name, vectors)


def test_a_backfill_failing_on_the_store_after_its_retries_is_marked_failed(
    tiny_model: Path, tiny_experts: dict[str, Path], bio_scores: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """...and the next search that finds it failed queues it again: once the store is back, it is routed to."""
    from core.runtime import set_runtime
    from workers import app, tasks

    monkeypatch.setattr(app.time, "sleep", lambda s: None)  # the back-off before the last retry
    store = FailingBackfill(tmp_path / "data" / "edge")
    rt = make_rt(tiny_model, tiny_experts, bio_scores, tmp_path, store=store)
    set_runtime(rt)
    try:
        service.create_tenant(rt, "acme")
        service.create_collection(rt, "acme", "docs")
        ingest(rt, "acme", "docs", DOCS)
        service.register_expert(rt, str(tiny_experts["aero"]))
        kwargs = {"tenant": "acme", "collection": "docs", "expert": "aero"}
        result = tasks.backfill.apply(kwargs=kwargs, retries=tasks.backfill.max_retries)
        assert result.get() == 0
        assert rt.meta.get_collection("acme", "docs").backfill["aero"] == "failed"
        store.down = False
        rt.queue.sent.clear()
        with pytest.raises(Conflict, match="being backfilled"):
            service.search(rt, "acme", "docs", "wing flow", expert="aero")
        assert rt.queue.sent == [("backfill", kwargs)]
        assert rt.meta.get_collection("acme", "docs").backfill["aero"] == "pending"
        assert run_backfill(rt, "acme", "docs", "aero") == len(DOCS)
        assert service.search(rt, "acme", "docs", "wing flow", expert="aero")["route"]["vector"] == "aero"
    finally:
        set_runtime(None)
        rt.close()


# ---- 3. the in-process worker waits out a retry's back-off; ingestion meets deletions and removals -----------
class FlakyUpsert(EdgeStore):
    fail = 0

    def upsert(self, name: str, points: Any) -> None:
        if self.fail and not name.startswith("_rr"):
            self.fail -= 1
            raise StoreError("store hiccup")
        super().upsert(name, points)


def test_a_retried_batch_waits_its_back_off_in_process(
    tiny_model: Path, tiny_experts: dict[str, Path], bio_scores: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.runtime import set_runtime
    from workers import app, tasks

    slept: list[float] = []
    monkeypatch.setattr(app.time, "sleep", slept.append)
    store = FlakyUpsert(tmp_path / "data" / "edge")
    rt = make_rt(tiny_model, tiny_experts, bio_scores, tmp_path, store=store)
    set_runtime(rt)
    try:
        service.create_tenant(rt, "acme")
        service.create_collection(rt, "acme", "docs")
        job_id = service.submit_documents(rt, "acme", "docs", DOCS)
        _, kwargs = rt.queue.sent[-1]
        store.fail = 2
        assert tasks.ingest_batch.apply(kwargs=kwargs).get() == len(DOCS)
        assert rt.meta.get_job(job_id).status == "done"
        # one wait before each retry, as the broker would hold the message: full jitter up to 2 s, then 4 s
        assert len(slept) == 2 and 0 <= slept[0] <= 2 and 0 <= slept[1] <= 4, slept
    finally:
        set_runtime(None)
        rt.close()


def test_a_batch_queued_for_a_deleted_collection_does_not_land_in_its_successor(rt: Runtime) -> None:
    from workers import tasks

    service.create_tenant(rt, "acme")
    service.create_collection(rt, "acme", "docs")
    job_id = service.submit_documents(rt, "acme", "docs", DOCS)
    ((_, kwargs),) = rt.queue.sent
    service.delete_collection(rt, "acme", "docs")
    info = service.create_collection(rt, "acme", "docs")  # same name, another collection
    with pytest.raises(NotFound, match="deleted since this job was queued"):
        run_ingest_batch(rt, **kwargs)
    from core.runtime import set_runtime

    set_runtime(rt)
    try:
        tasks.ingest_batch.apply(kwargs=kwargs).get()
    finally:
        set_runtime(None)
    job = rt.meta.get_job(job_id)
    assert job.status == "failed" and "deleted since" in job.errors[0]["reason"]
    assert sorted(job.errors[0]["ids"]) == sorted(d["id"] for d in DOCS)
    assert rt.store.count(info.physical) == 0
    older = {k: v for k, v in kwargs.items() if k != "collection_created"}  # a message from an older version
    assert run_ingest_batch(rt, **older) == len(DOCS)


def test_a_collection_deleted_and_made_again_while_a_batch_is_encoded_does_not_get_it(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    service.create_tenant(rt, "acme")
    service.create_collection(rt, "acme", "docs")
    service.submit_documents(rt, "acme", "docs", DOCS)
    ((_, kwargs),) = rt.queue.sent
    real_encode = rt.retriever.encode_documents
    remade: list[Any] = []

    def encode_while_the_collection_is_remade(*args: Any, **kw: Any) -> Any:
        if not remade:  # the batch passed its first check and is being encoded
            service.delete_collection(rt, "acme", "docs")
            remade.append(service.create_collection(rt, "acme", "docs"))
        return real_encode(*args, **kw)

    monkeypatch.setattr(rt.retriever, "encode_documents", encode_while_the_collection_is_remade)
    with pytest.raises(NotFound, match="deleted since this job was queued"):
        run_ingest_batch(rt, **kwargs)
    assert remade and rt.store.count(remade[0].physical) == 0  # the new collection got none of its documents


def test_a_document_expert_a_collection_never_had_is_backfilled_at_its_first_search(
    rt: Runtime, tiny_experts: dict[str, Path]
) -> None:
    """A collection made before a query+document expert was in the registry (the platform switched to
    RR_EXPERT_MODE=query+document, or the files were copied in) records no state for it: it was refused with 409
    "still being backfilled" for ever, and nothing was queued."""
    service.create_tenant(rt, "acme")
    info = service.create_collection(rt, "acme", "docs")
    ingest(rt, "acme", "docs", DOCS)
    shutil.copytree(tiny_experts["aero"], rt.retriever.registry.root / "aero")  # copied in, not registered
    rt.retriever.refresh()
    assert "aero" in rt.retriever.experts and "aero" not in rt.meta.get_collection("acme", "docs").backfill
    with pytest.raises(Conflict, match="still being backfilled"):
        service.search(rt, "acme", "docs", "wing flow", expert="aero")
    assert rt.queue.sent == [("backfill", {"tenant": "acme", "collection": "docs", "expert": "aero"})]
    assert rt.meta.get_collection("acme", "docs").backfill["aero"] == "pending"
    assert "aero" in rt.store.vector_names(info.physical)
    assert run_backfill(rt, "acme", "docs", "aero") == len(DOCS)
    res = service.search(rt, "acme", "docs", "wing flow", expert="aero")
    assert res["route"]["expert"] == "aero" and len(res["results"]) == len(DOCS)


def test_an_expert_removed_while_a_batch_is_encoded_leaves_the_batch_stored(
    rt: Runtime, tiny_experts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    service.create_tenant(rt, "acme")
    info = service.create_collection(rt, "acme", "docs")
    service.register_expert(rt, str(tiny_experts["aero"]))
    assert run_backfill(rt, "acme", "docs", "aero") == 0
    r = rt.retriever
    encode = r.encode_documents
    removed: list[str] = []

    def removing(texts: Any, encoders: Any) -> Any:  # the admin removes aero while the batch is encoded with it
        if "aero" in encoders and not removed:
            removed.append("aero")
            service.remove_expert(rt, "aero")
        return encode(texts, encoders)

    monkeypatch.setattr(r, "encode_documents", removing)
    assert ingest(rt, "acme", "docs", DOCS) == len(DOCS)
    assert removed == ["aero"]
    assert rt.store.count(info.physical) == len(DOCS)
    assert all("base" in v for v in vectors_of(rt, info.physical, [d["id"] for d in DOCS]).values())


def test_a_drop_queued_before_the_expert_was_registered_again_keeps_its_new_vectors(
    rt: Runtime, tiny_experts: dict[str, Path]
) -> None:
    service.create_tenant(rt, "acme")
    info = service.create_collection(rt, "acme", "docs")
    ingest(rt, "acme", "docs", DOCS)
    service.register_expert(rt, str(tiny_experts["aero"]))
    assert run_backfill(rt, "acme", "docs", "aero") == len(DOCS)
    service.remove_expert(rt, "aero")
    drop = [kw for task, kw in rt.queue.sent if task == "drop_vector"]
    assert drop == [{"tenant": "acme", "collection": "docs", "expert": "aero"}]
    service.register_expert(rt, str(tiny_experts["aero"]))  # again, before a worker ran the drop
    assert run_backfill(rt, "acme", "docs", "aero") == len(DOCS)  # another worker ran the new backfill first
    run_drop_vector(rt, **drop[0])
    assert "aero" in rt.store.vector_names(info.physical)
    assert rt.meta.get_collection("acme", "docs").backfill["aero"] == "done"
    assert all("aero" in v for v in vectors_of(rt, info.physical, [d["id"] for d in DOCS]).values())
    service.remove_expert(rt, "aero")  # a drop that is still due does drop
    run_drop_vector(rt, **drop[0])
    assert "aero" not in rt.store.vector_names(info.physical)


def test_a_broker_that_fails_part_way_leaves_the_queued_batches_and_fails_the_rest(
    tiny_model: Path, tiny_experts: dict[str, Path], bio_scores: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    BATCH = 2
    monkeypatch.setattr(service, "BATCH", BATCH)  # three batches within the test settings' request limit

    class TakesOne(RecordingQueue):
        def submit(self, task: str, **kwargs: Any) -> None:
            if self.sent:
                raise QueueError("the broker went away")
            super().submit(task, **kwargs)

    rt = make_rt(tiny_model, tiny_experts, bio_scores, tmp_path, queue=TakesOne())
    try:
        service.create_tenant(rt, "acme")
        service.create_collection(rt, "acme", "docs")
        docs = [{"id": f"d{i}", "text": f"document {i}"} for i in range(BATCH * 2 + 1)]
        with pytest.raises(QueueError, match="the first 1 of its 3 batches were queued"):
            service.submit_documents(rt, "acme", "docs", docs)
        ((_, kwargs),) = rt.queue.sent
        (job,) = rt.meta.list_jobs("acme")
        assert [e["ids"] for e in job.errors] == [[d["id"] for d in docs[BATCH : 2 * BATCH]], [docs[-1]["id"]]]
        assert run_ingest_batch(rt, **kwargs) == BATCH  # the queued one still lands
        assert rt.meta.get_job(job.job_id).status == "failed" and rt.meta.get_job(job.job_id).done == BATCH
    finally:
        rt.close()


def test_a_broker_that_cannot_take_a_batch_is_a_503_and_the_job_names_what_was_not_queued(
    tiny_model: Path, tiny_experts: dict[str, Path], bio_scores: Any, tmp_path: Path
) -> None:
    from core.errors import QueueError
    from workers.app import celery_app
    from workers.queue import CeleryQueue

    saved = {k: celery_app.conf[k] for k in ("broker_url", "result_backend", "task_publish_retry")}
    queue = CeleryQueue("redis://:secret@127.0.0.1:1/0")  # nothing listens on port 1
    celery_app.conf.task_publish_retry = False  # fail at once, not after the publish retries
    rt = make_rt(tiny_model, tiny_experts, bio_scores, tmp_path, queue=queue)
    try:
        service.create_tenant(rt, "acme")
        info = service.create_collection(rt, "acme", "docs")
        with pytest.raises(QueueError, match="nothing was queued") as err:
            service.submit_documents(rt, "acme", "docs", DOCS)
        assert "secret" not in str(err.value) and "127.0.0.1:1" in str(err.value)
        (job,) = rt.meta.list_jobs("acme")
        assert job.status == "failed" and sorted(job.errors[0]["ids"]) == sorted(d["id"] for d in DOCS)
        assert "not queued" in job.errors[0]["reason"]
        assert rt.store.count(info.physical) == 0
    finally:
        celery_app.conf.task_publish_retry = saved["task_publish_retry"]
        CeleryQueue(saved["broker_url"], saved["result_backend"])  # back to the broker it had, connections too
        rt.close()


def test_an_expert_whose_scoring_the_broker_cannot_take_is_not_registered(
    tiny_model: Path, tiny_experts: dict[str, Path], bio_scores: Any, beir_root: Path, tmp_path: Path
) -> None:
    from core.errors import QueueError
    from workers.app import celery_app
    from workers.queue import CeleryQueue

    saved = {k: celery_app.conf[k] for k in ("broker_url", "result_backend", "task_publish_retry")}
    queue = CeleryQueue("redis://127.0.0.1:1/0")  # nothing listens on port 1
    celery_app.conf.task_publish_retry = False
    rt = make_rt(tiny_model, tiny_experts, bio_scores, tmp_path, queue=queue)
    try:
        pilots_before = (rt.retriever.registry.root / PILOTS_FILE).read_bytes()
        with pytest.raises(QueueError, match="'aero' was not registered"):
            service.register_expert(rt, str(tiny_experts["aero"]), str(beir_root))
        # It was registered without pilots for ever (its scoring never queued): now the same request can be re-sent.
        assert "aero" not in rt.retriever.manifests and not (rt.retriever.registry.root / "aero").exists()
        assert rt.meta.get_scoring("aero") is None
        assert (rt.retriever.registry.root / PILOTS_FILE).read_bytes() == pilots_before
        back = rt._queue = RecordingQueue()  # the broker is back
        assert service.register_expert(rt, str(tiny_experts["aero"]), str(beir_root))["name"] == "aero"
        assert rt.meta.get_scoring("aero")["status"] == "queued"  # type: ignore[index]
        ((_, kwargs),) = [t for t in back.sent if t[0] == "score_expert"]
        assert kwargs["expert"] == "aero" and kwargs["data"] == str(beir_root) and kwargs["token"]
    finally:
        celery_app.conf.task_publish_retry = saved["task_publish_retry"]
        CeleryQueue(saved["broker_url"], saved["result_backend"])
        rt.close()


# ---- 4. pinned collections: removing their expert is refused, /route reports the pin ---------------------------
def test_an_expert_a_collection_is_pinned_to_cannot_be_removed(rt: Runtime) -> None:
    service.create_tenant(rt, "acme")
    service.create_collection(rt, "acme", "pinned", expert="bio")
    service.create_collection(rt, "acme", "routed")
    with pytest.raises(Conflict, match="acme/pinned") as err:
        service.remove_expert(rt, "bio")
    assert "acme/routed" not in str(err.value)
    assert "bio" in rt.retriever.experts  # still served
    res = service.search(rt, "acme", "pinned", "protein in the cell")
    assert res["route"]["expert"] == "bio"
    service.delete_collection(rt, "acme", "pinned")
    service.remove_expert(rt, "bio")
    assert "bio" not in rt.retriever.experts


def test_route_on_a_pinned_collection_reports_the_pinned_expert(rt: Runtime) -> None:
    service.create_tenant(rt, "acme")
    pinned = service.create_collection(rt, "acme", "pinned", expert="base")
    routed = service.create_collection(rt, "acme", "routed")
    assert set(service.route(rt, "protein in the cell", routed)["scores"]) == {"bio"}  # routing happens here
    r = service.route(rt, "protein in the cell", pinned)
    assert r["expert"] == "base" and r["scores"] == {}
    assert r["expert"] == service.search(rt, "acme", "pinned", "protein in the cell")["route"]["expert"]
    bio = service.create_collection(rt, "acme", "bio-only", expert="bio")
    assert service.route(rt, "supersonic wing flow", bio)["expert"] == "bio"


# ---- 5. tenant names that could make two collections share a physical name ------------------------------------
@pytest.mark.parametrize("name", ["a__b", "a___b", "a_", "a__"])
def test_a_tenant_name_that_could_collide_is_refused(rt: Runtime, name: str) -> None:
    with pytest.raises(InvalidInput, match="'__'") as err:
        service.create_tenant(rt, name)
    assert err.value.field == "name"
    assert name not in rt.meta.list_tenants()


def test_tenant_names_keep_physical_names_apart(rt: Runtime) -> None:
    service.create_tenant(rt, "a")
    service.create_tenant(rt, "a_b")
    one = service.create_collection(rt, "a", "b__c")
    two = service.create_collection(rt, "a_b", "c")
    assert one.physical != two.physical
    # A tenant made before the rule (its record written as an older version did) keeps working.
    rt.meta.create_tenant("old__t")
    old = service.create_collection(rt, "old__t", "docs")
    assert rt.store.collection_exists(old.physical) and ingest(rt, "old__t", "docs", DOCS[:1]) == 1


# ---- 6. a collection whose creation fails leaves nothing behind ------------------------------------------------
class FailingCreate(EdgeStore):
    def create_collection(self, name: str, vectors: dict[str, int]) -> None:
        if name.startswith("t_"):
            raise StoreError(f"no space left for {name!r}")
        super().create_collection(name, vectors)


class FailingRecord(EdgeStore):
    def upsert(self, name: str, points: Any) -> None:
        if name == META and any(p.payload.get("kind") == "collection" for p in points):
            raise StoreError("metadata write failed")
        super().upsert(name, points)


@pytest.mark.parametrize("store_cls", [FailingCreate, FailingRecord])
def test_a_failed_create_collection_leaves_no_half_made_collection(
    tiny_model: Path, tiny_experts: dict[str, Path], bio_scores: Any, tmp_path: Path, store_cls: type[EdgeStore]
) -> None:
    rt = make_rt(tiny_model, tiny_experts, bio_scores, tmp_path, store=store_cls(tmp_path / "data" / "edge"))
    try:
        service.create_tenant(rt, "acme")
        with pytest.raises(StoreError):
            service.create_collection(rt, "acme", "docs")
        assert rt.meta.list_collections() == []
        assert not rt.store.collection_exists(physical_name("acme", "docs"))
    finally:
        rt.close()


def test_an_expert_removed_while_it_is_scored_gets_no_scores_or_pilots_back(
    rt: Runtime, tiny_experts: dict[str, Path], beir_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from router.pilots import PilotScores
    from router.workbench import Workbench
    from workers.jobs import ExpertGone, run_score_expert

    service.register_expert(rt, str(tiny_experts["aero"]), str(beir_root))
    real_score = Workbench.score

    def removed_meanwhile(self: Workbench, ds: Any, split: str, expert: str | None) -> Any:
        if "aero" in rt.retriever.manifests:
            service.remove_expert(rt, "aero")  # DELETE /experts/aero while the queue scores it
        return real_score(self, ds, split, expert)

    monkeypatch.setattr(Workbench, "score", removed_meanwhile)
    with pytest.raises(ExpertGone, match="removed while it was scored"):
        run_score_expert(rt, "aero", str(beir_root))
    root = rt.retriever.registry.root
    assert "aero" not in PilotScores.load(root / SCORES_FILE).experts  # its column was written back before
    assert {p.expert for p in rt.retriever.library.pilots} == {"bio"}
    assert rt.meta.get_scoring("aero") is None


def test_a_scoring_keeps_what_another_wrote_into_the_pilot_scores_meanwhile(
    rt: Runtime, tiny_experts: dict[str, Path], beir_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers scoring two experts at once: the one that ends last wrote its start-time copy over the other's."""
    import numpy as np

    from router.pilots import PilotScores
    from router.workbench import Workbench
    from workers.jobs import run_score_expert

    service.register_expert(rt, str(tiny_experts["aero"]), str(beir_root))
    path = rt.retriever.registry.root / SCORES_FILE
    real_score = Workbench.score
    other = [0.5, 0.25, 0.0, 1.0]

    def another_worker_writes(self: Workbench, ds: Any, split: str, expert: str | None) -> Any:
        ps = PilotScores.load(path)
        if not np.allclose(ps.scores["bio"]["bio"], other):
            ps.set_scores("bio", "bio", other[: len(ps.domains["bio"])])
            ps.save(path)
        return real_score(self, ds, split, expert)

    monkeypatch.setattr(Workbench, "score", another_worker_writes)
    assert sorted(run_score_expert(rt, "aero", str(beir_root))) == ["aero", "bio"]
    final = PilotScores.load(path)
    assert np.allclose(final.scores["bio"]["bio"], other[: len(final.domains["bio"])])  # kept, not overwritten
    assert set(final.scores["bio"]) == {"bio", "aero"} and set(final.scores["aero"]) == {"bio", "aero"}
    assert "aero" in {p.expert for p in rt.retriever.library.pilots}
    assert rt.meta.get_scoring("aero")["status"] == "done"  # type: ignore[index]


def test_a_scoring_reports_progress_while_one_step_encodes(
    rt: Runtime, tiny_experts: dict[str, Path], beir_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Progress was recorded only after each expert was scored on a domain: one step (a document expert on a large
    corpus, vectors not cached yet) ran past the visibility timeout, and the broker's copy of the task, seeing no
    progress, scored it all again beside it (two real workers, ArguAna's corpus encoded for minutes)."""
    from router.workbench import Workbench
    from workers.jobs import run_score_expert

    assert isinstance(rt.queue, RecordingQueue)
    service.register_expert(rt, str(tiny_experts["aero"]), str(beir_root))
    ((_, task),) = [t for t in rt.queue.sent if t[0] == "score_expert"]
    in_step: list[bool] = [False]
    marks: list[bool] = []
    real_score, real_mark = Workbench.score, rt.meta.set_scoring

    def step(self: Workbench, ds: Any, split: str, expert: str | None) -> Any:
        in_step[0] = True
        try:
            return real_score(self, ds, split, expert)
        finally:
            in_step[0] = False

    def mark(name: str, status: str, *args: Any, **kwargs: Any) -> None:
        if status == "running":
            marks.append(in_step[0])
        real_mark(name, status, *args, **kwargs)

    monkeypatch.setattr(Workbench, "score", step)
    monkeypatch.setattr(rt.meta, "set_scoring", mark)
    # A lease of 0: the scoring reports at every batch the encoder finishes.
    assert sorted(run_score_expert(rt, **task, lease_s=0.0)) == ["aero", "bio"]
    assert any(marks), "no progress recorded while a step was encoding"
    assert rt.meta.get_scoring("aero")["status"] == "done"  # type: ignore[index]


def test_a_scoring_task_delivered_again_runs_only_when_its_request_is_neither_done_nor_under_way(
    rt: Runtime, tiny_experts: dict[str, Path], beir_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis delivers a task again once it has run longer than the visibility timeout (RR_TASK_VISIBILITY_TIMEOUT_S):
    scoring every corpus can. The copy scored everything a second time, beside the first, in another worker."""
    from router.workbench import Workbench
    from workers.jobs import run_score_expert

    assert isinstance(rt.queue, RecordingQueue)
    service.register_expert(rt, str(tiny_experts["aero"]), str(beir_root))
    ((_, first),) = [t for t in rt.queue.sent if t[0] == "score_expert"]
    calls = []
    real_score = Workbench.score

    def counted(self: Workbench, ds: Any, split: str, expert: str | None) -> Any:
        calls.append(expert)
        return real_score(self, ds, split, expert)

    monkeypatch.setattr(Workbench, "score", counted)
    # Under way in another worker that reported progress within the lease: the copy does nothing now, and looks
    # again in half the lease (the copy is acknowledged: were that worker to die, nothing else would come back).
    rt.meta.set_scoring("aero", "running", token=first["token"])
    assert run_score_expert(rt, **first, lease_s=900.0) == [] and calls == []
    assert rt.queue.later == [("score_expert", 450.0, first)]
    # A queue that cannot take the later look: no failure recorded over the scoring that runs elsewhere.
    taken = rt.queue.submit_later

    def refuses(*_: Any, **__: Any) -> None:
        raise QueueError("the broker went away")

    monkeypatch.setattr(rt.queue, "submit_later", refuses)
    assert run_score_expert(rt, **first, lease_s=900.0) == [] and calls == []
    assert rt.meta.get_scoring("aero")["status"] == "running"  # type: ignore[index]
    monkeypatch.setattr(rt.queue, "submit_later", taken)
    # That worker stopped reporting (it died): the copy runs.
    assert sorted(run_score_expert(rt, **first, lease_s=0.0)) == ["aero", "bio"] and calls
    assert rt.meta.get_scoring("aero")["status"] == "done"  # type: ignore[index]
    # Done: a copy delivered afterwards does nothing.
    calls.clear()
    assert run_score_expert(rt, **first, lease_s=0.0) == [] and calls == []
    assert len(rt.queue.later) == 1  # done: nothing more to look at
    # Scored again on request: the older request's copy is superseded, the new one runs.
    service.register_expert(rt, str(rt.retriever.manifests["aero"].path), str(beir_root))
    second = [k for t, k in rt.queue.sent if t == "score_expert"][-1]
    assert second["token"] != first["token"]
    assert run_score_expert(rt, **first, lease_s=0.0) == [] and calls == []
    assert sorted(run_score_expert(rt, **second, lease_s=900.0)) == ["aero", "bio"] and calls

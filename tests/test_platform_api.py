"""The platform end to end over HTTP (FastAPI TestClient), on the embedded store and the in-process worker."""

from __future__ import annotations

import gzip
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.runtime import Runtime
from router.serving import PILOTS_FILE, SCORES_FILE
from store.meta import hash_key
from tests.platform_fixtures import build_pilot_scores, make_settings
from workers.jobs import run_backfill


@pytest.fixture(scope="module")
def experts(tiny_experts: dict[str, Path]) -> dict[str, Path]:
    return tiny_experts


@pytest.fixture
def platform(
    tiny_model: Path, beir_root: Path, experts: dict[str, Path], tmp_path: Path
) -> Iterator[tuple[TestClient, Runtime]]:
    """A fresh platform with only the 'bio' expert registered (aero is added by the lifecycle test)."""
    settings = make_settings(tiny_model, tmp_path)
    reg = Path(settings.experts_dir) / "query"
    reg.mkdir(parents=True)
    shutil.copytree(experts["bio"], reg / "bio")
    ps = build_pilot_scores(tiny_model, beir_root, {"bio": experts["bio"]})
    ps.save(reg / SCORES_FILE)
    ps.build(["bio"]).save(reg / PILOTS_FILE)
    rt = Runtime(settings)
    rt.ensure_admin_key()
    client = TestClient(create_app(rt))
    yield client, rt
    rt.close()


def admin(rt: Runtime) -> dict[str, str]:
    key = (Path(rt.settings.data_dir) / "admin.key").read_text().strip()
    return {"Authorization": f"Bearer {key}"}


def tenant(client: TestClient, rt: Runtime, name: str) -> dict[str, str]:
    r = client.post("/tenants", json={"name": name}, headers=admin(rt))
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['api_key']}"}


DOCS: list[dict[str, Any]] = [
    {"id": "b1", "title": "protein gene", "text": "the protein binds the gene in the cell", "metadata": {"lang": "en"}},
    {
        "id": "b2",
        "title": "cancer drug",
        "text": "a drug dose for cancer patient in a trial",
        "metadata": {"lang": "de"},
    },
    {"id": "a1", "title": "wing flow", "text": "flow over the wing at supersonic mach", "metadata": {"lang": "en"}},
    {"id": "a2", "title": "shock layer", "text": "shock and boundary layer on a plate"},
]


def ingest(client: TestClient, rt: Runtime, h: dict[str, str], coll: str, docs: list[dict]) -> dict:  # type: ignore[type-arg]
    r = client.post(f"/collections/{coll}/documents", json={"documents": docs}, headers=h)
    assert r.status_code == 202, r.text
    assert rt.queue.join(60)
    job = client.get(f"/jobs/{r.json()['job_id']}", headers=h).json()
    return job  # type: ignore[no-any-return]


def test_health_and_auth(platform: tuple[TestClient, Runtime]) -> None:
    client, rt = platform
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/collections").status_code == 401
    assert client.get("/collections", headers={"Authorization": "Bearer nope"}).status_code == 401
    h = tenant(client, rt, "acme")
    assert client.post("/tenants", json={"name": "x"}, headers=h).status_code == 403
    assert client.get("/openapi.json").status_code == 200


def test_ingest_search_and_idempotence(platform: tuple[TestClient, Runtime]) -> None:
    client, rt = platform
    h = tenant(client, rt, "acme")
    r = client.post("/collections", json={"name": "docs"}, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["vectors"] == ["base"]
    job = ingest(client, rt, h, "docs", DOCS)
    assert job["status"] == "done" and job["done"] == job["total"] == 4, job
    assert client.get("/collections/docs", headers=h).json()["documents"] == 4
    again = ingest(client, rt, h, "docs", DOCS[:2])
    assert again["status"] == "done"
    assert client.get("/collections/docs", headers=h).json()["documents"] == 4  # re-sending changes no counts
    res = client.post("/collections/docs/search", json={"query": "protein in the cell", "top_k": 3}, headers=h).json()
    assert res["route"]["expert"] in ("bio", "base") and len(res["results"]) == 3
    assert {"base_pass_ms", "expert_pass_ms", "search_ms", "total_ms"} <= set(res["timings"])
    flt = client.post("/collections/docs/search", json={"query": "flow", "filter": {"lang": "de"}}, headers=h).json()
    assert [x["id"] for x in flt["results"]] == ["b2"]
    forced = client.post(
        "/collections/docs/search", json={"query": "wing", "expert": "base", "explain": True}, headers=h
    ).json()
    assert forced["route"]["expert"] == "base" and "text" in forced["results"][0]
    routed = client.post("/route", json={"query": "protein gene"}, headers=h).json()
    assert set(routed["scores"]) == {"bio"}
    assert routed["rule"] == rt.retriever.library.rule  # the rule pilots.json records


def test_tenant_isolation(platform: tuple[TestClient, Runtime]) -> None:
    client, rt = platform
    a, b = tenant(client, rt, "a"), tenant(client, rt, "b")
    client.post("/collections", json={"name": "secret"}, headers=a)
    job_id = client.post("/collections/secret/documents", json={"documents": DOCS[:1]}, headers=a).json()["job_id"]
    rt.queue.join(60)
    assert [c["name"] for c in client.get("/collections", headers=b).json()] == []
    assert client.get("/collections/secret", headers=b).status_code == 404
    assert client.post("/collections/secret/search", json={"query": "x"}, headers=b).status_code == 404
    assert client.post("/collections/secret/documents", json={"documents": DOCS[:1]}, headers=b).status_code == 404
    assert client.get(f"/jobs/{job_id}", headers=b).status_code == 404
    assert client.delete("/collections/secret", headers=b).status_code == 404
    assert client.get(f"/jobs/{job_id}", headers=a).json()["status"] == "done"
    assert client.get("/jobs", headers=b).json() == []  # the list too shows a tenant its own jobs only
    mine = client.get("/jobs", headers=a).json()
    assert [(j["job_id"], j["tenant"], j["collection"], j["status"]) for j in mine] == [(job_id, "a", "secret", "done")]
    assert job_id in {j["job_id"] for j in client.get("/jobs", headers=admin(rt)).json()}  # the admin sees all
    # b may use the same collection name without touching a's
    assert client.post("/collections", json={"name": "secret"}, headers=b).status_code == 201
    assert client.get("/collections/secret", headers=b).json()["documents"] == 0
    assert client.get("/collections/secret", headers=a).json()["documents"] == 1


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/collections/nope/search", {"query": "x"}, 404, None),
        ("/collections/docs/search", {"query": "   "}, 400, "query"),
        ("/collections/docs/search", {"query": "x" * 30000}, 400, "query"),
        ("/collections/docs/search", {"query": "x", "top_k": 0}, 400, "top_k"),
        ("/collections/docs/search", {"query": "x", "expert": "nobody"}, 404, None),
        ("/collections/docs/search", {"query": "x", "filter": {"a b": 1}}, 400, "filter"),
        ("/collections/docs/documents", {"documents": [{"text": "no id"}]}, 400, "documents[0].id"),
        ("/collections/docs/documents", {"documents": [{"id": "x", "text": ""}]}, 400, "documents[0].text"),
        (
            "/collections/docs/documents",
            {"documents": [{"id": str(i), "text": "t"} for i in range(21)]},
            400,
            "documents",
        ),
        ("/collections/docs/documents", {"documents": []}, 400, "documents"),
        ("/collections", {"name": "Bad Name!"}, 400, "name"),
        ("/collections", {"name": "docs2\n"}, 400, "name"),  # "$" alone would let a trailing newline through
        ("/collections/docs/search", {"query": "x", "filter": {"lang\n": "en"}}, 400, "filter"),
        ("/collections/docs/search", {"query": "x \ud800"}, 400, "query"),  # a lone surrogate: was a 500
        ("/collections/docs/documents", {"documents": [{"id": "x", "text": "a \udfff"}]}, 400, "documents[0].text"),
        ("/collections/docs/documents", {"documents": [{"id": "x\ud800", "text": "t"}]}, 400, "documents[0].id"),
        (
            "/collections/docs/documents",
            {"documents": [{"id": "x", "text": "t", "metadata": {"k": ["\ud800"]}}]},
            400,
            "documents[0].metadata.k[0]",
        ),
        ("/collections/docs/search", {"query": "x", "filter": {"n": 2**63}}, 400, "filter"),  # was a 500
        ("/collections/docs/search", {"query": "x", "filter": {"n": [1, -(2**63) - 1]}}, 400, "filter"),
        (
            "/collections/docs/documents",
            {"documents": [{"id": "x", "text": "t", "metadata": {"n": {"m": [2**64]}}}]},
            400,
            "documents[0].metadata.n.m[0]",
        ),
        ("/collections/docs/search", {"query": "x", "filter": {"k": "\ud800"}}, 400, "filter"),  # was a 500
        ("/collections/docs/search", {"query": "x", "filter": {"k": ["a", "\udfff"]}}, 400, "filter"),
        ("/route", {"query": "x", "collection": "\ud800"}, 404, None),  # was a 503 naming the metadata
        (
            "/collections/docs/documents",
            {"documents": [{"id": "x", "titel": "t", "text": "t"}]},
            400,
            "documents[0].titel",
        ),
        (
            "/collections/docs/documents",
            {"documents": [{"id": "x", "title": " ", "text": " "}]},
            400,
            "documents[0].text",
        ),
        ("/collections", {"name": "pinned", "expert": "nobody"}, 404, None),
        ("/collections/docs/search", {"query": "x", "limit": 3}, 422, "limit"),  # the field is top_k
        ("/collections", {"name": "other", "pin": "base"}, 422, "pin"),
    ],
)
def test_bad_input_names_the_field(
    platform: tuple[TestClient, Runtime],
    path: str,
    body: dict,
    status: int,  # type: ignore[type-arg]
    field: str | None,
) -> None:
    client, rt = platform
    h = tenant(client, rt, "acme")
    client.post("/collections", json={"name": "docs"}, headers=h)
    # sent as JSON text with its \u escapes, as a client would: httpx will not encode a lone surrogate itself
    r = client.post(path, content=json.dumps(body), headers=h | {"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    assert r.json()["detail"]
    if field is not None:
        assert r.json()["field"] == field
    assert client.get("/collections/docs", headers=h).json()["documents"] == 0  # nothing half-landed


def test_a_filter_refusal_names_the_key_as_sent(platform: tuple[TestClient, Runtime]) -> None:
    client, rt = platform
    h = tenant(client, rt, "acme")
    client.post("/collections", json={"name": "docs"}, headers=h)
    r = client.post("/collections/docs/search", json={"query": "x", "filter": {"n": [1, 2**63]}}, headers=h)
    assert r.status_code == 400 and r.json()["field"] == "filter", r.text
    assert "'n'" in r.json()["detail"] and "metadata" not in r.json()["detail"], r.text  # was 'metadata.n'


def test_expert_lifecycle_backfill_and_removal(
    platform: tuple[TestClient, Runtime], experts: dict[str, Path], beir_root: Path
) -> None:
    client, rt = platform
    h = tenant(client, rt, "acme")
    client.post("/collections", json={"name": "docs"}, headers=h)
    ingest(client, rt, h, "docs", DOCS)
    r = client.post("/experts", json={"path": str(experts["aero"]), "data": str(beir_root)}, headers=admin(rt))
    assert r.status_code == 201, r.text
    # Until its backfill is done the new document-side expert is not routed to, and searches keep answering.
    before = client.get("/collections/docs", headers=h).json()
    assert before["backfill"]["aero"] in ("pending", "running", "done")
    res = client.post("/collections/docs/search", json={"query": "supersonic wing flow"}, headers=h)
    assert res.status_code == 200, res.text
    # Read once the search has answered: the worker may finish the backfill during it (read before, this raced).
    if client.get("/collections/docs", headers=h).json()["backfill"]["aero"] != "done":  # not done all along
        assert "aero" not in res.json()["route"]["scores"]
    assert rt.queue.join(120)
    after = client.get("/collections/docs", headers=h).json()
    assert after["backfill"]["aero"] == "done" and "aero" in after["vectors"], after
    assert after["documents"] == 4
    names = {e["name"]: e for e in client.get("/experts", headers=h).json()}
    assert names["aero"]["sides"] == "query+document" and names["aero"]["pilots"] >= 1
    forced = client.post("/collections/docs/search", json={"query": "shock layer", "expert": "aero"}, headers=h).json()
    assert forced["route"]["vector"] == "aero" and len(forced["results"]) == 4
    routed = client.post("/route", json={"query": "supersonic wing flow", "collection": "docs"}, headers=h).json()
    assert "aero" in routed["scores"] and set(routed["scores"]) <= {"bio", "aero"}
    # Removing it takes it out of routing at once; its vectors go afterwards.
    assert client.delete("/experts/aero", headers=admin(rt)).status_code == 204
    routed = client.post("/route", json={"query": "supersonic wing flow", "collection": "docs"}, headers=h).json()
    assert "aero" not in routed["scores"]
    assert client.post("/collections/docs/search", json={"query": "x", "expert": "aero"}, headers=h).status_code == 404
    assert rt.queue.join(60)
    final = client.get("/collections/docs", headers=h).json()
    assert "aero" not in final["vectors"] and "aero" not in final["backfill"]
    assert client.post("/collections/docs/search", json={"query": "shock"}, headers=h).status_code == 200


def test_a_document_expert_replaced_under_its_name_is_backfilled_anew(
    platform: tuple[TestClient, Runtime], experts: dict[str, Path], beir_root: Path, tmp_path: Path
) -> None:
    import numpy as np

    from ingest.beir import Document
    from router.experts import ExpertRegistry
    from tests.platform_fixtures import perturbed_expert

    client, rt = platform
    h = tenant(client, rt, "acme")
    client.post("/collections", json={"name": "docs"}, headers=h)
    ingest(client, rt, h, "docs", DOCS)
    body = {"path": str(experts["aero"]), "data": str(beir_root)}
    assert client.post("/experts", json=body, headers=admin(rt)).status_code == 201
    assert rt.queue.join(120)
    physical = rt.meta.get_collection("acme", "docs").physical
    texts = [Document(d["id"], d["title"], d["text"]).full_text for d in DOCS]

    def stored() -> np.ndarray:  # aero's document vectors as the collection holds them, in DOCS order
        pts = {p.doc_id: p for p in rt.store.retrieve(physical, [d["id"] for d in DOCS], with_vectors=True)}
        return np.array([pts[d["id"]].vectors["aero"] for d in DOCS])  # type: ignore[index]

    def loaded() -> np.ndarray:  # what the aero adapter loaded now makes of the same documents
        return rt.retriever.encode_documents(texts, ["aero"])["aero"]

    old = stored()
    np.testing.assert_allclose(old, loaded(), atol=1e-5)
    query = {"query": "supersonic wing flow"}
    assert "aero" in client.post("/collections/docs/search", json=query, headers=h).json()["route"]["scores"]
    for pinned in ("pinned-search", "pinned-route"):  # collections pinned to aero are never routed, but go stale too
        assert client.post("/collections", json={"name": pinned, "expert": "aero"}, headers=h).status_code == 201
        ingest(client, rt, h, pinned, DOCS)

    # replaced under its name the way `rr experts train --replace` does, behind the running platform's back
    new = perturbed_expert(experts["aero"], tmp_path / "replacement" / "aero", 0.5)
    ExpertRegistry(rt.retriever.registry.root).add(new, replace=True)
    res = client.post("/collections/docs/search", json=query, headers=h)
    assert res.status_code == 200, res.text
    assert "aero" not in res.json()["route"]["scores"]  # its stored vectors are the old adapter's: not routed to
    # a pinned collection is refused until its aero vectors are the new adapter's, and that is queued, as a forced
    # expert's search is (it answered with the new adapter's queries against the old one's documents)
    stale = client.post("/collections/pinned-search/search", json=query, headers=h)
    assert stale.status_code == 409 and "backfilled" in stale.json()["detail"], stale.text
    routed = client.post("/route", json={**query, "collection": "pinned-route"}, headers=h)
    assert routed.status_code == 409 and "backfilled" in routed.json()["detail"], routed.text
    assert client.get("/collections/docs", headers=h).json()["backfill"]["aero"] in ("pending", "running", "done")
    assert rt.queue.join(120)
    after = client.get("/collections/docs", headers=h).json()
    assert after["backfill"]["aero"] == "done" and after["documents"] == len(DOCS)
    assert not np.allclose(stored(), old, atol=1e-3)
    np.testing.assert_allclose(stored(), loaded(), atol=1e-5)  # every document now has the new adapter's vector
    assert "aero" in client.post("/collections/docs/search", json=query, headers=h).json()["route"]["scores"]
    assert rt.meta.get_collection("acme", "docs").backfill["aero"] == "done"  # no second backfill was queued
    for pinned in ("pinned-search", "pinned-route"):
        assert rt.meta.get_collection("acme", pinned).backfill["aero"] == "done"
        res = client.post(f"/collections/{pinned}/search", json=query, headers=h)
        assert res.status_code == 200 and res.json()["route"]["vector"] == "aero", res.text
        routed = client.post("/route", json={**query, "collection": pinned}, headers=h)
        assert routed.status_code == 200 and routed.json()["expert"] == "aero", routed.text
        pts = rt.store.retrieve(rt.meta.get_collection("acme", pinned).physical, [d["id"] for d in DOCS], True)
        got = {p.doc_id: p.vectors["aero"] for p in pts}  # type: ignore[index]
        np.testing.assert_allclose(np.array([got[d["id"]] for d in DOCS]), loaded(), atol=1e-5)
    # one queued twice anyway (two API processes finding it stale at once) finds the work done and skips it
    assert run_backfill(rt, "acme", "docs", "aero") == 0


def test_an_expert_removed_during_a_search_is_routed_around(
    platform: tuple[TestClient, Runtime], experts: dict[str, Path], beir_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another request removes the expert a search is using. A routed search routes again over the experts left; a
    search that named the expert gets the 404 it would get now, not a store error naming the physical collection."""
    from api import service

    client, rt = platform
    h = tenant(client, rt, "acme")
    client.post("/collections", json={"name": "docs"}, headers=h)
    ingest(client, rt, h, "docs", DOCS)

    def add_aero() -> None:
        body = {"path": str(experts["aero"]), "data": str(beir_root)}
        assert client.post("/experts", json=body, headers=admin(rt)).status_code == 201
        assert rt.queue.join(120)

    add_aero()
    r = rt.retriever
    query = {"query": "supersonic wing flow over the plate"}
    first = client.post("/collections/docs/search", json=query, headers=h).json()["route"]
    assert set(first["scores"]) == {"bio", "aero"}
    removed: list[str] = []
    encode = r.encode_query

    def removing(text: str, expert: str) -> Any:  # the routed expert goes between routing and its query pass
        if expert != "base" and not removed:
            removed.append(expert)
            service.remove_expert(rt, expert)
        return encode(text, expert)

    monkeypatch.setattr(r, "encode_query", removing)
    res = client.post("/collections/docs/search", json=query, headers=h)
    assert res.status_code == 200, res.text
    assert removed == [first["expert"]]
    assert res.json()["route"]["expert"] != removed[0] and removed[0] not in res.json()["route"]["scores"]
    assert len(res.json()["results"]) == len(DOCS)
    monkeypatch.undo()

    # aero named, and its named vector dropped (the queue's drop_vector) while the search is at the store
    if "aero" not in r.experts:
        add_aero()
    store_search = rt.store.search

    def dropping(physical: str, vector: str, *args: Any, **kwargs: Any) -> Any:
        if vector == "aero":
            service.remove_expert(rt, "aero")
            assert rt.queue.join(60)
            assert "aero" not in rt.store.vector_names(physical)
        return store_search(physical, vector, *args, **kwargs)

    monkeypatch.setattr(rt.store, "search", dropping)
    res = client.post("/collections/docs/search", json={**query, "expert": "aero"}, headers=h)
    assert res.status_code == 404 and "unknown expert 'aero'" in res.json()["detail"], res.text
    assert "t_acme" not in res.json()["detail"]
    monkeypatch.undo()
    assert client.post("/collections/docs/search", json=query, headers=h).status_code == 200


def test_a_registry_folder_whose_manifest_does_not_load_does_not_stop_serving(
    platform: tuple[TestClient, Runtime],
) -> None:
    client, rt = platform
    h = tenant(client, rt, "acme")
    client.post("/collections", json={"name": "docs"}, headers=h)
    ingest(client, rt, h, "docs", DOCS)
    broken = rt.retriever.registry.root / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{half-copied")  # every search answered 400 naming this file
    res = client.post("/collections/docs/search", json={"query": "protein in the cell"}, headers=h)
    assert res.status_code == 200, res.text
    assert [e["name"] for e in client.get("/experts", headers=h).json()] == ["bio"]


@pytest.mark.parametrize("width", [32, 48])
def test_a_collection_encoded_by_another_base_model_is_re_encoded(
    platform: tuple[TestClient, Runtime], tiny_model: Path, tmp_path: Path, width: int
) -> None:
    """The same width (a fine-tuned base) or another (its base vector is made anew at the new size)."""
    import numpy as np

    from ingest.beir import Document
    from router.pilots import BASE
    from tests.platform_fixtures import perturbed_model, wider_model

    client, rt = platform
    h = tenant(client, rt, "acme")
    for name in ("docs", "more", "routed"):
        client.post("/collections", json={"name": name}, headers=h)
        ingest(client, rt, h, name, DOCS)
    physical = rt.meta.get_collection("acme", "docs").physical
    texts = [Document(d["id"], d["title"], d["text"]).full_text for d in DOCS]
    rt.close()

    # the platform restarted on another base model (RR_BASE_MODEL changed), with no expert yet: one trained on the
    # old base is refused at start
    dest = tmp_path / "other-base"
    other = perturbed_model(tiny_model, dest, 0.5) if width == 32 else wider_model(tiny_model, dest, width)
    rt2 = Runtime(make_settings(other, tmp_path, experts_dir=tmp_path / "new-experts"))
    client2 = TestClient(create_app(rt2))

    def stored() -> np.ndarray:
        pts = {p.doc_id: p for p in rt2.store.retrieve(physical, [d["id"] for d in DOCS], with_vectors=True)}
        return np.array([pts[d["id"]].vectors[BASE] for d in DOCS])  # type: ignore[index]

    def loaded() -> np.ndarray:
        return rt2.retriever.encode_documents(texts, [BASE])[BASE]

    try:
        old = stored()
        assert old.shape[1] != width or not np.allclose(old, loaded(), atol=1e-3)
        query = {"query": "supersonic wing flow"}
        res = client2.post("/collections/docs/search", json=query, headers=h)
        assert res.status_code == 409 and "encoded with base model" in res.json()["detail"], res.text
        # each collection's first request finds it stale: an ingest is refused too, nothing queued against it
        more = client2.post("/collections/more/documents", json={"documents": DOCS[:1]}, headers=h)
        assert more.status_code == 409 and "being re-encoded" in more.json()["detail"], more.text
        # and routing on it, as its search would be (an answer naming an expert the search cannot use yet)
        routed = client2.post("/route", json={**query, "collection": "routed"}, headers=h)
        assert routed.status_code == 409 and "being re-encoded" in routed.json()["detail"], routed.text
        assert client2.post("/route", json=query, headers=h).status_code == 200  # no collection: nothing stale
        assert rt2.queue.join(120)
        after = client2.get("/collections/docs", headers=h).json()
        assert after["backfill"][BASE] == "done" and after["documents"] == len(DOCS)
        assert stored().shape == (len(DOCS), width)
        np.testing.assert_allclose(stored(), loaded(), atol=1e-5)  # every document re-encoded by the new base
        res = client2.post("/collections/docs/search", json=query, headers=h)
        assert res.status_code == 200 and res.json()["route"]["expert"] == BASE, res.text
        routed = client2.post("/route", json={**query, "collection": "routed"}, headers=h)
        assert routed.status_code == 200 and routed.json()["expert"] == BASE, routed.text
        assert rt2.meta.get_collection("acme", "docs").backfill[BASE] == "done"  # no second re-encoding queued
        assert run_backfill(rt2, "acme", "docs", BASE) == 0
        # a collection made under the new base is served at once
        assert client2.post("/collections", json={"name": "fresh"}, headers=h).status_code == 201
        assert client2.post("/collections/fresh/search", json=query, headers=h).status_code == 200
    finally:
        rt2.close()


def test_a_new_expert_brings_its_domain_with_its_corpus_pilots(
    platform: tuple[TestClient, Runtime], experts: dict[str, Path], beir_root: Path
) -> None:
    from router.pilots import PilotScores

    client, rt = platform
    reg = Path(rt.settings.experts_dir) / "query"
    ps = PilotScores.load(reg / SCORES_FILE)
    ps.remove_domain("aero")  # the library knows only bio's training queries
    ps.save(reg / SCORES_FILE)
    r = client.post("/experts", json={"path": str(experts["aero"]), "data": str(beir_root)}, headers=admin(rt))
    assert r.status_code == 201, r.text
    assert rt.queue.join(120)
    after = PilotScores.load(reg / SCORES_FILE)
    assert "aero" in after.domains and "aero" in after.corpus and "bio" not in after.corpus
    assert int(after.corpus_sizes["aero"].sum()) == 4  # the tiny aero corpus, kept whole
    names = {e["name"]: e for e in client.get("/experts", headers=admin(rt)).json()}
    leads = [p.expert for p in rt.retriever.library.pilots if p.kind == "corpus"] if rt.retriever.library else []
    assert len(leads) == 4 and names[leads[0]]["corpus_pilots"] == 4


# (method, path as in the OpenAPI document, path sent, JSON body or None, whose key, status it must answer)
ERROR_CASES: list[tuple[str, str, str, Any, str, int]] = [
    ("get", "/collections", "/collections", None, "none", 401),
    ("post", "/collections", "/collections", None, "tenant", 422),
    ("post", "/collections", "/collections", {"name": "docs"}, "tenant", 409),
    ("post", "/collections", "/collections", {"name": "pinned", "expert": "nobody"}, "tenant", 404),
    ("get", "/collections/{name}", "/collections/nope", None, "tenant", 404),
    ("delete", "/collections/{name}", "/collections/nope", None, "tenant", 404),
    ("post", "/collections/{name}/search", "/collections/docs/search", {"query": " "}, "tenant", 400),
    ("post", "/collections/{name}/search", "/collections/docs/search", {"query": "x", "k": 1}, "tenant", 422),
    ("post", "/collections/{name}/search", "/collections/docs/search", {"query": "x", "explain": 0}, "tenant", 422),
    ("post", "/collections/{name}/search", "/collections/docs/search", {"query": "x", "top_k": "5"}, "tenant", 422),
    ("post", "/collections/{name}/search", "/collections/docs/search", {"query": "x", "top_k": 2.5}, "tenant", 422),
    (
        "post",
        "/collections/{name}/documents",
        "/collections/docs/documents",
        {"documents": [{"id": "a", "text": "t", "metadata": False}]},
        "tenant",
        400,
    ),
    (
        "post",
        "/collections/{name}/documents",
        "/collections/docs/documents",
        {"documents": [{"id": "a", "text": "t", "title": 0}]},
        "tenant",
        400,
    ),
    (
        "post",
        "/collections/{name}/documents",
        "/collections/docs/documents",
        {"documents": [{"id": "a", "text": "t"}, {"id": "a", "text": "u"}]},
        "tenant",
        400,
    ),
    ("post", "/collections/{name}/documents", "/collections/nope/documents", {"documents": [1]}, "tenant", 404),
    ("get", "/jobs/{job_id}", "/jobs/12345", None, "tenant", 404),
    ("get", "/jobs", "/jobs?status=finished", None, "tenant", 422),
    ("get", "/jobs", "/jobs?limit=0", None, "tenant", 422),
    ("get", "/jobs", "/jobs?collection=", None, "tenant", 422),  # was [] for a name no collection can have
    ("get", "/jobs", "/jobs?collection=Docs", None, "tenant", 422),
    ("get", "/jobs", "/jobs", None, "none", 401),
    ("get", "/experts", "/experts", None, "none", 401),
    ("post", "/experts", "/experts", {"path": "/nonexistent"}, "admin", 400),
    ("post", "/experts", "/experts", {"path": "/"}, "admin", 400),  # a folder without a manifest: was a 404
    ("post", "/experts", "/experts", {"path": "/nonexistent"}, "tenant", 403),
    ("delete", "/experts/{name}", "/experts/nobody", None, "admin", 404),
    ("post", "/route", "/route", {"query": ""}, "tenant", 400),
    ("post", "/route", "/route", {"query": "x", "collection": "nope"}, "tenant", 404),
    ("post", "/route", "/route", {"query": "x", "collection": ""}, "tenant", 404),  # was routed as if none
    ("post", "/tenants", "/tenants", {"name": "zz\n"}, "admin", 400),
    ("post", "/tenants", "/tenants", {"name": "a__b"}, "admin", 400),
    ("post", "/tenants", "/tenants", {"name": "acme"}, "admin", 409),
    ("get", "/tenants", "/tenants", None, "tenant", 403),
    ("post", "/tenants/{name}/keys", "/tenants/nobody/keys", None, "admin", 404),
    ("get", "/tenants/{name}/keys", "/tenants/nobody/keys", None, "admin", 404),
    ("delete", "/tenants/{name}/keys/{key_id}", "/tenants/acme/keys/000000000000", None, "admin", 404),
    ("delete", "/tenants/{name}/keys/{key_id}", "/tenants/acme/keys/000000000000", None, "tenant", 403),
    ("get", "/dashboard", "/dashboard?refresh=-1", None, "tenant", 422),
    ("get", "/dashboard/data", "/dashboard/data", None, "none", 401),
]


def test_every_error_is_documented_with_its_body(platform: tuple[TestClient, Runtime]) -> None:
    """Each error a route answers is in the OpenAPI document under its status, as an ErrorOut, and the body sent
    is one: a client generated from the document can read every error (422 included, which is not FastAPI's list)."""
    from api.schemas import ErrorOut

    client, rt = platform
    keys = {"none": {}, "admin": admin(rt), "tenant": tenant(client, rt, "acme")}
    assert client.post("/collections", json={"name": "docs"}, headers=keys["tenant"]).status_code == 201
    spec = client.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # no route documents FastAPI's 422 body
    for method, template, path, body, who, status in ERROR_CASES:
        r = client.request(method, path, json=body, headers=keys[who])
        assert r.status_code == status, (method, path, r.text)
        err = ErrorOut.model_validate(r.json())
        assert err.detail and "\n" not in err.detail.strip(), (path, err)
        documented = spec["paths"][template][method]["responses"]
        assert str(status) in documented, (method, template, status, sorted(documented))
        assert documented[str(status)]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorOut"
        }, (method, template, status)
    for operation in (op for item in spec["paths"].values() for op in item.values()):
        if "422" in operation["responses"]:
            assert "ErrorOut" in str(operation["responses"]["422"]), operation["operationId"]


def test_a_missing_body_names_the_body(platform: tuple[TestClient, Runtime]) -> None:
    client, rt = platform
    r = client.post("/tenants", headers=admin(rt))
    assert r.status_code == 422
    assert r.json() == {"detail": "body: Field required", "field": "body"}


def test_openapi_states_this_servers_limits(platform: tuple[TestClient, Runtime]) -> None:
    """The limits that are settings appear in the document as the server enforces them, and the name rules as
    patterns that accept and refuse exactly what the service does."""
    import re

    from api.service import FILTER_KEY_RE, NAME_RE, TENANT_NAME_RE

    client, rt = platform
    models = client.get("/openapi.json").json()["components"]["schemas"]
    s = rt.settings
    assert models["SearchIn"]["properties"]["top_k"]["maximum"] == s.max_top_k
    assert models["SearchIn"]["properties"]["query"]["maxLength"] == s.max_query_chars
    assert models["RouteIn"]["properties"]["query"]["maxLength"] == s.max_query_chars
    assert models["DocumentsIn"]["properties"]["documents"]["maxItems"] == s.max_batch_documents
    assert set(models["DocumentsIn"]["properties"]["documents"]["items"]["required"]) == {"id", "text"}
    document = models["DocumentsIn"]["properties"]["documents"]["items"]["properties"]
    assert {"type": "null"} in document["title"]["anyOf"] and {"type": "null"} in document["metadata"]["anyOf"]
    h = tenant(client, rt, "nulls")
    assert client.post("/collections", json={"name": "docs"}, headers=h).status_code == 201
    doc = {"id": "n1", "title": None, "text": "the protein", "metadata": None}  # null is no title, no metadata
    assert client.post("/collections/docs/documents", json={"documents": [doc]}, headers=h).status_code == 202
    r = client.post("/collections/docs/search", json={"query": "protein", "top_k": 3.0}, headers=h)  # JSON's integer
    assert r.status_code == 200, r.text
    assert models["CollectionIn"]["properties"]["name"]["pattern"] == NAME_RE.pattern
    assert models["TenantIn"]["properties"]["name"]["pattern"] == TENANT_NAME_RE.pattern
    flt = next(b for b in models["SearchIn"]["properties"]["filter"]["anyOf"] if b.get("type") == "object")
    assert flt["propertyNames"]["pattern"] == FILTER_KEY_RE.pattern
    query_rule = re.compile(models["SearchIn"]["properties"]["query"]["pattern"])
    for q in ["x", " x ", " \t\n", "\x1d", "\x85", "\u3000"]:  # blank to str.strip(), some not to ECMA's \s
        assert bool(query_rule.search(q)) is bool(q.strip()), repr(q)
    # JSON Schema's "$" is the end of the string; the service matches whole names, so both refuse "x\n"
    tenant_rule = re.compile(TENANT_NAME_RE.pattern)
    for name, ok in [("acme", True), ("a-b_c", True), ("a__b", False), ("a_", False), ("x\n", False), ("", False)]:
        assert bool(tenant_rule.fullmatch(name)) is ok, name
        r = client.post("/tenants", json={"name": name}, headers=admin(rt))
        assert (r.status_code == 201) is ok, (name, r.text)


def test_a_wrong_method_names_every_method_of_the_path(platform: tuple[TestClient, Runtime]) -> None:
    client, rt = platform
    for path, allowed in [
        ("/collections", "GET, POST"),
        ("/collections/docs", "DELETE, GET"),
        ("/experts", "GET, POST"),
        ("/tenants", "GET, POST"),
        ("/collections/docs/search", "POST"),
    ]:
        r = client.request("PUT", path, headers=admin(rt))
        assert r.status_code == 405, (path, r.text)
        assert r.headers["allow"] == allowed, path
        assert r.json()["detail"]


def test_keys_are_listed_and_revoked_by_id(platform: tuple[TestClient, Runtime]) -> None:
    client, rt = platform
    a = admin(rt)
    first = client.post("/tenants", json={"name": "acme"}, headers=a).json()
    second = client.post("/tenants/acme/keys", headers=a).json()
    assert first["key_id"] != second["key_id"] and len(first["key_id"]) == 12
    assert first["key_id"] not in first["api_key"]  # the id is of the hash, not a piece of the key
    listed = client.get("/tenants/acme/keys", headers=a).json()
    assert [k["key_id"] for k in listed] == [first["key_id"], second["key_id"]]  # oldest first
    old, new = ({"Authorization": f"Bearer {k['api_key']}"} for k in (first, second))
    assert client.get("/collections", headers=old).status_code == 200

    assert client.delete(f"/tenants/acme/keys/{first['key_id']}", headers=new).status_code == 403  # admin only
    assert client.delete(f"/tenants/acme/keys/{first['key_id']}", headers=a).status_code == 204
    assert client.get("/collections", headers=old).status_code == 401  # from the next request on
    assert client.get("/collections", headers=new).status_code == 200  # the others keep working
    assert [k["key_id"] for k in client.get("/tenants/acme/keys", headers=a).json()] == [second["key_id"]]
    r = client.delete(f"/tenants/acme/keys/{first['key_id']}", headers=a)
    assert r.status_code == 404 and second["key_id"] in r.json()["detail"]  # names the keys it has
    assert client.get("/tenants/nobody/keys", headers=a).status_code == 404

    # The admin's last key is kept; with a second one, the first can go.
    (only,) = client.get("/tenants/admin/keys", headers=a).json()
    r = client.delete(f"/tenants/admin/keys/{only['key_id']}", headers=a)
    assert r.status_code == 409 and "last admin key" in r.json()["detail"]
    spare = client.post("/tenants/admin/keys", headers=a).json()
    b = {"Authorization": f"Bearer {spare['api_key']}"}
    assert client.delete(f"/tenants/admin/keys/{only['key_id']}", headers=b).status_code == 204
    assert client.get("/tenants", headers=a).status_code == 401 and client.get("/tenants", headers=b).status_code == 200


def test_the_dashboard_cookie_holds_a_session_not_the_key(platform: tuple[TestClient, Runtime]) -> None:
    client, rt = platform
    a = admin(rt)
    made = client.post("/tenants", json={"name": "acme"}, headers=a).json()
    key, kid = made["api_key"], made["key_id"]
    form = {"Content-Type": "application/x-www-form-urlencoded"}

    r = client.post("/dashboard/login", content=f"key={key}", headers=form, follow_redirects=False)
    assert r.status_code == 303
    token = client.cookies.get("rr_dashboard_session")
    assert token and key not in token and token not in key
    assert client.get("/dashboard/data").status_code == 200
    # The token opens the dashboard only: as an API key it is unknown.
    assert client.get("/collections", headers={"Authorization": f"Bearer {token}"}).status_code == 401

    # Signing out ends the session wherever the token was copied to.
    assert client.post("/dashboard/logout", follow_redirects=False).status_code == 303
    assert client.get("/dashboard/data", headers={"Cookie": f"rr_dashboard_session={token}"}).status_code == 401

    # Revoking the key ends its sessions; another key of the tenant goes on working.
    client.cookies.clear()
    client.post("/dashboard/login", content=f"key={key}", headers=form, follow_redirects=False)
    token = client.cookies.get("rr_dashboard_session")
    assert client.get("/dashboard/data").status_code == 200
    client.post("/tenants/acme/keys", headers=a)
    assert client.delete(f"/tenants/acme/keys/{kid}", headers=a).status_code == 204
    assert client.get("/dashboard/data", headers={"Cookie": f"rr_dashboard_session={token}"}).status_code == 401

    # A session past its time is refused and deleted at the next sign-in.
    client.cookies.clear()
    admin_key = a["Authorization"].removeprefix("Bearer ")
    expired = rt.meta.create_session(admin_key, max_age_s=-1)
    assert expired and rt.meta.tenant_for_session(expired) is None
    assert client.get("/dashboard/data", headers={"Cookie": f"rr_dashboard_session={expired}"}).status_code == 401
    assert rt.meta.create_session(admin_key, 60) and rt.meta._get(f"session:{hash_key(expired)}") is None

    # A sign-in posted from another site's page is refused (no page can sign a visitor in under its own key).
    client.cookies.clear()
    r = client.post(
        "/dashboard/login",
        content=f"key={admin_key}",
        headers={**form, "Origin": "https://evil.example"},
        follow_redirects=False,
    )
    assert r.status_code == 403 and "rr_dashboard_session" not in r.cookies
    r = client.post(
        "/dashboard/login", content=f"key={admin_key}", headers={**form, "Origin": "null"}, follow_redirects=False
    )
    assert r.status_code == 403
    r = client.post(
        "/dashboard/login",
        content=f"key={admin_key}",
        headers={**form, "Origin": "http://testserver"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert client.post("/dashboard/login", content="key=nope", headers=form).status_code == 401


def test_an_expert_whose_data_lacks_a_known_domain_is_refused_before_it_is_registered(
    platform: tuple[TestClient, Runtime], experts: dict[str, Path], beir_root: Path, tmp_path: Path
) -> None:
    client, rt = platform
    partial = tmp_path / "partial"
    shutil.copytree(beir_root / "aero", partial / "aero")  # the known 'bio' domain is missing
    no_train = tmp_path / "no-train"
    shutil.copytree(beir_root, no_train)
    (no_train / "bio" / "qrels" / "train.tsv").unlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    for data, needle in ((partial, "'bio'"), (no_train, "'bio'"), (empty, "holds no BEIR collection")):
        r = client.post("/experts", json={"path": str(experts["aero"]), "data": str(data)}, headers=admin(rt))
        assert r.status_code == 400 and r.json()["field"] == "data" and needle in r.json()["detail"], r.text
        # it was a 201, and the scoring task failed in the queue: the expert registered, never routed to
        assert [e["name"] for e in client.get("/experts", headers=admin(rt)).json()] == ["bio"]
    r = client.post("/experts", json={"path": str(experts["aero"]), "data": str(beir_root)}, headers=admin(rt))
    assert r.status_code == 201, r.text


def test_a_scoring_that_fails_in_the_queue_says_why_in_the_experts_list(
    platform: tuple[TestClient, Runtime], experts: dict[str, Path], beir_root: Path, tmp_path: Path
) -> None:
    client, rt = platform
    bad = tmp_path / "bad"
    shutil.copytree(beir_root, bad)
    with (bad / "bio" / "queries.jsonl").open("a") as fh:
        fh.write("{not json\n")  # the train split is there (the check before registering passes); a line is broken
    r = client.post("/experts", json={"path": str(experts["aero"]), "data": str(bad)}, headers=admin(rt))
    assert r.status_code == 201, r.text
    assert rt.queue.join(120)
    listed = {e["name"]: e for e in client.get("/experts", headers=admin(rt)).json()}
    scoring = listed["aero"]["scoring"]
    assert scoring["status"] == "failed" and listed["aero"]["pilots"] == 0, listed["aero"]
    assert "DataFormatError" in scoring["reason"] and "queries.jsonl" in scoring["reason"], scoring
    assert listed["bio"]["scoring"] is None  # never scored by the queue: registered with its scores
    page = client.get("/dashboard", headers=admin(rt))
    assert page.status_code == 200 and 'class="chip state-failed" title="' in page.text, page.text[:200]
    # Removed and sent again with good data, it is scored; the old failure is not shown any more.
    assert client.delete("/experts/aero", headers=admin(rt)).status_code == 204
    r = client.post("/experts", json={"path": str(experts["aero"]), "data": str(beir_root)}, headers=admin(rt))
    assert r.status_code == 201, r.text
    assert rt.queue.join(120)
    aero = {e["name"]: e for e in client.get("/experts", headers=admin(rt)).json()}["aero"]
    assert aero["scoring"]["status"] == "done" and aero["scoring"]["reason"] is None, aero
    assert sorted(aero["scoring"]["domains"]) == ["aero", "bio"] and aero["pilots"] >= 1


def _renamed(expert: Path, to: Path, name: str, domain: str) -> Path:
    """A copy of an expert under another name and domain (its adapter as it is)."""
    from router.experts import Manifest

    shutil.copytree(expert, to)
    m = Manifest.load(to)
    m.name, m.domain = name, domain
    m.save(to)
    return to


def test_an_unscored_expert_does_not_break_a_new_domains_scoring_and_an_expert_can_be_scored_again(
    platform: tuple[TestClient, Runtime], experts: dict[str, Path], beir_root: Path, tmp_path: Path
) -> None:
    client, rt = platform
    a = admin(rt)
    data = tmp_path / "beir-and-chem"
    shutil.copytree(beir_root, data)
    shutil.copytree(beir_root / "bio", data / "chem")  # a domain the library does not know yet
    # Registered without data: no scores anywhere. A new domain's scoring scores every expert there, so 'aero' then
    # had a column in 'chem' only, and every later pilot build failed: the scoring, then each POST and DELETE.
    assert client.post("/experts", json={"path": str(experts["aero"])}, headers=a).status_code == 201
    chem = _renamed(experts["bio"], tmp_path / "chem", "chem", "chem")
    r = client.post("/experts", json={"path": str(chem), "data": str(data)}, headers=a)
    assert r.status_code == 201, r.text
    assert rt.queue.join(120)
    listed = {e["name"]: e for e in client.get("/experts", headers=a).json()}
    assert listed["chem"]["scoring"]["status"] == "done", listed["chem"]
    assert listed["chem"]["pilots"] >= 1 and listed["aero"]["pilots"] == 0  # aero stays out until it is scored
    assert {p.expert for p in rt.retriever.library.pilots} == {"bio", "chem"}
    assert client.delete("/experts/aero", headers=a).status_code == 204
    other = _renamed(experts["bio"], tmp_path / "other", "other", "bio")
    assert client.post("/experts", json={"path": str(other)}, headers=a).status_code == 201

    # The same expert again: a 409 that says what to do; its own registry folder with data scores it again.
    r = client.post("/experts", json={"path": str(chem), "data": str(data)}, headers=a)
    assert r.status_code == 409 and "DELETE /experts/chem" in r.json()["detail"], r.text
    own = rt.retriever.manifests["chem"].path
    assert client.post("/experts", json={"path": str(own)}, headers=a).status_code == 409  # was a 201
    shrunk = tmp_path / "shrunk"
    shutil.copytree(data, shrunk)
    corpus = shrunk / "chem" / "corpus.jsonl.gz"
    with gzip.open(corpus, "rt") as fh:
        lines = fh.readlines()
    with gzip.open(corpus, "wt") as fh:
        fh.writelines(lines[:-1])
    r = client.post("/experts", json={"path": str(own), "data": str(shrunk)}, headers=a)
    assert r.status_code == 201, r.text
    assert rt.queue.join(120)
    chem_now = {e["name"]: e for e in client.get("/experts", headers=a).json()}["chem"]
    assert chem_now["scoring"]["status"] == "failed", chem_now
    reason = chem_now["scoring"]["reason"]
    assert f"corpus of 'chem' has {len(lines) - 1} documents" in reason and str(len(lines)) in reason, reason
    assert chem_now["pilots"] >= 1  # its pilots from the first scoring stay
    r = client.post("/experts", json={"path": str(own), "data": str(data)}, headers=a)
    assert r.status_code == 201 and rt.queue.join(120)
    assert {e["name"]: e for e in client.get("/experts", headers=a).json()}["chem"]["scoring"]["status"] == "done"


def test_expert_registrations_the_queue_could_not_score_or_load_are_400s(
    platform: tuple[TestClient, Runtime], experts: dict[str, Path], beir_root: Path, tmp_path: Path
) -> None:
    client, rt = platform
    a = admin(rt)
    fewer = tmp_path / "fewer"
    shutil.copytree(beir_root, fewer)
    train = fewer / "bio" / "qrels" / "train.tsv"
    rows = train.read_text().splitlines()
    train.write_text("\n".join(rows[:2]) + "\n")  # the header and one judged query of the four
    r = client.post("/experts", json={"path": str(experts["aero"]), "data": str(fewer)}, headers=a)
    # it was a 201, then the scoring failed in the queue on a KeyError naming a query id
    assert r.status_code == 400 and r.json()["field"] == "data", r.text
    assert "'bio' lacks 3 of the 4 training queries" in r.json()["detail"], r.text
    broken = tmp_path / "broken"
    shutil.copytree(experts["aero"], broken)
    (broken / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    r = client.post("/experts", json={"path": str(broken)}, headers=a)
    assert r.status_code == 400 and r.json()["field"] == "path", r.text  # was a 500
    assert "could not be loaded" in r.json()["detail"]
    no_manifest = tmp_path / "empty-dir"
    no_manifest.mkdir()
    for path in (str(no_manifest), "", " "):
        r = client.post("/experts", json={"path": path}, headers=a)
        assert r.status_code == 400 and r.json()["field"] == "path", (path, r.text)
    assert [e["name"] for e in client.get("/experts", headers=a).json()] == ["bio"]
    assert not (rt.retriever.registry.root / "aero").exists()

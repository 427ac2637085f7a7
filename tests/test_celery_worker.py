"""A real Redis broker and a real `rr worker` process: documents go through the queue and are found by search.

The API (this process) and the worker (a subprocess) share the embedded store through its file lock
(RR_STORE_URL=embedded-shared), as `rr serve` and `rr worker` would on one machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from api.main import create_app
from core.runtime import Runtime
from router.serving import PILOTS_FILE, SCORES_FILE
from tests.platform_fixtures import build_pilot_scores, make_settings, train_tiny_expert

REDIS = os.environ.get("RR_TEST_REDIS", "redis://127.0.0.1:6379/15")

pytestmark = pytest.mark.slow


@pytest.fixture
def worker_platform(tiny_model: Path, beir_root: Path, tmp_path: Path) -> Iterator[tuple[TestClient, Runtime]]:
    try:
        r = redis.Redis.from_url(REDIS)
        r.ping()
    except redis.ConnectionError:
        pytest.fail(f"Redis is not reachable at {REDIS}: run `make services` (scripts/services.sh) first")
    r.flushdb()
    settings = make_settings(tiny_model, tmp_path, store_url="embedded-shared", broker_url=REDIS)
    reg = Path(settings.experts_dir) / "query"
    reg.mkdir(parents=True)
    expert = train_tiny_expert(tiny_model, beir_root, "bio", "query", tmp_path / "bio")
    shutil.copytree(expert, reg / "bio")
    ps = build_pilot_scores(tiny_model, beir_root, {"bio": expert})
    ps.save(reg / SCORES_FILE)
    ps.build(["bio"]).save(reg / PILOTS_FILE)
    env = {
        **os.environ,
        "RR_BASE_MODEL": str(tiny_model),
        "RR_EXPERTS_DIR": str(settings.experts_dir),
        "RR_DATA_DIR": str(settings.data_dir),
        "RR_CACHE_DIR": str(settings.cache_dir),
        "RR_BF16": "false",
        "RR_STORE_URL": "embedded-shared",
        "RR_BROKER_URL": REDIS,
        "HF_HUB_OFFLINE": "1",
    }
    log = (tmp_path / "worker.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "worker", "--loglevel", "INFO"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parent.parent,
    )
    rt = Runtime(settings)
    rt.ensure_admin_key()
    try:
        yield TestClient(create_app(rt)), rt
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        rt.close()
        r.flushdb()


def test_worker_process_ingests_and_search_finds(worker_platform: tuple[TestClient, Runtime], tmp_path: Path) -> None:
    client, rt = worker_platform
    key = (Path(rt.settings.data_dir) / "admin.key").read_text().strip()
    h = {"Authorization": f"Bearer {key}"}
    assert client.post("/collections", json={"name": "docs"}, headers=h).status_code == 201
    docs = [
        {"id": "b1", "title": "protein gene", "text": "the protein binds the gene in the cell"},
        {"id": "a1", "title": "wing flow", "text": "flow over the wing at supersonic mach"},
        {"id": "a2", "title": "shock layer", "text": "shock and boundary layer on a plate"},
    ]
    job_id = client.post("/collections/docs/documents", json={"documents": docs}, headers=h).json()["job_id"]
    deadline = time.monotonic() + 180
    job = {}
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}", headers=h).json()
        if job["status"] in ("done", "failed"):
            break
        time.sleep(0.5)
    log = (tmp_path / "worker.log").read_text()
    assert job.get("status") == "done", f"{job}\nworker log:\n{log[-3000:]}"
    assert job["done"] == 3
    assert "rr.ingest_batch" in log  # the worker process, not this one, ran the task
    res = client.post(
        "/collections/docs/search", json={"query": "supersonic wing flow", "expert": "base"}, headers=h
    ).json()
    assert {x["id"] for x in res["results"]} == {"b1", "a1", "a2"}
    # the vectors the worker stored score as this process's encoder says they should
    enc = rt.retriever.encoder
    q = enc.encode(["supersonic wing flow"])[0]
    dvecs = enc.encode([f"{d['title']} {d['text']}" for d in docs], None, "document")
    expected = {d["id"]: float(v @ q) for d, v in zip(docs, dvecs, strict=True)}
    for hit in res["results"]:
        assert hit["score"] == pytest.approx(expected[hit["id"]], abs=1e-3)
    # The dashboard sees the worker process: it answers Celery's ping, and its ingestion event (flushed by the worker
    # into the shared store) is counted here.
    deadline = time.monotonic() + 30
    while True:
        data = client.get("/dashboard/data", headers=h).json()
        if data["ingestion"]["windows"]["5m"]["documents"] == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert data["queue"]["kind"] == "celery" and data["queue"]["workers"] == 1, data["queue"]
    assert data["ingestion"]["windows"]["5m"]["documents"] == 3, data["ingestion"]
    assert [e["encoder"] for e in data["ingestion"]["encoders"]] == ["base"]

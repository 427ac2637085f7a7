"""A real Redis broker and a real `rr worker` process: documents go through the queue and are found by search.

The API (this process) and the worker (a subprocess) share the embedded store through its file lock
(RR_STORE_URL=embedded-shared), as `rr serve` and `rr worker` would on one machine.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from celery import Celery
from fastapi.testclient import TestClient

from api.main import create_app
from core.runtime import Runtime
from router.serving import PILOTS_FILE, SCORES_FILE
from tests.platform_fixtures import build_pilot_scores, make_settings, train_tiny_expert

REDIS = os.environ.get("RR_TEST_REDIS", "redis://127.0.0.1:6379/15")
ROOT = Path(__file__).resolve().parent.parent

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
    try:
        with _process([sys.executable, "-m", "cli", "worker", "--loglevel", "INFO"], env, tmp_path / "worker.log"):
            rt = Runtime(settings)
            rt.ensure_admin_key()
            try:
                yield TestClient(create_app(rt)), rt
            finally:
                rt.close()
    finally:
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


def _redis() -> None:
    try:
        redis.Redis.from_url(REDIS).ping()
    except redis.ConnectionError:
        pytest.fail(f"Redis is not reachable at {REDIS}: run `make services` (scripts/services.sh) first")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _until(proc: subprocess.Popen[bytes], ready: Callable[[], bool], log: Path, seconds: float = 120) -> None:
    """Wait until ``ready()`` holds, failing with the process's log if it exits first or the time runs out."""
    deadline = time.monotonic() + seconds
    while not ready():
        assert proc.poll() is None, f"exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"not ready after {seconds} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.5)


@contextmanager
def _process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("w") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _metrics_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RR_", "PROMETHEUS_"))}
    return {
        **env,
        "RR_DATA_DIR": str(tmp_path / "data"),
        "RR_CACHE_DIR": str(tmp_path / "cache"),
        "RR_EXPERTS_DIR": str(tmp_path / "experts"),
        "RR_BROKER_URL": REDIS,
        "RR_METRICS_DIR": str(tmp_path / "metrics"),
        "HF_HUB_OFFLINE": "1",
        **extra,
    }


def test_worker_with_a_metrics_folder_and_no_metrics_port_starts(tmp_path: Path) -> None:
    """`RR_METRICS_DIR=... rr worker`: Celery's command line imports prometheus_client (through Flower's plugin) before
    the worker imports workers.tasks, and so core.metrics; `rr worker` imports core.metrics first, so the client is in
    multiprocess mode and the worker comes up (it answers a ping) instead of failing on the mode."""
    _redis()
    redis.Redis.from_url(REDIS).flushdb()
    ping = Celery("probe", broker=REDIS).control
    log = tmp_path / "worker.log"
    with _process([sys.executable, "-m", "cli", "worker"], _metrics_env(tmp_path), log) as proc:
        _until(proc, lambda: bool(ping.ping(timeout=1.0)), log)
    redis.Redis.from_url(REDIS).flushdb()


def test_flower_starts_with_the_compose_environment(tmp_path: Path) -> None:
    """docker-compose's flower (`celery -A workers.app:celery_app flower`) with its environment: RR_METRICS_DIR and,
    as compose sets it too, PROMETHEUS_MULTIPROC_DIR naming the same folder (tests/test_compose.py checks the file).
    Flower's plugin imports prometheus_client before core.metrics can export the folder; with it set, Flower serves."""
    _redis()
    port = _free_port()
    metrics = tmp_path / "metrics"
    metrics.mkdir()  # compose's tmpfs
    env = _metrics_env(tmp_path, RR_METRICS_DIR=str(metrics), PROMETHEUS_MULTIPROC_DIR=str(metrics))
    args = [sys.executable, "-m", "celery", "-A", "workers.app:celery_app", "flower", f"--port={port}"]
    args.append("--address=127.0.0.1")
    log = tmp_path / "flower.log"

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
        except OSError:
            return False
        return True

    with _process(args, env, log) as proc:
        _until(proc, listening, log)
    assert "RRError" not in log.read_text()


def test_a_task_a_worker_holds_is_counted_as_held_not_waiting() -> None:
    """The dashboard's and /metrics' queue figures on a real Redis broker: a message a consumer has taken and not
    acknowledged (a worker running a late-acking task, or one it prefetched) leaves the queue's list for kombu's
    unacked hash; `depth` counted only the list, so a busy worker's tasks were in neither figure."""
    from workers.app import celery_app
    from workers.queue import CeleryQueue

    _redis()
    redis.Redis.from_url(REDIS).flushdb()
    saved = (celery_app.conf.broker_url, celery_app.conf.result_backend)
    q = CeleryQueue(REDIS)
    try:
        q.submit("drop_vector", tenant="acme", collection="docs", expert="gone")  # no worker listens on this db
        assert (q.depth(), q.held()) == (1, 0)
        with celery_app.connection_for_write() as conn:
            channel = conn.default_channel
            message = channel.basic_get("rr", no_ack=False)  # as a worker's consumer takes it
            assert message is not None
            assert (q.depth(), q.held()) == (0, 1)
            channel.basic_ack(message.delivery_tag)
        assert (q.depth(), q.held()) == (0, 0)
    finally:
        CeleryQueue(*saved)
        redis.Redis.from_url(REDIS).flushdb()


def test_a_task_sent_for_later_waits_its_delay() -> None:
    """A scoring's copy that finds the scoring under way in another worker asks to look again later
    (`submit_later`): on Redis, a message with its ETA; in-process, a timer."""
    from datetime import datetime

    from kombu.utils.json import loads

    from workers.app import celery_app
    from workers.queue import CeleryQueue, LocalQueue

    _redis()
    redis.Redis.from_url(REDIS).flushdb()
    saved = (celery_app.conf.broker_url, celery_app.conf.result_backend)
    q = CeleryQueue(REDIS)
    try:
        sent_at = time.time()
        q.submit_later("drop_vector", 300.0, tenant="acme", collection="docs", expert="gone")  # no worker here
        with celery_app.connection_for_write() as conn:
            message = conn.default_channel.basic_get("rr", no_ack=True)
            assert message is not None
            eta = datetime.fromisoformat(message.headers["eta"]).timestamp()
            assert 299.0 <= eta - sent_at <= 301.0 + (time.time() - sent_at)
            assert loads(message.body)[1] == {"tenant": "acme", "collection": "docs", "expert": "gone"}
    finally:
        CeleryQueue(*saved)
        redis.Redis.from_url(REDIS).flushdb()

    local = LocalQueue()
    local.close()  # no worker thread: what the timer queues stays in the queue
    local.submit_later("drop_vector", 0.3, tenant="acme", collection="docs", expert="gone")
    assert local.depth() == 0
    deadline = time.monotonic() + 10
    while local.depth() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert local.depth() == 1

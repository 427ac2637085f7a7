"""/metrics: what it exposes, and that counts add up over several processes (prometheus-client multiprocess mode)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.main import create_app
from core.runtime import Runtime
from tests.live_server import ADMIN_KEY, ROOT, bearer, ingest_and_wait, install_experts, live_server, platform_env
from tests.platform_fixtures import make_settings

DOCS = [
    {"id": "b1", "title": "protein gene", "text": "the protein binds the gene in the cell"},
    {"id": "b2", "title": "cancer drug", "text": "a drug dose for cancer patient in a trial"},
    {"id": "a1", "title": "wing flow", "text": "flow over the wing at supersonic mach"},
]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    return sum(v for (n, ls), v in found.items() if n == name and set(labels.items()) <= set(ls))


@pytest.fixture
def platform(
    tiny_model: Path, beir_root: Path, tiny_experts: dict[str, Path], tmp_path: Path
) -> Iterator[tuple[TestClient, Runtime]]:
    install_experts(tiny_model, beir_root, {"bio": tiny_experts["bio"]}, tmp_path / "experts")
    rt = Runtime(make_settings(tiny_model, tmp_path))
    rt.ensure_admin_key()
    yield TestClient(create_app(rt)), rt
    rt.close()


def test_metrics_exposes_the_platform_metrics(platform: tuple[TestClient, Runtime]) -> None:
    client, rt = platform
    h = {"Authorization": "Bearer " + (Path(rt.settings.data_dir) / "admin.key").read_text().strip()}
    before = samples(client.get("/metrics").text)  # counters are per process: compare differences
    assert client.post("/collections", json={"name": "docs"}, headers=h).status_code == 201
    assert client.post("/collections/docs/documents", json={"documents": DOCS}, headers=h).status_code == 202
    assert rt.queue.join(60)
    routed = [
        client.post("/collections/docs/search", json={"query": q}, headers=h).json()["route"]["expert"]
        for q in ("protein in the cell", "supersonic wing", "cancer drug trial")
    ]
    assert client.post("/collections/nope/search", json={"query": "x"}, headers=h).status_code == 404
    assert client.post("/collections/docs/search", json={"query": " "}, headers=h).status_code == 400
    assert client.get("/collections").status_code == 401

    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    after = samples(r.text)

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    route = "/collections/{name}/search"
    assert delta("rr_http_request_duration_seconds_count", route=route, method="POST") == 5
    assert delta("rr_http_request_duration_seconds_count", route=route, status="200") == 3
    assert delta("rr_http_request_duration_seconds_count", route="/collections", status="401") == 1
    for expert in set(routed):
        assert delta("rr_routed_expert_total", expert=expert) == routed.count(expert)
    assert delta("rr_searches_total", outcome="ok") == 3 and delta("rr_searches_total", outcome="error") == 2
    assert delta("rr_documents_ingested_total") == len(DOCS)
    assert delta("rr_encoder_batch_seconds_count", encoder="base") == 1
    assert delta("rr_errors_total", kind="NotFound", source="api") == 1
    assert delta("rr_errors_total", kind="InvalidInput", source="api") == 1
    assert delta("rr_errors_total", kind="http_401", source="api") == 1
    assert total(after, "rr_queue_depth") == 0 and total(after, "rr_queue_held") == 0
    assert not any("/collections/docs" in dict(ls).get("route", "") for _, ls in after)  # templates, not paths


SEARCHER = """
import sys
from api import service
from core.runtime import Runtime
from core.settings import get_settings

rt = Runtime(get_settings())
for _ in range(int(sys.argv[1])):
    service.search(rt, "admin", "docs", "protein in the cell")
rt.close()
"""


@pytest.mark.slow
def test_counts_add_up_across_processes(
    tiny_model: Path, beir_root: Path, tiny_experts: dict[str, Path], tmp_path: Path
) -> None:
    """N searches served by the API process plus M made by another process, which has exited by the scrape: the
    API's /metrics reports N+M, and so does its dashboard (events shared through the store)."""
    install_experts(tiny_model, beir_root, {"bio": tiny_experts["bio"]}, tmp_path / "experts")
    metrics_dir = tmp_path / "metrics"
    env = platform_env(tiny_model, tmp_path, RR_STORE_URL="embedded-shared", RR_METRICS_DIR=str(metrics_dir))
    n, m = 5, 7
    with live_server(env, tmp_path / "api.log") as base, httpx.Client(base_url=base, timeout=60) as client:
        ingest_and_wait(client, ADMIN_KEY, "docs", DOCS)
        for _ in range(n):
            r = client.post(
                "/collections/docs/search", json={"query": "protein in the cell"}, headers=bearer(ADMIN_KEY)
            )
            assert r.status_code == 200, r.text
        other = subprocess.run(
            [sys.executable, "-c", SEARCHER, str(m)], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        assert other.returncode == 0, other.stderr[-3000:]
        assert len(list(metrics_dir.glob("counter_*.db"))) >= 2  # two processes wrote their own files

        found = samples(client.get("/metrics").text)
        assert total(found, "rr_searches_total", outcome="ok") == n + m
        assert total(found, "rr_routed_expert_total") == n + m
        assert total(found, "rr_documents_ingested_total") == len(DOCS)

        data = client.get("/dashboard/data", headers=bearer(ADMIN_KEY)).json()
        assert data["search"]["windows"]["5m"]["searches"] == n + m
        assert sum(e["searches"] for e in data["experts"]) == n + m


def test_a_busy_metrics_port_is_a_clear_error() -> None:
    """`rr worker --metrics-port` on a port another process holds: an RRError naming the port and the settings, not an
    OSError traceback from the HTTP server."""
    from core.errors import RRError
    from core.metrics import start_metrics_server

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RRError, match=rf"127\.0\.0\.1:{port}\b.*--metrics-port.*RR_WORKER_METRICS_PORT") as e:
            start_metrics_server(port, "127.0.0.1")
        assert isinstance(e.value.__cause__, OSError)

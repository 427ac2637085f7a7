"""A real platform for tests: `uvicorn api.asgi:app` in a subprocess, configured only through RR_* variables.

That is the production entry point (compose runs the same module), so what these tests see is what a browser or
Prometheus sees: a separate process with its own metrics, its own event buffer and its own in-process worker.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from router.serving import PILOTS_FILE, SCORES_FILE
from tests.platform_fixtures import build_pilot_scores

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "rr_admin_test_key_0123456789"


def install_experts(tiny_model: Path, beir_root: Path, experts: dict[str, Path], experts_dir: Path) -> None:
    """Register the tiny experts (copies) with Algorithm-1 pilots, as the shipped experts/query is laid out."""
    reg = experts_dir / "query"
    reg.mkdir(parents=True)
    for name, path in experts.items():
        shutil.copytree(path, reg / name)
    ps = build_pilot_scores(tiny_model, beir_root, {n: reg / n for n in experts})
    ps.save(reg / SCORES_FILE)
    ps.build(sorted(experts)).save(reg / PILOTS_FILE)


def platform_env(tiny_model: Path, root: Path, **extra: str) -> dict[str, str]:
    """The environment of a platform process over ``root`` (experts/, data/, cache/); ``extra`` adds RR_* values."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RR_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env.update(
        {
            "RR_BASE_MODEL": str(tiny_model),
            "RR_EXPERTS_DIR": str(root / "experts"),
            "RR_DATA_DIR": str(root / "data"),
            "RR_CACHE_DIR": str(root / "cache"),
            "RR_BF16": "false",
            "RR_STORE_URL": "embedded",
            "RR_BROKER_URL": "memory://",
            "RR_ADMIN_KEY": ADMIN_KEY,
            "RR_EVENTS_FLUSH_SECONDS": "0.5",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": "1",
        }
    )
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_server(env: dict[str, str], log: Path, timeout: float = 180.0) -> Iterator[str]:
    """Start the API on a free loopback port, wait for /health, yield its base URL; stop it gracefully after."""
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.asgi:app", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the API exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
                try:
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the API did not answer within {timeout} s:\n{log.read_text()[-3000:]}")
                time.sleep(0.3)
            yield base
        finally:
            proc.terminate()  # uvicorn shuts down gracefully: the runtime closes and flushes its events
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def ingest_and_wait(client: httpx.Client, key: str, collection: str, docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Create the collection, send the documents, poll the job until it is done."""
    r = client.post("/collections", json={"name": collection}, headers=bearer(key))
    assert r.status_code == 201, r.text
    r = client.post(f"/collections/{collection}/documents", json={"documents": docs}, headers=bearer(key))
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    deadline = time.monotonic() + 120
    while True:
        job: dict[str, Any] = client.get(f"/jobs/{job_id}", headers=bearer(key)).json()
        if job["status"] in ("done", "failed"):
            assert job["status"] == "done", job
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)

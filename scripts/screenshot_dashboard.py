"""Take docs/dashboard.png: the operations dashboard of a real platform with real data, in headless Chromium.

The platform is the embedded one on the shipped experts (copied to a scratch folder, so nothing in the repository
changes) and the packaged all-MiniLM-L6-v2 base model. Two tenants get a slice of each BEIR collection under
``--data`` (sent through the API and the queue), then search it with that collection's test queries, so the routing
heat map shows real routing decisions. A last ingestion is left running so that the queue area shows progress.

    python scripts/screenshot_dashboard.py --data ../shared/data/beir --out docs/dashboard.png

Needs Debian's chromium and Playwright for Python (the dev extras); takes a few minutes on a laptop CPU.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.dashboard.browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402  (after the path insert)


def _wait_jobs(client: Any, key: str, job_ids: list[str], timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    while True:
        states = [client.get(f"/jobs/{j}", headers={"Authorization": f"Bearer {key}"}).json() for j in job_ids]
        if all(s["status"] in ("done", "failed") for s in states):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"ingestion did not finish in {timeout} s: {states}")
        time.sleep(1.0)


def _wait_started(client: Any, headers: dict[str, str], job: str, timeout: float = 600) -> dict[str, Any]:
    """Poll until the job has stored its first documents or ended; a failed job, or none of either within
    ``timeout`` seconds, stops the script (a failed batch records done=0, so waiting on ``done`` alone never ends)."""
    deadline = time.monotonic() + timeout
    while True:
        state: dict[str, Any] = client.get(f"/jobs/{job}", headers=headers).json()
        if state["status"] == "failed":
            raise SystemExit(f"the last ingestion (job {job}) failed: {state.get('errors')}")
        if state["done"] > 0 or state["status"] == "done":
            return state
        if time.monotonic() > deadline:
            raise SystemExit(f"the last ingestion (job {job}) stored nothing in {timeout:g} s: {state}")
        time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "beir")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    ap.add_argument("--docs", type=int, default=120, help="documents ingested per collection")
    ap.add_argument("--queries", type=int, default=12, help="test queries searched per collection")
    ap.add_argument("--experts", type=Path, default=ROOT / "experts" / "query", help="an expert registry with pilots")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--chromium", default=CHROMIUM)
    args = ap.parse_args()

    import httpx
    import uvicorn
    from playwright.sync_api import sync_playwright

    from api.main import create_app
    from core.runtime import Runtime
    from core.settings import Settings
    from ingest.beir import discover, iter_corpus, load_dataset
    from router.serving import PILOTS_FILE

    folders = discover(args.data)
    if not folders:
        raise SystemExit(f"no BEIR collections under {args.data}")
    if not (args.experts / PILOTS_FILE).is_file():
        raise SystemExit(f"{args.experts} has no {PILOTS_FILE}: without pilots every search goes to the base encoder")
    scratch = Path(tempfile.mkdtemp(prefix="rr-dashboard-"))
    shutil.copytree(args.experts, scratch / "experts" / "query")
    settings = Settings(  # type: ignore[call-arg]
        experts_dir=scratch / "experts", data_dir=scratch / "data", cache_dir=scratch / "cache", admin_key="rr-shot"
    )
    rt = Runtime(settings)
    rt.ensure_admin_key()
    server = uvicorn.Server(uvicorn.Config(create_app(rt), host="127.0.0.1", port=args.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{args.port}"
    while not server.started:
        time.sleep(0.1)
    admin = {"Authorization": "Bearer rr-shot"}
    try:
        with httpx.Client(base_url=base, timeout=300) as client:
            keys = {}
            for tenant in ("acme", "globex"):
                keys[tenant] = client.post("/tenants", json={"name": tenant}, headers=admin).json()["api_key"]
            owners = dict(zip([f.name for f in folders], itertools.cycle(["acme", "globex"]), strict=False))
            jobs = []
            for f in folders:
                h = {"Authorization": f"Bearer {keys[owners[f.name]]}"}
                client.post("/collections", json={"name": f.name}, headers=h).raise_for_status()
                docs = [
                    {"id": d.id, "title": d.title, "text": d.text}
                    for d in itertools.islice((d for d in iter_corpus(f) if d.text.strip()), args.docs)
                ]
                r = client.post(f"/collections/{f.name}/documents", json={"documents": docs}, headers=h)
                r.raise_for_status()
                jobs.append((keys[owners[f.name]], r.json()["job_id"]))
                print(f"queued {len(docs)} documents of {f.name} for {owners[f.name]}", flush=True)
            for key, job in jobs:
                _wait_jobs(client, key, [job])
            for f in folders:
                h = {"Authorization": f"Bearer {keys[owners[f.name]]}"}
                ds = load_dataset(f, ("test",))
                for q in itertools.islice(ds.split_queries("test").values(), args.queries):
                    client.post(f"/collections/{f.name}/search", json={"query": q}, headers=h).raise_for_status()
                client.post("/collections/missing/search", json={"query": "x"}, headers=h)  # one error each
                print(f"searched {f.name}", flush=True)
            # One more ingestion, left running, so the queue area shows a job in flight.
            f = folders[0]
            h = {"Authorization": f"Bearer {keys[owners[f.name]]}"}
            more = [
                {"id": d.id, "title": d.title, "text": d.text}
                for d in itertools.islice(iter_corpus(f), args.docs, args.docs + 320)
                if d.text.strip()
            ]
            job = client.post(f"/collections/{f.name}/documents", json={"documents": more}, headers=h).json()["job_id"]
            _wait_started(client, h, job)

            with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
                ctx = p.chromium.launch_persistent_context(
                    profile,
                    executable_path=args.chromium,
                    headless=True,
                    args=CHROMIUM_ARGS,
                    viewport={"width": 1440, "height": 1000},
                )
                page = ctx.new_page()
                page.goto(f"{base}/dashboard?refresh=0")
                page.fill("input[name=key]", "rr-shot")
                page.click("button[type=submit]")
                page.wait_for_selector("#routing svg")
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out), full_page=True)
                ctx.close()
            print(f"wrote {args.out}")
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        rt.close()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

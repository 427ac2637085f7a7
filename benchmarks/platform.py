"""`rr bench platform`: a BEIR collection through the running platform's HTTP API alone, scored like the offline bench.

Creates a collection, sends the corpus through the queue, waits for the job, searches every test query with
expert "auto", and compares nDCG@10 with the offline score of the rule the platform serves (the default mode's
default_rule in benchmarks/results/quality.json).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from api.client import checked, path_segment, wait_for_jobs
from benchmarks import checkout_commit, machine
from ingest.beir import iter_corpus, load_dataset
from router.evaluation import mean, ndcg_at_10

RESULTS = Path(__file__).resolve().parent / "results"


def run_platform_check(
    base_url: str,
    key: str,
    data: Path,
    collection: str,
    console: Console,
    batch: int = 500,
    out_dir: Path = RESULTS,
) -> dict[str, Any]:
    coll = f"/collections/{path_segment(collection, 'the collection')}"
    ds = load_dataset(data, ("test",))
    queries = ds.split_queries("test")
    docs = [{"id": d.id, "title": d.title, "text": d.text, "metadata": d.metadata} for d in iter_corpus(data)]
    # The checkout and the CPU here: the platform's own when it runs on this machine, as the README's command does.
    out: dict[str, Any] = {"commit": checkout_commit(), "machine": machine()}
    out.update({"dataset": ds.name, "documents": len(docs), "queries": len(queries)})
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=300) as c:
        if c.get(coll).status_code == 200:
            checked(c.delete(coll))
        checked(c.post("/collections", json={"name": collection}))
        t0 = time.monotonic()
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        ) as prog:
            task = prog.add_task("ingest", total=len(docs))
            jobs = [
                checked(c.post(f"{coll}/documents", json={"documents": docs[i : i + batch]}))["job_id"]
                for i in range(0, len(docs), batch)
            ]
            states = wait_for_jobs(c, jobs, lambda n: prog.update(task, completed=n), interval_s=2.0)
        out["ingest_seconds"] = round(time.monotonic() - t0, 1)
        out["job_status"] = sorted({s["status"] for s in states})
        out["stored"] = checked(c.get(coll))["documents"]
        run: dict[str, dict[str, float]] = {}
        chosen: dict[str, int] = {}
        lat = []
        for qid, text in queries.items():
            t = time.perf_counter()
            res = checked(c.post(f"{coll}/search", json={"query": text, "top_k": 11}))
            lat.append((time.perf_counter() - t) * 1000)
            hits = {h["id"]: h["score"] for h in res["results"] if h["id"] != qid}
            run[qid] = dict(list(hits.items())[:10])
            chosen[res["route"]["expert"]] = chosen.get(res["route"]["expert"], 0) + 1
    score = mean(ndcg_at_10(run, ds.qrels["test"]))
    out.update(
        {
            "ndcg@10": round(score, 4),
            "routed": chosen,
            "search_ms": {
                "p50": round(float(np.percentile(lat, 50)), 1),
                "p95": round(float(np.percentile(lat, 95)), 1),
            },
        }
    )
    q = RESULTS / "quality.json"
    if q.is_file():  # the offline score of the rule the platform serves (pilots.json records it)
        offline = json.loads(q.read_text())
        mode = offline["modes"][offline["default_mode"]]
        served = mode.get("default_rule", "router_retriever")
        ref = mode["systems"][served].get(ds.name)
        if ref is not None:
            out["offline_system"] = served
            out["offline_ndcg@10"] = ref
            out["difference"] = round(score - ref, 4)
    table = Table(title=f"platform check on {ds.name}")
    for k in ("documents", "stored", "ingest_seconds", "ndcg@10", "offline_system", "offline_ndcg@10", "difference"):
        table.add_row(k, str(out.get(k)))
    table.add_row("search p50/p95 ms", f"{out['search_ms']['p50']} / {out['search_ms']['p95']}")
    console.print(table)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"platform_{ds.name}.json").write_text(json.dumps(out, indent=2) + "\n")
    return out

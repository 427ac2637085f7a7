"""What the operations dashboard shows, as one plain dict: the page renders it and ``/dashboard/data`` returns it.

Everything is scoped to the viewer: the admin sees every tenant, a tenant only its own collections, jobs and events.
The experts and the queue's depth and workers belong to the platform and are the same for everyone.

Search and ingestion figures come from the shared event log (``store.events``), so they cover every API and worker
process; Prometheus (``/metrics``) keeps the long-term totals.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, TypeVar

from api import service
from store.meta import JobInfo

log = logging.getLogger(__name__)

WINDOWS = {"5m": 300, "60m": 3600}
SERIES_MINUTES = 60
JOBS_SHOWN = 50
FAILURES_SHOWN = 10
PING_TIMEOUT_S = 0.5

T = TypeVar("T")


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (the value below which ``q`` percent of the observations fall); None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def _r(x: float | None, digits: int = 3) -> float | None:
    return None if x is None else round(x, digits)


def _safe(what: str, fn: Callable[[], T]) -> T | None:
    """A figure the page can live without (a broker that does not answer) becomes None instead of an error page."""
    try:
        return fn()
    except Exception:
        log.warning("dashboard: could not read %s", what, exc_info=True)
        return None


def collection_label(tenant: str, name: str, admin: bool) -> str:
    """How a collection is named on the page: the admin sees whose it is."""
    return f"{tenant}/{name}" if admin else name


def dashboard_data(rt: Any, tenant: str | None) -> dict[str, Any]:
    """Everything the page shows; ``tenant`` None is the admin's view (all tenants)."""
    admin = tenant is None
    rt.events.flush()  # this process's own newest events too, not only what the others have flushed
    searches = rt.events.query("search", time.time() - WINDOWS["60m"], tenant)
    ingests = rt.events.query("ingest", time.time() - WINDOWS["60m"], tenant)
    now = time.time()
    collections = [service.describe_collection(rt, c) for c in rt.meta.list_collections(tenant)]
    experts = service.list_experts(rt)
    return {
        "generated_at": now,
        "viewer": "admin" if admin else tenant,
        "admin": admin,
        "queue": _queue(rt, tenant, admin),
        "collections": [{**c, "label": collection_label(c["tenant"], c["name"], admin)} for c in collections],
        "experts": _experts(experts, searches),
        "routing": _routing(collections, experts, searches, admin),
        "search": _search(searches, now),
        "ingestion": _ingestion(ingests, now),
    }


def _job(j: JobInfo, admin: bool) -> dict[str, Any]:
    d = asdict(j)
    d["label"] = collection_label(j.tenant, j.collection, admin)
    return d


def _queue(rt: Any, tenant: str | None, admin: bool) -> dict[str, Any]:
    q = rt.queue
    jobs = rt.meta.list_jobs(tenant, limit=JOBS_SHOWN)
    failures = [
        {
            **_job(j, admin),
            "failed_documents": sum(len(e.get("ids", [])) for e in j.errors),
            "reasons": sorted({str(e.get("reason", "unknown")) for e in j.errors}),
        }
        for j in jobs
        if j.errors or j.status == "failed"
    ]
    return {
        "kind": "in-process" if rt.settings.broker_url.startswith("memory://") else "celery",
        "depth": _safe("the queue depth", q.depth),
        "held": _safe("the tasks workers hold", q.held),
        "workers": _safe("the workers online", lambda: q.workers(PING_TIMEOUT_S)),
        "in_flight": [_job(j, admin) for j in jobs if j.status in ("queued", "running")],
        "failures": failures[:FAILURES_SHOWN],
    }


def _experts(experts: list[dict[str, Any]], searches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    answered = Counter(e.get("expert") for e in searches if e.get("ok"))
    total = sum(answered.values())
    rows = [
        {
            "name": x["name"],
            "domain": x["domain"],
            "sides": x["sides"],
            "pilots": x["pilots"],
            "scoring": x["scoring"],
            "searches": answered.get(x["name"], 0),
            "share": answered.get(x["name"], 0) / total if total else 0.0,
        }
        for x in experts
    ]
    known = {x["name"] for x in experts}
    for name in sorted(n for n in answered if n not in known and n is not None):  # base, or a removed expert
        rows.append(
            {
                "name": name,
                "domain": "no expert" if name == "base" else "removed",
                "sides": "",
                "pilots": 0,
                "scoring": None,
                "searches": answered[name],
                "share": answered[name] / total,
            }
        )
    return rows


def _routing(
    collections: list[dict[str, Any]], experts: list[dict[str, Any]], searches: list[dict[str, Any]], admin: bool
) -> dict[str, Any]:
    """Figure 6 of the paper, live: for each collection, the share of its searches each expert answered."""
    per: dict[tuple[str, str], Counter[str]] = {}
    for e in searches:
        if e.get("ok") and e.get("expert"):
            per.setdefault((e.get("tenant", ""), e.get("collection", "")), Counter())[e["expert"]] += 1
    columns = [x["name"] for x in experts]
    used = {x for c in per.values() for x in c}
    columns += sorted(used - set(columns))
    rows = []
    for c in collections:
        counts = per.get((c["tenant"], c["name"]), Counter())
        rows.append(
            {
                "collection": collection_label(c["tenant"], c["name"], admin),
                "total": sum(counts.values()),
                "counts": {x: counts.get(x, 0) for x in columns},
            }
        )
    return {"experts": columns, "rows": rows}


def _search(searches: list[dict[str, Any]], now: float) -> dict[str, Any]:
    windows = {}
    for key, seconds in WINDOWS.items():
        evs = [e for e in searches if e["t"] >= now - seconds]
        latencies = sorted(float(e["ms"]) for e in evs if e.get("ok") and e.get("ms") is not None)
        errors = sum(1 for e in evs if not e.get("ok"))
        windows[key] = {
            "searches": len(evs),
            "errors": errors,
            "error_rate": _r(errors / len(evs), 4) if evs else None,
            "qps": _r(len(evs) / seconds, 4),
            "p50_ms": _r(percentile(latencies, 50)),
            "p95_ms": _r(percentile(latencies, 95)),
            "p99_ms": _r(percentile(latencies, 99)),
        }
    per_minute = []
    for i in range(SERIES_MINUTES - 1, -1, -1):  # oldest first
        evs = [e for e in searches if now - (i + 1) * 60 <= e["t"] < now - i * 60]
        lat = sorted(float(e["ms"]) for e in evs if e.get("ok") and e.get("ms") is not None)
        per_minute.append(
            {
                "minutes_ago": i,
                "searches": len(evs),
                "errors": sum(1 for e in evs if not e.get("ok")),
                "p50_ms": _r(percentile(lat, 50)),
                "p95_ms": _r(percentile(lat, 95)),
            }
        )
    return {"windows": windows, "per_minute": per_minute}


def _ingestion(ingests: list[dict[str, Any]], now: float) -> dict[str, Any]:
    windows = {}
    for key, seconds in WINDOWS.items():
        evs = [e for e in ingests if e["t"] >= now - seconds]
        docs = sum(int(e.get("docs", 0)) for e in evs)
        windows[key] = {"batches": len(evs), "documents": docs, "docs_per_s": _r(docs / seconds, 4)}
    encoders: dict[str, dict[str, float]] = {}
    for e in ingests:
        for name, seconds in (e.get("encoders") or {}).items():
            agg = encoders.setdefault(name, {"batches": 0, "documents": 0, "seconds": 0.0})
            agg["batches"] += 1
            agg["documents"] += int(e.get("docs", 0))
            agg["seconds"] += float(seconds or 0.0)
    per_encoder = [
        {
            "encoder": name,
            "batches": int(a["batches"]),
            "documents": int(a["documents"]),
            "seconds": _r(a["seconds"], 4),
            "ms_per_doc": _r(a["seconds"] * 1000 / a["documents"]) if a["documents"] else None,
            "mean_batch_s": _r(a["seconds"] / a["batches"], 4) if a["batches"] else None,
        }
        for name, a in sorted(encoders.items())
    ]
    per_minute = []
    for i in range(SERIES_MINUTES - 1, -1, -1):
        evs = [e for e in ingests if now - (i + 1) * 60 <= e["t"] < now - i * 60]
        per_minute.append({"minutes_ago": i, "documents": sum(int(e.get("docs", 0)) for e in evs)})
    return {"windows": windows, "encoders": per_encoder, "per_minute": per_minute}

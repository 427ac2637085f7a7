"""Celery tasks: ids and documents in, one plain function call, retries with backoff on store errors."""

from __future__ import annotations

from typing import Any

from core.errors import StoreError
from core.metrics import count_error
from core.runtime import get_runtime
from workers.app import celery_app
from workers.jobs import ExpertGone, fail_batch, run_backfill, run_drop_vector, run_ingest_batch, run_score_expert

RETRY = {
    "autoretry_for": (StoreError,),
    "retry_backoff": 2,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 5,
}


@celery_app.task(bind=True, name="rr.ingest_batch", acks_late=True, **RETRY)
def ingest_batch(
    self: Any,
    job_id: str,
    batch: int,
    tenant: str,
    collection: str,
    documents: list[dict[str, Any]],
    collection_created: float | None = None,
) -> int:
    rt = get_runtime()
    try:
        return run_ingest_batch(rt, job_id, batch, tenant, collection, documents, collection_created)
    except StoreError as e:
        if self.request.retries >= self.max_retries:
            count_error(type(e).__name__, "worker")
            fail_batch(rt, job_id, batch, documents, f"store error after {self.max_retries} retries: {e}")
            return 0
        rt.meta.set_batch(job_id, batch, "retrying", 0, len(documents), [])
        raise
    except Exception as e:  # a bug or bad data: record the reason, don't retry forever
        count_error(type(e).__name__, "worker")
        fail_batch(rt, job_id, batch, documents, f"{type(e).__name__}: {e}")
        return 0


@celery_app.task(bind=True, name="rr.backfill", acks_late=True, **RETRY)
def backfill(self: Any, tenant: str, collection: str, expert: str) -> int:
    rt = get_runtime()
    try:
        return run_backfill(rt, tenant, collection, expert)
    except StoreError as e:
        if self.request.retries >= self.max_retries:  # as ingest_batch: record it, or it stays "running" forever
            count_error(type(e).__name__, "worker")
            rt.meta.set_backfill(tenant, collection, expert, "failed")
            return 0
        raise
    except Exception as e:
        count_error(type(e).__name__, "worker")
        rt.meta.set_backfill(tenant, collection, expert, "failed")
        raise


@celery_app.task(name="rr.drop_vector", acks_late=True, **RETRY)
def drop_vector(tenant: str, collection: str, expert: str) -> None:
    run_drop_vector(get_runtime(), tenant, collection, expert)


@celery_app.task(bind=True, name="rr.score_expert", acks_late=True, **RETRY)
def score_expert(self: Any, expert: str, data: str, token: str | None = None) -> list[str]:
    """Its state is in the expert's scoring record (GET /experts): a failure is there with its reason."""
    rt = get_runtime()
    try:
        return run_score_expert(rt, expert, data, token, lease_s=rt.settings.task_visibility_timeout_s)
    except StoreError as e:
        count_error(type(e).__name__, "worker")
        if self.request.retries >= self.max_retries:
            rt.meta.set_scoring(expert, "failed", f"store error after {self.max_retries} retries: {e}", token=token)
            return []
        rt.meta.set_scoring(expert, "retrying", f"{type(e).__name__}: {e}", token=token)
        raise
    except ExpertGone:
        return []  # removed before or while it was scored: nothing to record
    except Exception as e:
        rt.retriever.refresh()
        if expert not in rt.retriever.manifests:  # removed meanwhile: its record went with it, do not write one
            return []
        count_error(type(e).__name__, "worker")
        rt.meta.set_scoring(expert, "failed", f"{type(e).__name__}: {e}", token=token)
        raise

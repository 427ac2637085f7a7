"""The Celery app. Production: Redis broker and `rr worker` processes. Embedded: the same tasks, in-process."""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_process_shutdown, worker_shutdown

from core.runtime import current_runtime
from core.settings import get_settings


def make_celery() -> Celery:
    s = get_settings()
    app = Celery("rr", broker=s.broker_url, backend=s.result_backend or None, include=["workers.tasks"])
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,  # a task whose worker dies is redelivered; tasks are idempotent (deterministic ids)
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # encoding is long: don't hoard batches on one worker
        task_default_queue="rr",
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,  # Flower's task-level view (docker-compose `flower`) follows these events
        task_send_sent_event=True,
    )
    return app


@worker_shutdown.connect
@worker_process_shutdown.connect
def _flush_events(**_: Any) -> None:
    """Write the dashboard events still buffered in this worker process before it exits (solo or prefork child)."""
    rt = current_runtime()
    if rt is not None:
        rt.flush_events()


celery_app = make_celery()

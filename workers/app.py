"""The Celery app. Production: Redis broker and `rr worker` processes. Embedded: the same tasks, in-process."""

from __future__ import annotations

from celery import Celery

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
    )
    return app


celery_app = make_celery()

"""The Celery app. Production: Redis broker and `rr worker` processes. Embedded: the same tasks, in-process."""

from __future__ import annotations

import time
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_shutdown, worker_shutdown

from core.runtime import current_runtime
from core.settings import get_settings


class BackoffTask(Task):  # type: ignore[misc]  # celery ships no type hints
    """A task run in process (``apply``: the embedded default's worker thread) waits out its retry back-off as a
    worker's broker would: Celery's eager retries run at once, which turned a store hiccup of a few milliseconds
    into five failed retries."""

    def apply(self, args: Any = None, kwargs: Any = None, **options: Any) -> Any:
        retries = int(options.get("retries") or 0)
        if retries and self.retry_backoff:
            time.sleep(retry_countdown(self, retries - 1))
        return super().apply(args, kwargs, **options)


def retry_countdown(task: Any, retries: int) -> float:
    """Seconds before retry ``retries + 1``: what Celery's autoretry asks the broker for (``retry_backoff``)."""
    from celery.utils.time import get_exponential_backoff_interval

    return float(
        get_exponential_backoff_interval(
            factor=int(max(1.0, task.retry_backoff)),
            retries=retries,
            maximum=task.retry_backoff_max,
            full_jitter=task.retry_jitter,
        )
    )


def make_celery() -> Celery:
    s = get_settings()
    app = Celery(
        "rr", broker=s.broker_url, backend=s.result_backend or None, include=["workers.tasks"], task_cls=BackoffTask
    )
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
        # Redis's (and SQS's) redelivery of a task whose worker died without acking it: kombu's default is an hour
        broker_transport_options={"visibility_timeout": s.task_visibility_timeout_s},
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

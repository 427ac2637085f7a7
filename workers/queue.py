"""Sending work to the tasks: through the Celery broker, or to an in-process worker thread (embedded default).

The in-process worker runs the very same Celery task objects (``Task.apply``), one at a time, so the embedded platform
is one process with no broker while production runs separate `rr worker` processes.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from core.errors import QueueError

log = logging.getLogger(__name__)


def _safe_url(url: str) -> str:
    """The broker URL without its password."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return url if parts.password is None else url.replace(f":{parts.password}@", ":***@", 1)


class CeleryQueue:
    def __init__(self, broker_url: str, result_backend: str | None = None) -> None:
        from workers.app import celery_app

        # The app is configured from the settings at import; a runtime built with other settings (tests, a CLI
        # flag) points it at its own broker before anything is sent.
        if celery_app.conf.broker_url != broker_url:
            celery_app.conf.broker_url = broker_url
            # Connections already pooled are to the old broker: drop them, or tasks would still go there.
            if celery_app._pool is not None:
                celery_app._pool.force_close_all()
                celery_app._pool = None
            if "amqp" in celery_app.__dict__:
                celery_app.amqp._producer_pool = None
        celery_app.conf.result_backend = result_backend
        self.app = celery_app

    def submit(self, task: str, **kwargs: Any) -> None:
        """Send a task; a broker that cannot take it (unreachable, refusing) is a :class:`QueueError`, answered
        503, once Celery's own publish retries (``task_publish_retry_policy``) are spent."""
        self._send(task, kwargs, None)

    def submit_later(self, task: str, delay_s: float, **kwargs: Any) -> None:
        """Send a task that runs ``delay_s`` from now (Celery's countdown: a worker holds it until then; keep it
        below the visibility timeout, or Redis delivers it again meanwhile)."""
        self._send(task, kwargs, delay_s)

    def _send(self, task: str, kwargs: dict[str, Any], countdown: float | None) -> None:
        from kombu.exceptions import KombuError, OperationalError

        from workers import tasks

        try:
            getattr(tasks, task).apply_async(kwargs=kwargs, countdown=countdown)
        except (OperationalError, KombuError, OSError) as e:
            raise QueueError(f"the task queue at {_safe_url(self.app.conf.broker_url)} did not take {task}: {e}") from e

    def depth(self) -> int | None:
        """Messages waiting in the Redis list of the queue (None for other brokers)."""
        if not str(self.app.conf.broker_url).startswith("redis"):
            return None
        with self.app.connection_for_write() as conn:
            return int(conn.default_channel.client.llen("rr"))

    def held(self) -> int | None:
        """Messages a worker has taken and not yet acknowledged: running (tasks ack late) or prefetched. They are
        in kombu's ``unacked`` hash of this Redis database, not in the queue's list (None for other brokers)."""
        if not str(self.app.conf.broker_url).startswith("redis"):
            return None
        with self.app.connection_for_write() as conn:
            channel = conn.default_channel
            return int(channel.client.hlen(channel.unacked_key))

    def workers(self, timeout: float = 0.5) -> int:
        """Workers answering a broadcast ping within ``timeout`` seconds (the dashboard's "workers online")."""
        return len(self.app.control.ping(timeout=timeout) or [])

    def close(self) -> None:
        pass


class LocalQueue:
    def __init__(self) -> None:
        self._q: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()
        self._idle = threading.Event()
        self._idle.set()
        self._running = 0  # the task the worker thread runs now (0 or 1)
        self._thread = threading.Thread(target=self._work, name="rr-local-worker", daemon=True)
        self._thread.start()

    def submit(self, task: str, **kwargs: Any) -> None:
        self._idle.clear()
        self._q.put((task, kwargs))

    def submit_later(self, task: str, delay_s: float, **kwargs: Any) -> None:
        """Queue a task ``delay_s`` from now (a timer thread; lost with the process, like the queue itself)."""
        timer = threading.Timer(delay_s, self.submit, (task,), kwargs)
        timer.daemon = True
        timer.start()

    def depth(self) -> int:
        return self._q.qsize()

    def held(self) -> int:
        """The task the worker thread runs now: 0 or 1."""
        return self._running

    def workers(self, timeout: float = 0.5) -> int:
        """The one in-process worker thread, if it is alive."""
        return int(self._thread.is_alive())

    def _work(self) -> None:
        from workers import tasks

        while True:
            item = self._q.get()
            if item is None:
                return
            name, kwargs = item
            self._running = 1
            try:
                result = getattr(tasks, name).apply(kwargs=kwargs)
                if result.failed():  # the task recorded the failure in its job or backfill state
                    log.error("task %s failed: %r", name, result.result)
            except Exception:  # keep the worker alive whatever happens
                log.exception("task %s failed", name)
            finally:
                self._running = 0
                if self._q.empty():
                    self._idle.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the queue is drained (tests, CLI)."""
        return self._idle.wait(timeout)

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(timeout=5)


def make_queue(settings: Any, runtime: Any) -> CeleryQueue | LocalQueue:
    if settings.broker_url.startswith("memory://"):
        return LocalQueue()
    return CeleryQueue(settings.broker_url, settings.result_backend)

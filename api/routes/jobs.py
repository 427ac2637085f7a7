from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query

from api import service
from api.deps import PrincipalDep, RuntimeDep
from api.schemas import JobOut, JobStatus, errors

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("", response_model=list[JobOut], responses=errors(401, 422, 503))
def list_(
    rt: RuntimeDep,
    p: PrincipalDep,
    collection: Annotated[
        str | None, Query(description="Only this collection's jobs.", pattern=service.NAME_RE.pattern)
    ] = None,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many, the newest.")] = 100,
) -> list[dict[str, Any]]:
    """Newest first. A tenant sees its own jobs; the admin key sees every tenant's. Finished jobs are kept for
    RR_JOB_RETENTION_DAYS."""
    jobs = rt.meta.list_jobs(None if p.is_admin else p.tenant, limit=limit, collection=collection, status=status)
    return [asdict(j) for j in jobs]


@router.get("/{job_id}", response_model=JobOut, responses=errors(401, 404, 422, 503))
def get(job_id: str, rt: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    """A tenant sees only its own jobs (another tenant's is a 404, as if it did not exist)."""
    return asdict(rt.meta.get_job(job_id, None if p.is_admin else p.tenant))

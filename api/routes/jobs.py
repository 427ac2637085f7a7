from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter

from api.deps import PrincipalDep, RuntimeDep
from api.schemas import JobOut, errors

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.get("/{job_id}", response_model=JobOut, responses=errors(401, 404, 422, 503))
def get(job_id: str, rt: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    """A tenant sees only its own jobs (another tenant's is a 404, as if it did not exist)."""
    return asdict(rt.meta.get_job(job_id, None if p.is_admin else p.tenant))

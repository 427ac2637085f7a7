from __future__ import annotations

from fastapi import APIRouter, status

from api import service
from api.deps import AdminDep, RuntimeDep
from api.schemas import TenantIn, TenantOut, errors

router = APIRouter(prefix="/tenants", tags=["tenants"])


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=TenantOut, responses=errors(400, 401, 403, 409, 422, 503)
)
def create(body: TenantIn, rt: RuntimeDep, p: AdminDep) -> dict[str, str]:
    return {"tenant": body.name, "api_key": service.create_tenant(rt, body.name)}


@router.get("", responses=errors(401, 403, 503))
def list_(rt: RuntimeDep, p: AdminDep) -> list[str]:
    return list(rt.meta.list_tenants())


@router.post(
    "/{name}/keys",
    status_code=status.HTTP_201_CREATED,
    response_model=TenantOut,
    responses=errors(401, 403, 404, 422, 503),
)
def new_key(name: str, rt: RuntimeDep, p: AdminDep) -> dict[str, str]:
    return {"tenant": name, "api_key": rt.meta.create_key(name)}

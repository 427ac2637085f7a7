from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from api import service
from api.deps import AdminDep, RuntimeDep
from api.schemas import KeyOut, TenantIn, TenantOut, errors
from store.meta import key_id as public_id

router = APIRouter(prefix="/tenants", tags=["tenants"])


def _issued(tenant: str, key: str) -> dict[str, str]:
    return {"tenant": tenant, "api_key": key, "key_id": public_id(key)}


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=TenantOut, responses=errors(400, 401, 403, 409, 422, 503)
)
def create(body: TenantIn, rt: RuntimeDep, p: AdminDep) -> dict[str, str]:
    return _issued(body.name, service.create_tenant(rt, body.name))


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
    """Another key for the tenant ('admin' for the admin); the others keep working until revoked."""
    return _issued(name, rt.meta.create_key(name))


@router.get("/{name}/keys", response_model=list[KeyOut], responses=errors(401, 403, 404, 422, 503))
def list_keys(name: str, rt: RuntimeDep, p: AdminDep) -> list[dict[str, Any]]:
    return rt.meta.list_keys(name)


@router.delete(
    "/{name}/keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401, 403, 404, 409, 422, 503)
)
def revoke_key(name: str, key_id: str, rt: RuntimeDep, p: AdminDep) -> None:
    """Requests with that key get 401 from the next one on. The admin's last key cannot be revoked (409)."""
    rt.meta.revoke_key(name, key_id)

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from api import service
from api.deps import PrincipalDep, RuntimeDep
from api.schemas import CollectionIn, CollectionOut, DocumentsIn, JobAccepted, SearchIn, SearchOut, errors

router = APIRouter(prefix="/collections", tags=["collections"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=CollectionOut,
    responses=errors(400, 401, 404, 409, 422, 503),
)
def create(body: CollectionIn, rt: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    info = service.create_collection(rt, p.tenant, body.name, body.expert)
    return service.describe_collection(rt, info)


@router.get("", response_model=list[CollectionOut], responses=errors(401, 503))
def list_(rt: RuntimeDep, p: PrincipalDep) -> list[dict[str, Any]]:
    return [service.describe_collection(rt, c) for c in rt.meta.list_collections(p.tenant)]


@router.get("/{name}", response_model=CollectionOut, responses=errors(401, 404, 422, 503))
def get(name: str, rt: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return service.describe_collection(rt, rt.meta.get_collection(p.tenant, name))


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401, 404, 422, 503))
def delete(name: str, rt: RuntimeDep, p: PrincipalDep) -> None:
    service.delete_collection(rt, p.tenant, name)


@router.post(
    "/{name}/documents",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobAccepted,
    responses=errors(400, 401, 404, 409, 422, 503),
)
def add_documents(name: str, body: DocumentsIn, rt: RuntimeDep, p: PrincipalDep) -> dict[str, str]:
    return {"job_id": service.submit_documents(rt, p.tenant, name, body.documents)}


@router.post(
    "/{name}/search",
    response_model=SearchOut,
    response_model_exclude_none=True,
    responses=errors(400, 401, 404, 409, 422, 503),
)
def search(name: str, body: SearchIn, rt: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    return service.search(rt, p.tenant, name, body.query, body.top_k, body.filter, body.expert, body.explain)

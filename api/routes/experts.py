from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from api import service
from api.deps import AdminDep, PrincipalDep, RuntimeDep
from api.schemas import ExpertIn, RouteIn, errors

router = APIRouter(tags=["experts"])


@router.get("/experts", responses=errors(401, 503))
def list_(rt: RuntimeDep, p: PrincipalDep) -> list[dict[str, Any]]:
    return service.list_experts(rt)


@router.post("/experts", status_code=status.HTTP_201_CREATED, responses=errors(400, 401, 403, 404, 409, 422, 503))
def register(body: ExpertIn, rt: RuntimeDep, p: AdminDep) -> dict[str, Any]:
    return service.register_expert(rt, body.path, body.data)


@router.delete(
    "/experts/{name}", status_code=status.HTTP_204_NO_CONTENT, responses=errors(401, 403, 404, 409, 422, 503)
)
def remove(name: str, rt: RuntimeDep, p: AdminDep) -> None:
    service.remove_expert(rt, name)


@router.post("/route", responses=errors(400, 401, 404, 409, 422, 503))
def route(body: RouteIn, rt: RuntimeDep, p: PrincipalDep) -> dict[str, Any]:
    """Which expert a query goes to, with the per-expert pilot scores (explain only; searches nothing)."""
    info = rt.meta.get_collection(p.tenant, body.collection) if body.collection is not None else None
    return service.route(rt, body.query, info)

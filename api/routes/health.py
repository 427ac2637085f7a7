from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/health")
def health(rt: RuntimeDep) -> dict[str, Any]:
    """Liveness and what this process serves; needs no key."""
    return {
        "status": "ok",
        "store": rt.settings.store_url,
        "experts": rt.retriever.experts,
        "queue": "in-process" if rt.settings.broker_url.startswith("memory://") else "celery",
    }

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from api.deps import RuntimeDep
from core.metrics import QueueDepth, exposition

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response)
def metrics(rt: RuntimeDep) -> Response:
    """Prometheus text format, summed over every process sharing ``RR_METRICS_DIR``. Needs no key, like /health, so
    that Prometheus can scrape it: it holds counts by route, expert and encoder, nothing of any tenant's data."""
    body, content_type = exposition([QueueDepth(rt.queue.depth, rt.queue.held)])
    return Response(body, media_type=content_type)

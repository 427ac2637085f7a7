"""Request latency by route template, as plain ASGI middleware (no response buffering, streaming untouched)."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.metrics import observe_request


class RequestMetrics:
    """Times every HTTP request into ``rr_http_request_duration_seconds``.

    The label is the matched route's template (``/collections/{name}/search``), never the raw path, so a scan of
    random URLs cannot blow up the number of series: unmatched paths share the label ``unmatched``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500  # what the client gets when the app raises before it answers

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            observe_request(scope.get("method", "GET"), template, status, time.perf_counter() - t0)

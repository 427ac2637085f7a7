"""The FastAPI app: routes, and the one place core errors become HTTP statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from api.middleware import RequestMetrics
from api.routes import collections, dashboard, experts, health, jobs, metrics, tenants
from core.errors import Conflict, IncompatibleExpert, InvalidInput, NotFound, QueueError, RRError, StoreError
from core.metrics import count_error
from core.runtime import Runtime, get_runtime, set_runtime

STATUS = [
    (InvalidInput, 400),
    (NotFound, 404),
    (Conflict, 409),
    (IncompatibleExpert, 409),
    (StoreError, 503),
    (QueueError, 503),
]


def create_app(runtime: Runtime | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if runtime is None:
            app.state.runtime.close()

    app = FastAPI(
        title="RouterRetriever search",
        version="0.1.0",
        lifespan=lifespan,
        description="Routed LoRA experts over a frozen encoder, on Qdrant. Every request except /health "
        "carries `Authorization: Bearer <api key>`.",
    )
    app.state.runtime = runtime or get_runtime()
    set_runtime(app.state.runtime)  # tasks run by the in-process worker use this process's runtime

    # Errors are counted by kind here, where every error a client sees passes (rr_errors_total{source="api"}).
    @app.exception_handler(RRError)
    async def rr_error(request: Request, exc: RRError) -> JSONResponse:
        count_error(type(exc).__name__, "api")
        code = next((c for t, c in STATUS if isinstance(exc, t)), 500)
        body: dict[str, object] = {"detail": str(exc)}
        if isinstance(exc, InvalidInput) and exc.field:
            body["field"] = exc.field
        return JSONResponse(body, status_code=code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        count_error("RequestValidationError", "api")
        errs = exc.errors()
        fields = [".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body" for e in errs]
        msg = "; ".join(f"{f}: {e.get('msg')}" for f, e in zip(fields, errs, strict=True))
        return JSONResponse({"detail": msg, "field": fields[0] if fields else None}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        count_error(f"http_{exc.status_code}", "api")
        if exc.status_code == 405:  # Starlette names the first route's methods only; a path may have several routes
            path = request.scope["path"].removeprefix(request.scope.get("root_path", "")) or "/"
            allowed = {m for r in every_route if r.path_regex.match(path) for m in r.methods or ()}
            exc.headers = {**(exc.headers or {}), "Allow": ", ".join(sorted(allowed))}
        return await http_exception_handler(request, exc)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        count_error(type(exc).__name__, "api")
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)

    routers = [m.router for m in (health, collections, jobs, experts, tenants, metrics, dashboard)]
    for r in routers:
        app.include_router(r)
    # Every route with its path and methods (the app lists an included router as one entry), for 405's Allow.
    listed = [*app.routes, *(route for r in routers for route in r.routes)]
    every_route = [r for r in listed if isinstance(r, Route)]
    app.add_middleware(RequestMetrics)
    _document_limits(app)
    return app


def _document_limits(app: FastAPI) -> None:
    """Write this server's limits (settings) into its OpenAPI document, where the request schemas cannot know them."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            settings = app.state.runtime.settings
            schema = generate()
            models = schema["components"]["schemas"]
            models["SearchIn"]["properties"]["top_k"]["maximum"] = settings.max_top_k
            for body in ("SearchIn", "RouteIn"):
                models[body]["properties"]["query"]["maxLength"] = settings.max_query_chars
            models["DocumentsIn"]["properties"]["documents"]["maxItems"] = settings.max_batch_documents
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

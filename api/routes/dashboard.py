"""The operations dashboard: a server-rendered page, its JSON, and a sign-in form that sets an HttpOnly cookie.

A browser navigating to /dashboard cannot send ``Authorization: Bearer``; the form takes the API key once and the
cookie holds a session token standing for it, not the key: the token opens the dashboard only (never the API), for
12 hours, until sign-out, or until the key is revoked. The cookie cannot be read by scripts (HttpOnly), is sent only
to /dashboard (Path) and never from another site (SameSite=Strict); a sign-in posted from another site's page (its
``Origin`` is not this host) is refused, so no page can sign a visitor in under someone else's key. A bearer header
works too, for curl and tests.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from api.dashboard import render
from api.dashboard.data import dashboard_data
from api.deps import DASHBOARD_COOKIE, RuntimeDep, find_principal
from api.schemas import errors, json_errors

router = APIRouter(prefix="/dashboard", tags=["operations"])

COOKIE_MAX_AGE_S = 12 * 3600
MAX_FORM_BYTES = 4096


@router.get(
    "",
    response_class=HTMLResponse,
    responses={
        401: {"description": "The sign-in form (no key, or an unknown one).", "content": {"text/html": {}}},
        **json_errors(422),
    },
)
def page(
    request: Request,
    rt: RuntimeDep,
    refresh: Annotated[int, Query(ge=0, le=3600, description="Seconds between reloads; 0 stops them.")] = 10,
) -> HTMLResponse:
    """The dashboard for the signed-in key (the admin's: everything; a tenant's: its own), or the sign-in form."""
    p = find_principal(rt, request)
    if p is None:
        return HTMLResponse(render.sign_in(), status_code=status.HTTP_401_UNAUTHORIZED)
    data = dashboard_data(rt, None if p.is_admin else p.tenant)
    return HTMLResponse(render.dashboard(data, refresh), headers={"Cache-Control": "no-store"})


@router.get("/data", responses=errors(401, 503))
def data(request: Request, rt: RuntimeDep) -> Any:
    """The figures the page renders, as JSON."""
    p = find_principal(rt, request)
    if p is None:
        return JSONResponse(
            {"detail": "sign in at /dashboard or send 'Authorization: Bearer <api key>'"},
            status_code=status.HTTP_401_UNAUTHORIZED,
            headers={"WWW-Authenticate": "Bearer"},
        )
    return JSONResponse(dashboard_data(rt, None if p.is_admin else p.tenant), headers={"Cache-Control": "no-store"})


@router.post(
    "/login",
    response_class=RedirectResponse,
    status_code=status.HTTP_303_SEE_OTHER,
    responses={
        401: {"description": "The sign-in form again: that key is not known.", "content": {"text/html": {}}},
        403: {"description": "The form was posted from another site's page.", "content": {"text/html": {}}},
    },
)
async def login(request: Request, rt: RuntimeDep) -> Response:
    """Check the key from the form and keep a session for it in the dashboard's cookie (parsed by hand: no multipart
    dependency)."""
    if not _same_origin(request):
        return HTMLResponse(
            render.sign_in("Sign in from this server's own page."), status_code=status.HTTP_403_FORBIDDEN
        )
    body = await request.body()
    key = parse_qs(body[:MAX_FORM_BYTES].decode("utf-8", "replace")).get("key", [""])[0].strip()
    token = rt.meta.create_session(key, COOKIE_MAX_AGE_S) if key else None
    if token is None:
        return HTMLResponse(render.sign_in("That key is not known."), status_code=status.HTTP_401_UNAUTHORIZED)
    resp = RedirectResponse("/dashboard", status_code=status.HTTP_303_SEE_OTHER)
    resp.set_cookie(
        DASHBOARD_COOKIE,
        token,
        max_age=COOKIE_MAX_AGE_S,
        path="/dashboard",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return resp


def _same_origin(request: Request) -> bool:
    """No ``Origin`` (curl, an old browser) or one naming this host (or the host a proxy forwarded for)."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    hosts = {request.headers.get("host"), request.headers.get("x-forwarded-host")} - {None}
    return origin != "null" and urlsplit(origin).netloc in hosts


@router.post("/logout", response_class=RedirectResponse, status_code=status.HTTP_303_SEE_OTHER)
def logout(request: Request, rt: RuntimeDep) -> Response:
    """End the cookie's session (its token no longer signs in, wherever it was copied) and clear the cookie."""
    token = request.cookies.get(DASHBOARD_COOKIE, "").strip()
    if token:
        rt.meta.end_session(token)
    resp = RedirectResponse("/dashboard", status_code=status.HTTP_303_SEE_OTHER)
    resp.delete_cookie(DASHBOARD_COOKIE, path="/dashboard", httponly=True, samesite="strict")
    return resp

"""Dependencies as Annotated aliases, so tests can override them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from core.runtime import Runtime
from store.meta import ADMIN

bearer = HTTPBearer(auto_error=False, description="An API key: the admin key, or a tenant's key.")


def get_rt(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


RuntimeDep = Annotated[Runtime, Depends(get_rt)]


@dataclass(frozen=True)
class Principal:
    tenant: str

    @property
    def is_admin(self) -> bool:
        return self.tenant == ADMIN


def get_principal(rt: RuntimeDep, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Principal:
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing 'Authorization: Bearer <api key>' header",
            headers={"WWW-Authenticate": "Bearer"},
        )
    tenant = rt.meta.tenant_for_key(creds.credentials)
    if tenant is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown API key", headers={"WWW-Authenticate": "Bearer"})
    return Principal(tenant)


PrincipalDep = Annotated[Principal, Depends(get_principal)]

DASHBOARD_COOKIE = "rr_dashboard_session"


def find_principal(rt: Runtime, request: Request) -> Principal | None:
    """The key of a bearer header, else the dashboard session of its HttpOnly cookie (a browser navigating to
    /dashboard cannot send a header); None when there is neither, or it is unknown, expired or its key revoked, so the
    caller can show its sign-in form."""
    auth = request.headers.get("authorization", "")
    scheme, _, key = auth.partition(" ")
    if scheme.lower() == "bearer" and key.strip():
        tenant = rt.meta.tenant_for_key(key.strip())
    else:
        token = request.cookies.get(DASHBOARD_COOKIE, "").strip()
        tenant = rt.meta.tenant_for_session(token) if token else None
    return None if tenant is None else Principal(tenant)


def require_admin(p: PrincipalDep) -> Principal:
    if not p.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this needs the admin key")
    return p


AdminDep = Annotated[Principal, Depends(require_admin)]

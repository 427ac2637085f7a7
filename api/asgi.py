"""ASGI entry point for production servers (uvicorn api.asgi:app, several processes behind a balancer)."""

from __future__ import annotations

from api.main import create_app
from core.runtime import get_runtime

get_runtime().ensure_admin_key()
app = create_app()

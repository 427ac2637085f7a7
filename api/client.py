"""What the platform's own HTTP clients share (`rr ingest`, `rr bench platform`): error checks and job waiting."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from core.errors import RRError


def checked(resp: httpx.Response) -> Any:
    """The response's JSON; an HTTP error becomes an RRError naming the request and the API's own detail."""
    if resp.status_code >= 400:
        try:
            detail = resp.json().get("detail")
        except ValueError:
            detail = resp.text[:300]
        raise RRError(f"{resp.request.method} {resp.request.url.path}: {resp.status_code} {detail}")
    return resp.json() if resp.content else {}


def wait_for_jobs(
    client: httpx.Client,
    job_ids: Sequence[str],
    on_progress: Callable[[int], None] | None = None,
    interval_s: float = 1.0,
) -> list[dict[str, Any]]:
    """Poll ``/jobs/{id}`` until every job is done or failed; ``on_progress`` gets the documents stored so far."""
    while True:
        states = [checked(client.get(f"/jobs/{j}")) for j in job_ids]
        if on_progress is not None:
            on_progress(sum(int(s["done"]) for s in states))
        if all(s["status"] in ("done", "failed") for s in states):
            return states
        time.sleep(interval_s)

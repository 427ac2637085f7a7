"""What the platform's own HTTP clients share (`rr ingest`, `rr bench platform`): error checks and job waiting."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from core.errors import RRError


def path_segment(value: str, what: str) -> str:
    """``value`` as one path segment of a request URL, quoted whole: no name or id can reach another route
    (``../collections``, ``?limit=1``) or a redirect (an empty one)."""
    if not value:
        raise RRError(f"{what} must not be empty")
    quoted = quote(value, safe="")
    return quoted.replace(".", "%2E") if set(value) <= {"."} else quoted  # '.' and '..' would be normalised away


def checked(resp: httpx.Response) -> Any:
    """The response's JSON; an HTTP error becomes an RRError naming the request and the API's own detail. A
    redirect is one too: every route answers directly, so it means the URL is not one of them."""
    if resp.status_code >= 300:
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

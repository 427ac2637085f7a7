"""The operations dashboard in a real browser (Debian's headless Chromium, driven by Playwright) against a real server.

The figures a person reads on the page are compared with what the API says: documents per collection, the experts,
the share of searches each expert answered (overall and per collection), the search and ingestion counts. A tenant's
dashboard must show nothing of another tenant.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.dashboard.browser import CHROMIUM, CHROMIUM_ARGS
from tests.conftest import DOCS
from tests.live_server import ADMIN_KEY, bearer, ingest_and_wait, install_experts, live_server, platform_env

pytestmark = pytest.mark.slow

QUERIES = {
    "bio": ["protein in the cell", "drug for cancer", "tumor protein", "gene trial dose", "cancer patient trial"],
    "aero": ["supersonic wing flow", "shock boundary layer", "heat transfer layer", "airfoil pressure shock"],
    "secret": ["protein gene", "wing flow"],
}


def _sync_playwright() -> Any:
    """Playwright and Chromium, or a skip saying what is missing (a failure in CI, which must run this test)."""
    missing = []
    sync_playwright: Any = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing.append("playwright (pip install -e '.[dev]')")
    if not (Path(CHROMIUM).is_file() or shutil.which("chromium")):
        missing.append("chromium (Debian: apt-get install chromium)")
    if missing:
        msg = f"the dashboard test needs {' and '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(msg + "; .ci/run installs both")
        pytest.skip(msg)
    return sync_playwright


CORPORA = DOCS  # the tiny collections of conftest


def _docs(corpus: str) -> list[dict[str, Any]]:
    return [{"id": i, "title": t, "text": x} for i, t, x in CORPORA[corpus]]


@pytest.fixture(scope="module")
def platform(
    tiny_model: Path, beir_root: Path, tiny_experts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A running server with two tenants: acme (collections bio and aero) and globex (secret); searches on each."""
    sync_playwright = _sync_playwright()  # before the slow part: skip or fail early
    root = tmp_path_factory.mktemp("dashboard")
    install_experts(tiny_model, beir_root, tiny_experts, root / "experts")
    with (
        live_server(platform_env(tiny_model, root), root / "api.log") as base,
        httpx.Client(base_url=base, timeout=60) as client,
    ):
        keys = {"admin": ADMIN_KEY}
        for t in ("acme", "globex"):
            r = client.post("/tenants", json={"name": t}, headers=bearer(ADMIN_KEY))
            assert r.status_code == 201, r.text
            keys[t] = r.json()["api_key"]
        owners = {"bio": "acme", "aero": "acme", "secret": "globex"}
        corpus = {"bio": "bio", "aero": "aero", "secret": "bio"}
        for coll, tenant in owners.items():
            ingest_and_wait(client, keys[tenant], coll, _docs(corpus[coll]))
        answered: list[tuple[str, str, str]] = []  # (tenant, collection, expert)
        for coll, queries in QUERIES.items():
            for q in queries:
                r = client.post(f"/collections/{coll}/search", json={"query": q}, headers=bearer(keys[owners[coll]]))
                assert r.status_code == 200, r.text
                answered.append((owners[coll], coll, r.json()["route"]["expert"]))
        refused = client.post("/collections/nope/search", json={"query": "x"}, headers=bearer(keys["acme"]))
        assert refused.status_code == 404
        yield {
            "base": base,
            "client": client,
            "keys": keys,
            "answered": answered,
            "errors": {"acme": 1, "globex": 0},
            "sync_playwright": sync_playwright,
        }


@pytest.fixture(scope="module")
def browser(platform: dict[str, Any]) -> Iterator[Any]:
    with platform["sync_playwright"]() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            yield ctx
        finally:
            ctx.close()


def sign_in(browser: Any, base: str, key: str) -> Any:
    """A fresh sign-in through the form, as a person would; returns the page showing the dashboard."""
    browser.clear_cookies()
    page = browser.new_page()
    page.goto(f"{base}/dashboard?refresh=0")
    assert page.locator("form.signin").is_visible()
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")
    page.wait_for_selector("#routing")
    return page


def cells(page: Any, row_attr: str, field: str, within: str = "main") -> dict[str, str]:
    """The text shown in column ``field`` of every row carrying ``row_attr`` (inside ``within``), by that value."""
    out = {}
    for row in page.locator(f"{within} tr[{row_attr}]").all():
        out[row.get_attribute(row_attr)] = row.locator(f'[data-field="{field}"]').inner_text().strip()
    return out


def test_sign_in_is_required_and_sets_an_httponly_cookie(platform: dict[str, Any], browser: Any) -> None:
    base, client = platform["base"], platform["client"]
    assert client.get("/dashboard").status_code == 401  # the sign-in form, not the data
    assert client.get("/dashboard/data").status_code == 401
    assert client.get("/dashboard/data", headers=bearer("wrong")).status_code == 401
    assert client.get("/dashboard/data", headers=bearer(ADMIN_KEY)).status_code == 200
    browser.clear_cookies()
    page = browser.new_page()
    page.goto(f"{base}/dashboard?refresh=0")
    page.fill("input[name=key]", "not-a-key")
    page.click("button[type=submit]")
    assert "not known" in page.locator('[data-field="error"]').inner_text()
    page = sign_in(browser, base, ADMIN_KEY)
    (cookie,) = [c for c in browser.cookies() if c["name"] == "rr_dashboard_session"]
    assert cookie["httpOnly"] and cookie["path"] == "/dashboard" and cookie["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # scripts cannot read the key
    page.goto(f"{base}/dashboard")
    assert page.locator('meta[http-equiv="refresh"]').get_attribute("content") == "10"
    page.click("text=Sign out")
    assert page.locator("form.signin").is_visible()


def test_admin_dashboard_agrees_with_the_api(platform: dict[str, Any], browser: Any) -> None:
    client, keys = platform["client"], platform["keys"]
    page = sign_in(browser, platform["base"], ADMIN_KEY)
    assert page.locator('[data-field="viewer"]').inner_text().startswith("admin")

    # Collections: every tenant's, with the document counts the API reports to their owners.
    expected = {}
    for tenant in ("acme", "globex"):
        for c in client.get("/collections", headers=bearer(keys[tenant])).json():
            expected[f"{tenant}/{c['name']}"] = str(c["documents"])
    assert cells(page, "data-collection", "documents") == expected
    assert set(expected.values()) == {"4"}

    # Experts: the ones the API lists, each with its share of the searches answered.
    api_experts = {e["name"]: e for e in client.get("/experts", headers=bearer(ADMIN_KEY)).json()}
    answered = platform["answered"]
    by_expert = Counter(e for _, _, e in answered)
    shown = cells(page, "data-expert", "share")
    assert set(api_experts) <= set(shown) and set(shown) - set(api_experts) <= {"base"}
    for name, text in shown.items():
        assert text == f"{by_expert.get(name, 0) / len(answered) * 100:.1f}%", (name, text)
    assert cells(page, "data-expert", "pilots") == {
        n: str(api_experts[n]["pilots"]) if n in api_experts else "0" for n in shown
    }

    # Routing heat map: per collection and expert, the count of searches that expert answered.
    for tenant, coll in {(t, c) for t, c, _ in answered}:
        per = Counter(e for t, c, e in answered if (t, c) == (tenant, coll))
        for expert in api_experts:
            cell = page.locator(f'g.cell[data-row="{tenant}/{coll}"][data-col="{expert}"]')
            assert cell.get_attribute("data-count") == str(per.get(expert, 0)), (coll, expert)

    # Search and ingestion figures.
    n_search = len(answered) + sum(platform["errors"].values())
    assert cells(page, "data-window", "searches", "#search")["5m"] == str(n_search)
    assert cells(page, "data-window", "error_rate", "#search")["5m"] == f"{1 / n_search:.1%}"
    assert cells(page, "data-window", "documents", "#ingestion")["60m"] == str(sum(int(v) for v in expected.values()))
    assert page.locator('tr[data-encoder="base"]').count() == 1
    assert "aero" in {r.get_attribute("data-encoder") for r in page.locator("tr[data-encoder]").all()}
    assert page.locator('[data-field="workers"]').inner_text() == "1"
    assert page.locator('[data-field="depth"]').inner_text() == "0"
    assert page.locator('[data-field="held"]').inner_text() == "0"  # the in-process worker runs nothing now
    assert page.locator("#routing svg").count() == 1 and page.locator("#search svg").count() == 2

    # The JSON the page renders from says the same.
    data = client.get("/dashboard/data", headers=bearer(ADMIN_KEY)).json()
    assert {c["label"]: str(c["documents"]) for c in data["collections"]} == expected


def test_a_tenant_sees_only_its_own(platform: dict[str, Any], browser: Any) -> None:
    client, keys, answered = platform["client"], platform["keys"], platform["answered"]
    page = sign_in(browser, platform["base"], keys["globex"])
    assert page.locator('[data-field="viewer"]').inner_text() == "tenant globex"
    mine = [c["name"] for c in client.get("/collections", headers=bearer(keys["globex"])).json()]
    assert list(cells(page, "data-collection", "documents")) == mine == ["secret"]
    assert {c.get_attribute("data-row") for c in page.locator("g.cell").all()} == {"secret"}
    assert "acme" not in page.content()  # no collection, job, event or label of the other tenant
    own = [e for t, _, e in answered if t == "globex"]
    assert cells(page, "data-window", "searches", "#search")["5m"] == str(len(own))
    assert cells(page, "data-window", "documents", "#ingestion")["60m"] == "4"
    for name, text in cells(page, "data-expert", "share").items():
        assert text == f"{own.count(name) / len(own) * 100:.1f}%"
    data = client.get("/dashboard/data", headers=bearer(keys["globex"])).json()
    assert "acme" not in str(data)


def test_failures_and_jobs_in_flight_are_shown_with_their_reasons(
    tiny_model: Path, beir_root: Path, tiny_experts: dict[str, Path], tmp_path: Path
) -> None:
    """Job records as workers leave them (one batch failed with its reason, one job still running), rendered in
    process with the bearer header: the queue area lists both, and each tenant only its own."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from core.runtime import Runtime
    from tests.platform_fixtures import make_settings
    from workers.jobs import fail_batch

    install_experts(tiny_model, beir_root, {"bio": tiny_experts["bio"]}, tmp_path / "experts")
    rt = Runtime(make_settings(tiny_model, tmp_path))
    rt.ensure_admin_key()
    try:
        client = TestClient(create_app(rt))
        admin = bearer(_admin(rt))
        keys = {t: client.post("/tenants", json={"name": t}, headers=admin).json()["api_key"] for t in ("a", "b")}
        failed = rt.meta.create_job("a", "docs", [2, 2])
        rt.meta.set_batch(failed, 0, "done", 2, 2, [])
        fail_batch(rt, failed, 1, [{"id": "x1"}, {"id": "x2"}], "StoreError: qdrant went away")
        running = rt.meta.create_job("b", "other", [4, 4])
        rt.meta.set_batch(running, 0, "done", 4, 4, [])
        page = client.get("/dashboard?refresh=0", headers=admin).text
        assert f'data-job="{failed}"' in page and "StoreError: qdrant went away" in page
        assert f'data-job="{running}"' in page and "4 / 8" in page
        mine = client.get("/dashboard", headers=bearer(keys["a"])).text
        assert f'data-job="{failed}"' in mine and running not in mine
        data = client.get("/dashboard/data", headers=bearer(keys["b"])).json()
        assert [j["job_id"] for j in data["queue"]["in_flight"]] == [running] and data["queue"]["failures"] == []
    finally:
        rt.close()


def _admin(rt: Any) -> str:
    return (Path(rt.settings.data_dir) / "admin.key").read_text().strip()

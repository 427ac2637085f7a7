"""`rr ingest`, `rr search` and `rr bench platform` against a real running platform (uvicorn in a subprocess)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from benchmarks.platform import run_platform_check
from cli.main import app
from tests.conftest import DOCS
from tests.live_server import ADMIN_KEY, bearer, install_experts, live_server, platform_env

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(scope="module")
def base_url(
    tiny_model: Path, beir_root: Path, tiny_experts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    root = tmp_path_factory.mktemp("cli-client")
    install_experts(tiny_model, beir_root, tiny_experts, root / "experts")
    with live_server(platform_env(tiny_model, root), root / "api.log") as base:
        yield base


def _rr(*args: str) -> tuple[int, str]:
    res = runner.invoke(app, list(args))
    return res.exit_code, " ".join(res.output.split())  # rich wraps long lines at the terminal's width


def _count(base: str, collection: str) -> int:
    r = httpx.get(f"{base}/collections/{collection}", headers=bearer(ADMIN_KEY))
    return int(r.json()["documents"]) if r.status_code == 200 else -1


def test_ingest_a_beir_folder_then_search_it(base_url: str, beir_root: Path) -> None:
    code, out = _rr("ingest", str(beir_root / "bio"), "--collection", "bio", "--url", base_url, "--key", ADMIN_KEY)
    assert code == 0, out
    assert f"{len(DOCS['bio'])} documents into 'bio'" in out
    assert _count(base_url, "bio") == len(DOCS["bio"])
    code, out = _rr("search", "protein cancer", "--collection", "bio", "--url", base_url, "--key", ADMIN_KEY)
    assert code == 0, out
    assert "expert:" in out


def test_ingest_refuses_invalid_documents_before_sending_anything(base_url: str, tmp_path: Path) -> None:
    src = tmp_path / "docs.jsonl"
    good = {"id": "ok1", "title": "t", "text": "protein in the cell"}
    src.write_text(json.dumps(good) + "\n" + json.dumps({"id": "", "text": "no id"}) + "\n")
    args = ("ingest", str(src), "--collection", "mixed", "--url", base_url, "--key", ADMIN_KEY)
    code, out = _rr(*args)
    assert code == 2
    assert "1 documents would be rejected" in out and "--skip-invalid" in out
    assert _count(base_url, "mixed") == -1  # nothing was created or sent
    code, out = _rr(*args, "--skip-invalid")
    assert code == 0, out
    assert "skipped" in out
    assert _count(base_url, "mixed") == 1


def test_ingest_reports_a_bad_key_and_a_broken_file(base_url: str, beir_root: Path, tmp_path: Path) -> None:
    code, out = _rr("ingest", str(beir_root / "bio"), "--collection", "x", "--url", base_url, "--key", "wrong")
    assert code == 2 and "401" in out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "fine"}\n{not json\n')
    code, out = _rr("ingest", str(bad), "--collection", "x", "--url", base_url, "--key", ADMIN_KEY)
    assert code == 2 and ":2:notvalidJSON" in out.replace(" ", "")


def test_bench_platform_scores_through_the_api(base_url: str, beir_root: Path, tmp_path: Path) -> None:
    from rich.console import Console

    out = run_platform_check(
        base_url, ADMIN_KEY, beir_root / "aero", "aero-bench", Console(quiet=True), batch=2, out_dir=tmp_path
    )
    assert out["documents"] == len(DOCS["aero"]) == out["stored"]
    assert out["job_status"] == ["done"]
    assert 0.0 < out["ndcg@10"] <= 1.0
    assert json.loads((tmp_path / "platform_aero.json").read_text())["ndcg@10"] == out["ndcg@10"]
    # what measured it: the checkout (a test runs in one) and the machine, whose speed the timings depend on
    assert len(out["commit"].removesuffix("+dirty")) == 40
    assert out["machine"]["cores"] >= 1 and out["machine"]["cpu"] and out["machine"]["cpu_capability"]


def test_tenants_and_keys_from_the_command_line(base_url: str) -> None:
    api = ("--url", base_url, "--key", ADMIN_KEY)
    res = runner.invoke(app, ["tenants", "create", "cli-tenant", *api])
    assert res.exit_code == 0, res.output
    first = res.stdout.strip()  # the key alone on stdout; what it is goes to stderr
    assert first and "\n" not in first and "key_id" in res.stderr
    assert httpx.get(f"{base_url}/collections", headers=bearer(first)).status_code == 200
    code, out = _rr("tenants", "list", *api)
    assert code == 0 and "cli-tenant" in out.split()

    res = runner.invoke(app, ["tenants", "issue-key", "cli-tenant", *api])
    assert res.exit_code == 0, res.output
    second = res.stdout.strip()
    res = runner.invoke(app, ["tenants", "keys", "cli-tenant", *api])
    assert res.exit_code == 0, res.output
    listed = [line.split()[0] for line in res.stdout.splitlines()]
    first_id = httpx.get(f"{base_url}/tenants/cli-tenant/keys", headers=bearer(ADMIN_KEY)).json()[0]["key_id"]
    assert first_id in listed and len(listed) == 2

    code, out = _rr("tenants", "revoke-key", "cli-tenant", first_id, *api)
    assert code == 0, out
    assert httpx.get(f"{base_url}/collections", headers=bearer(first)).status_code == 401
    assert httpx.get(f"{base_url}/collections", headers=bearer(second)).status_code == 200

    code, out = _rr("tenants", "revoke-key", "cli-tenant", first_id, *api)  # already revoked
    assert code == 2 and out.startswith("error:") and "404" in out
    code, out = _rr("tenants", "keys", "nobody", *api)
    assert code == 2 and "404" in out
    code, out = _rr("tenants", "create", "Bad Name", *api)
    assert code == 2 and "400" in out
    code, out = _rr("tenants", "list", "--url", base_url, "--key", second)  # a tenant's key is not the admin's
    assert code == 2 and "403" in out


def test_collections_and_jobs_from_the_command_line(base_url: str) -> None:
    made = httpx.post(f"{base_url}/tenants", json={"name": "cli-colls"}, headers=bearer(ADMIN_KEY)).json()
    api = ("--url", base_url, "--key", made["api_key"])  # a tenant's key: its own collections only
    res = runner.invoke(app, ["collections", "create", "notes", *api])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["collections", "create", "pinned", "--expert", "base", *api])
    assert res.exit_code == 0, res.output
    code, out = _rr("collections", "create", "notes", *api)
    assert code == 2 and "409" in out

    r = httpx.post(
        f"{base_url}/collections/notes/documents",
        json={"documents": [{"id": i, "title": t, "text": x} for i, t, x in DOCS["bio"]]},
        headers=bearer(made["api_key"]),
    )
    job = r.json()["job_id"]
    for _ in range(120):
        res = runner.invoke(app, ["jobs", "show", job, *api])
        assert res.exit_code == 0, res.output
        if res.stdout.startswith("done"):
            break
        time.sleep(0.5)
    assert res.stdout.split("\t")[:3] == ["done", f"{len(DOCS['bio'])}/{len(DOCS['bio'])}", "notes\n"], res.stdout
    res = runner.invoke(app, ["jobs", "list", "--status", "done", "--collection", "notes", *api])
    assert res.exit_code == 0, res.output
    (line,) = res.stdout.splitlines()
    fields = line.split("\t")
    assert fields[:5] == [job, "done", f"{len(DOCS['bio'])}/{len(DOCS['bio'])}", "cli-colls", "notes"], line
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", fields[5]), line
    res = runner.invoke(app, ["jobs", "list", "--collection", "pinned", *api])
    assert res.exit_code == 0 and res.stdout == ""
    code, out = _rr("jobs", "list", "--status", "finished", *api)
    assert code == 2 and out.startswith("error:") and "422" in out and "status" in out, out

    res = runner.invoke(app, ["collections", "list", *api])
    assert res.exit_code == 0, res.output
    rows = {line.split("\t")[0]: line.split("\t") for line in res.stdout.splitlines()}
    assert set(rows) == {"notes", "pinned"}  # not the admin's, not another tenant's
    assert rows["notes"][1:4] == ["cli-colls", str(len(DOCS["bio"])), "auto"] and rows["pinned"][3] == "base"
    assert "base" in rows["notes"][4].split(",")
    res = runner.invoke(app, ["collections", "show", "pinned", *api])
    assert res.exit_code == 0 and res.stdout.split("\t")[:3] == ["pinned", "cli-colls", "0"]

    code, out = _rr("collections", "delete", "notes", *api)  # stdin is not a terminal: --yes is needed
    assert code == 2 and "--yes" in out
    assert httpx.get(f"{base_url}/collections/notes", headers=bearer(made["api_key"])).status_code == 200
    res = runner.invoke(app, ["collections", "delete", "notes", "--yes", *api])
    assert res.exit_code == 0, res.output
    assert httpx.get(f"{base_url}/collections/notes", headers=bearer(made["api_key"])).status_code == 404
    for args in (["collections", "show", "notes"], ["jobs", "show", "nope"], ["collections", "delete", "x", "--yes"]):
        code, out = _rr(*args, *api)
        assert code == 2 and out.startswith("error:") and "404" in out, out
    # A name or id is one path segment, quoted: it reached other routes (a list where a job was expected: a
    # traceback), or a redirect that was taken for an empty answer (a KeyError).
    for args, shown in (
        (["jobs", "show", "../collections"], "404"),
        (["jobs", "show", "?limit=1"], "no job '?limit=1'"),
        (["collections", "show", "?x"], "404"),
        (["jobs", "show", ".."], "404"),
        (["tenants", "revoke-key", "cli-colls", "../../collections/pinned"], "404"),
    ):
        code, out = _rr(*args, "--url", base_url, "--key", ADMIN_KEY if args[0] == "tenants" else made["api_key"])
        assert code == 2 and out.startswith("error:") and shown in out, (args, out)
    assert httpx.get(f"{base_url}/collections/pinned", headers=bearer(made["api_key"])).status_code == 200
    code, out = _rr("jobs", "show", "", *api)
    assert code == 2 and out.startswith("error: the job id must not be empty"), out
    code, out = _rr("collections", "create", "Bad Name", *api)
    assert code == 2 and "400" in out

"""docker-compose.yml parses (Debian's docker-compose validates it without an engine) and has what production needs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent


def _config() -> dict:  # type: ignore[type-arg]
    """The file as docker-compose resolves it (anchors merged, variables set)."""
    exe = shutil.which("docker-compose")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose is missing in CI; .ci/run installs Debian's docker-compose")
        pytest.skip("docker-compose is not installed (Debian: apt-get install docker-compose)")
    out = subprocess.run(
        [exe, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        env={**os.environ, "RR_ADMIN_KEY": "test-key"},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)  # type: ignore[no-any-return]


def test_compose_file_validates() -> None:
    services = _config()["services"]
    assert {"qdrant", "redis", "api", "worker", "prometheus", "flower"} <= set(services)
    assert services["qdrant"]["image"].startswith("qdrant/qdrant:v1.20")
    for name in ("qdrant", "redis", "api"):
        assert "healthcheck" in services[name], name
    assert services["worker"]["environment"]["RR_BROKER_URL"].startswith("redis://")
    assert "ports" not in services["worker"]  # so that `--scale worker=N` works


def test_compose_has_prometheus_scraping_api_and_workers() -> None:
    services = _config()["services"]
    prom = services["prometheus"]
    image, _, tag = prom["image"].partition(":")
    assert image == "prom/prometheus" and tag.startswith("v") and tag != "latest"  # pinned
    assert "healthcheck" in prom
    mounts = {v.split(":")[1]: v.split(":")[0] for v in prom["volumes"] if isinstance(v, str)}
    config_file = Path(mounts["/etc/prometheus/prometheus.yml"])
    assert config_file.is_file(), config_file
    scrape = {j["job_name"]: j for j in yaml.safe_load(config_file.read_text())["scrape_configs"]}
    targets = {name: (j["dns_sd_configs"][0]["names"], j["dns_sd_configs"][0]["port"]) for name, j in scrape.items()}
    assert targets == {"rr-api": (["api"], 8000), "rr-worker": (["worker"], 9100)}
    # The worker serves /metrics on the port Prometheus scrapes; each app container sums its own processes.
    assert services["worker"]["command"][-2:] == ["--metrics-port", "9100"]
    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert env["RR_METRICS_DIR"] in services[name]["tmpfs"], name  # emptied at every container start


def test_compose_has_flower_from_the_app_image() -> None:
    services = _config()["services"]
    flower = services["flower"]
    assert flower["image"] == services["worker"]["image"]
    assert flower["command"][:3] == ["celery", "-A", "workers.app:celery_app"] and "flower" in flower["command"]
    assert flower["environment"]["RR_BROKER_URL"] == services["worker"]["environment"]["RR_BROKER_URL"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == "admin:test-key"
    assert all(str(p).startswith("127.0.0.1:") for p in flower["ports"])  # not on every interface
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"flower>=' in pyproject


def test_qdrant_listens_on_the_loopback_only() -> None:
    """No API key is set on the compose Qdrant: its port must not be published on every interface (read without
    docker-compose, so this holds where it is not installed)."""
    qdrant = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["qdrant"]
    assert qdrant["ports"] and all(str(p).startswith("127.0.0.1:") for p in qdrant["ports"]), qdrant["ports"]


def _raw_services() -> dict:  # type: ignore[type-arg]
    """The file as PyYAML reads it (anchors and `<<` merges resolved, variables not): holds without docker-compose."""
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]  # type: ignore[no-any-return]


def test_every_app_container_hands_its_metrics_folder_to_prometheus_client() -> None:
    """Flower's `celery` command line imports prometheus_client (Flower's plugin) before anything imports core.metrics:
    the client must find the multiprocess folder in the environment already, or importing workers.tasks fails."""
    services = _raw_services()
    for name in ("api", "worker", "flower"):
        env = services[name]["environment"]
        assert env["PROMETHEUS_MULTIPROC_DIR"] == env["RR_METRICS_DIR"], name
        assert env["RR_METRICS_DIR"] in services[name]["tmpfs"], name  # flower's folder exists, and starts empty


def _dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as Docker reads it: one pattern a line, `#` comments, `!` re-includes, Go-style `*` and `?` within
    one path element, `**` across any number of them; the last pattern that matches decides."""
    out = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex = ""
        for part in re.split(r"(\*\*/?|\*|\?)", pattern):
            if part.startswith("**"):
                regex += "(?:.*/)?" if part.endswith("/") else ".*"
            elif part == "*":
                regex += "[^/]*"
            elif part == "?":
                regex += "[^/]"
            else:
                regex += re.escape(part)
        out.append((keep, re.compile(regex + r"\Z")))
    return out


def _ignored(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether the build context leaves ``path`` out: it, or a folder above it, matches an exclusion."""
    parts = Path(path).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for keep, regex in patterns:
        if any(regex.match(c) for c in candidates):
            ignored = not keep
    return ignored


def _copied_paths() -> list[str]:
    """The sources of the Dockerfile's COPY lines (the last argument is the destination; flags are skipped)."""
    out = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        words = line.split()
        if words and words[0].upper() == "COPY":
            out += [w for w in words[1:-1] if not w.startswith("--")]
    return out


def test_dockerignore_keeps_secrets_and_local_state_out_and_what_the_image_copies_in() -> None:
    patterns = _dockerignore_patterns()
    for secret_or_local in (".env", ".venv", ".git", "rr-data", ".rr-cache", ".venv/bin/python", ".git/config"):
        assert _ignored(secret_or_local, patterns), secret_or_local
    for cache in ("core/__pycache__/metrics.cpython-311.pyc", ".mypy_cache", ".pytest_cache", ".ruff_cache"):
        assert _ignored(cache, patterns), cache
    assert _ignored("benchmarks/results/subset/quality.json", patterns)

    copied = _copied_paths()
    assert {"pyproject.toml", "README.md", "core", "workers", "cli", "experts"} <= set(copied), copied
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False)
    files = tracked.stdout.splitlines() if tracked.returncode == 0 else []
    for src in copied:
        assert (ROOT / src).exists(), src
        assert not _ignored(src, patterns), src
        # every committed file under a copied folder reaches the image (the shipped experts, benchmark results)
        left_out = [f for f in files if f.startswith(src.rstrip("/") + "/") and _ignored(f, patterns)]
        assert not left_out, (src, left_out[:5])

"""The one settings class refuses bad values with the variable's name, before anything starts."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from core.settings import Settings


@pytest.mark.parametrize(
    ("var", "bad"),
    [
        ("RR_DEVICE", "gpu"),
        ("RR_DEVICE", "cuda:x"),
        ("RR_EXPERT_MODE", "document"),
        ("RR_EXPERT_MODE", ""),
        ("RR_BF16", "sometimes"),
        ("RR_SHARD_NUMBER", "0"),
        ("RR_REPLICATION_FACTOR", "two"),
        ("RR_BROKER_URL", "foo://x"),
        ("RR_BROKER_URL", "localhost:6379"),
    ],
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, var: str, bad: str) -> None:
    monkeypatch.setenv(var, bad)
    with pytest.raises(ValidationError, match=var.removeprefix("RR_").lower()):
        Settings()  # type: ignore[call-arg]  # every field has a default


def test_defaults_and_good_values(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings()  # type: ignore[call-arg]
    assert (s.device, s.expert_mode, s.bf16) == ("auto", "query", "auto")
    monkeypatch.setenv("RR_DEVICE", "cuda:1")
    monkeypatch.setenv("RR_EXPERT_MODE", "query+document")
    s = Settings()  # type: ignore[call-arg]
    assert (s.device, s.expert_mode) == ("cuda:1", "query+document")


@pytest.mark.parametrize(("value", "parsed"), [("auto", "auto"), ("true", True), ("0", False)])
def test_bf16_is_a_switch_or_auto(monkeypatch: pytest.MonkeyPatch, value: str, parsed: object) -> None:
    monkeypatch.setenv("RR_BF16", value)
    assert Settings().bf16 == parsed  # type: ignore[call-arg]


def test_a_dead_workers_task_is_redelivered_after_the_visibility_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    from core.settings import get_settings
    from workers.app import make_celery

    monkeypatch.setenv("RR_TASK_VISIBILITY_TIMEOUT_S", "120")
    get_settings.cache_clear()
    try:
        assert make_celery().conf.broker_transport_options["visibility_timeout"] == 120  # kombu's default: 3600
    finally:
        get_settings.cache_clear()
    monkeypatch.setenv("RR_TASK_VISIBILITY_TIMEOUT_S", "5")
    with pytest.raises(ValidationError, match="task_visibility_timeout_s"):
        Settings()  # type: ignore[call-arg]

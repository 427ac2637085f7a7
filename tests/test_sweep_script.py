"""scripts/sweep_experts.py decide: which candidate may replace a shipped expert, judged on which slice."""

from __future__ import annotations

import argparse
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from core.settings import get_settings

ROOT = Path(__file__).resolve().parent.parent


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sweep_experts", ROOT / "scripts" / "sweep_experts.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_expert(path: Path, val: float, lr: float, base_path: str, marker: str) -> None:
    path.mkdir(parents=True)
    config = {"lr": lr, "batch_size": 32, "time_budget_s": 420.0}
    manifest = {"scores": {"val_ndcg@10": val}, "training": {"config": config, "stopped_by": "time_budget"}}
    (path / "manifest.json").write_text(json.dumps(manifest))
    (path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base_path, "marker": marker}))


@pytest.fixture()
def sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, Path, Path]]:
    monkeypatch.setenv("RR_EXPERTS_DIR", str(tmp_path / "experts"))
    get_settings.cache_clear()
    shipped = tmp_path / "experts" / "query" / "med"
    write_expert(shipped, 0.80, 5e-4, "/packaged/model", "shipped")
    yield load_script(), shipped, tmp_path / "sweep"
    get_settings.cache_clear()


def decide(module: ModuleType, sweep_dir: Path, rows: list[dict], apply: bool) -> dict:  # type: ignore[type-arg]
    sweep_dir.mkdir(exist_ok=True)
    for r in rows:
        write_expert(sweep_dir / r["tag"], r["val"]["val_ndcg@10"], r["lr"], "/gpu/copy", r["tag"])
    (sweep_dir / "results.json").write_text(json.dumps(rows))
    out = sweep_dir / "decision.json"
    args = argparse.Namespace(sweep=sweep_dir, min_gain=0.002, max_p=0.05, apply=apply, trained_on="a test", json=out)
    module.decide(args)
    return json.loads(out.read_text())["experts"]["med"]  # type: ignore[no-any-return]


def row(lr: float, val: float, judged: list[float] | None = None) -> dict:  # type: ignore[type-arg]
    """A sweep result; ``judged`` are its scores on the judging slice's queries, in the slice's order."""
    scores = {"val_ndcg@10": val, **({"judge_ndcg@10": sum(judged) / len(judged)} if judged else {})}
    per_query = {"med": {f"q{i}": v for i, v in enumerate(judged)}} if judged else {}
    r = {"tag": f"med-lr{lr:g}-bs32", "name": "med", "lr": lr, "batch_size": 32, "val": scores}
    return {**r, "judge_per_query": per_query}


def test_candidates_with_a_judging_slice_are_judged_on_it_against_the_shipped_settings(
    sweep: tuple[ModuleType, Path, Path],
) -> None:
    module, shipped, sweep_dir = sweep
    # lr 2e-4 has the best early-stopping score, but on the judging slice lr 1e-3 leads the control (5e-4), on
    # every one of its twelve queries
    rows = [row(5e-4, 0.80, [0.70] * 12), row(2e-4, 0.85, [0.69] * 12), row(1e-3, 0.79, [0.73] * 12)]
    got = decide(module, sweep_dir, rows, apply=True)
    assert got["judged_on"].startswith("judging slice") and got["best"] == "med-lr0.001-bs32"
    assert got["gain"] == pytest.approx(0.03) and got["passes_rule"]
    assert got["paired_test_vs_control"]["wins"] == 12 and got["paired_test_vs_control"]["p_value"] < 0.01
    adapter = json.loads((shipped / "adapter_config.json").read_text())
    assert adapter["marker"] == "med-lr0.001-bs32"  # the winner is installed ...
    assert adapter["base_model_name_or_path"] == "/packaged/model"  # ... recording the shipped base's path
    assert json.loads((shipped / "manifest.json").read_text())["training"]["trained_on"] == "a test"
    assert not list(shipped.parent.glob(".*.tmp"))


def test_without_a_judging_slice_a_small_gain_over_the_shipped_score_keeps_the_shipped_expert(
    sweep: tuple[ModuleType, Path, Path],
) -> None:
    module, shipped, sweep_dir = sweep
    got = decide(module, sweep_dir, [row(5e-4, 0.79), row(1e-3, 0.8015)], apply=True)
    assert got["judged_on"] == "early-stopping slice" and got["best"] == "med-lr0.001-bs32"
    assert got["gain"] == pytest.approx(0.0015) and not got["passes_rule"]
    assert json.loads((shipped / "adapter_config.json").read_text())["marker"] == "shipped"  # untouched


def test_a_judged_gain_that_one_query_makes_keeps_the_shipped_expert(sweep: tuple[ModuleType, Path, Path]) -> None:
    module, shipped, sweep_dir = sweep
    # +0.15 on average, but from one query of two: a paired test cannot tell it from chance
    got = decide(module, sweep_dir, [row(5e-4, 0.80, [0.6, 0.8]), row(1e-3, 0.80, [0.9, 0.8])], apply=True)
    assert got["gain"] == pytest.approx(0.15) and got["paired_test_vs_control"]["p_value"] > 0.05
    assert not got["passes_rule"]
    assert json.loads((shipped / "adapter_config.json").read_text())["marker"] == "shipped"  # untouched


def test_candidates_judged_on_different_queries_are_refused(sweep: tuple[ModuleType, Path, Path]) -> None:
    module, _, sweep_dir = sweep
    other = row(1e-3, 0.80, [0.9, 0.9])
    other["judge_per_query"] = {"med": {"x": 0.9, "y": 0.9}}
    with pytest.raises(SystemExit, match="not judged on the same queries"):
        decide(module, sweep_dir, [row(5e-4, 0.80, [0.6, 0.8]), other], apply=False)


def test_grid_points_are_read_or_refused_clearly() -> None:
    module = load_script()
    assert module.grid_points("2e-4:32,1e-3:128") == [(2e-4, 32), (1e-3, 128)]
    for bad in ("2e-4", "fast:32", "2e-4:0", "-1:32"):
        with pytest.raises(argparse.ArgumentTypeError, match="is not LR:BATCH"):
            module.grid_points(bad)


def test_skipping_a_run_the_sweep_would_not_make_is_refused_before_any_work(
    sweep: tuple[ModuleType, Path, Path], beir_root: Path
) -> None:
    module, _, sweep_dir = sweep
    args = argparse.Namespace(
        data=beir_root, out=sweep_dir, only=None, points=[(2e-4, 32)], grid=1, skip={"aero-lr0.0003-bs32"}
    )
    with pytest.raises(SystemExit, match=r"would not make.*aero-lr0\.0003-bs32"):
        module.train(args)
    assert not list(sweep_dir.iterdir())  # nothing trained, nothing written


@pytest.mark.parametrize("bf16", ["true", "false"])
def test_candidates_train_at_the_precision_the_documents_were_encoded_with(
    sweep: tuple[ModuleType, Path, Path],
    tiny_model: Path,
    beir_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    bf16: str,
) -> None:
    import router.training.trainer as trainer

    module, _, sweep_dir = sweep
    monkeypatch.setenv("RR_BASE_MODEL", str(tiny_model))
    monkeypatch.setenv("RR_BF16", bf16)
    monkeypatch.setenv("RR_DEVICE", "cpu")
    get_settings.cache_clear()
    seen: list[trainer.TrainConfig] = []

    class Stop(Exception):
        pass

    def capture(*_: object, cfg: trainer.TrainConfig, **__: object) -> None:
        seen.append(cfg)
        raise Stop  # the config is all this test needs

    monkeypatch.setattr(trainer, "train_expert", capture)
    args = argparse.Namespace(
        data=beir_root,
        out=sweep_dir,
        only=["bio"],
        points=[(2e-4, 32)],
        grid=1,
        skip=set(),
        epochs=2,
        deadline=float("inf"),
        judge_fraction=0.1,
        fingerprint=None,
    )
    with pytest.raises(Stop):
        module.train(args)
    assert seen[0].bf16 is (bf16 == "true") and seen[0].bf16 is get_settings().bf16

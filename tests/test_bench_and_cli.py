"""`rr bench quality` end to end on the tiny model and collections (both modes), and the CLI over its output."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from benchmarks.quality import SERVABLE, choose_default_mode, choose_default_rule, comparisons, run_quality
from core.settings import get_settings
from router.systems import EXTRA_SYSTEMS, PAPER_SYSTEMS
from router.validation import VALIDATED
from tests.platform_fixtures import make_settings


def use_bench_settings(monkeypatch: pytest.MonkeyPatch, model: Path, experts: Path, cache: Path) -> None:
    """Point the CLI's settings at the tiny model and a bench's experts and cache."""
    for k, v in {
        "RR_BASE_MODEL": str(model),
        "RR_EXPERTS_DIR": str(experts),
        "RR_CACHE_DIR": str(cache),
        "RR_BF16": "false",
    }.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def bench(tiny_model: Path, beir_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:  # type: ignore[type-arg]
    root = tmp_path_factory.mktemp("bench")
    settings = make_settings(tiny_model, root)
    out = run_quality(
        settings,
        beir_root,
        ("query", "query+document"),
        None,
        train_budget_s=30,
        max_epochs=2,
        out_dir=root / "results",
        console=Console(quiet=True),
    )
    return out, root


def test_quality_json_has_every_system_dataset_and_mode(bench: tuple[dict, Path]) -> None:  # type: ignore[type-arg]
    out, root = bench
    on_disk = json.loads((root / "results" / "quality.json").read_text())
    assert on_disk["datasets"] == ["aero", "bio"] == out["datasets"]
    assert on_disk["default_mode"] == choose_default_mode(on_disk["modes"])[0]
    assert on_disk["default_mode_reason"] == choose_default_mode(on_disk["modes"])[1]
    assert set(on_disk["modes"]) == {"query", "query+document"}
    for body in on_disk["modes"].values():
        assert set(PAPER_SYSTEMS) | set(EXTRA_SYSTEMS) == set(body["systems"])
        for row in body["systems"].values():
            assert set(row) == {"aero", "bio", "avg"} and all(0.0 <= v <= 1.0 for v in row.values())
        assert set(body["expert_matrix"]) == {"aero", "bio", "multi_task", "base"}
        assert set(body["routing"]) == {"aero", "bio"} == set(body["routing_served"])
        assert body["default_rule"] in SERVABLE
        # the served rule is chosen on held-out training queries, not on the test rows above
        assert set(body["routing_validation"]) == set(VALIDATED)
        assert body["default_rule"] == choose_default_rule(body["routing_validation"], ["aero", "bio"])
        # beside it, the same systems on the queries each expert held out for early stopping (recorded in its
        # manifest)
        for name in ("aero", "bio"):
            recorded = body["experts"][name]["training"]["val_queries"][name]
            assert body["routing_unseen_queries"][name] == len(recorded) > 0
        assert set(body["routing_unseen"]) == set(VALIDATED)
        for row in body["routing_unseen"].values():
            assert set(row) == {"aero", "bio", "avg"}
        for d in ("aero", "bio", "avg"):
            want = body["systems"][body["default_rule"]][d] - body["systems"]["router_retriever"][d]
            assert abs(body["default_rule_test_delta"][d] - want) < 1e-3
        for shares in body["routing"].values():
            assert abs(sum(shares.values()) - 1.0) < 1e-6
        s = body["systems"]
        # the oracles bound every router from above
        for name in ("router_retriever", "dataset_router", "classification_head_router", "expert_classifier_router"):
            assert s["instance_oracle"]["avg"] >= s[name]["avg"] - 1e-9
        # the fallback margin is the held-out best (ties: the smaller)
        mv = {float(k): v for k, v in body["domain_rule_margin_validation"].items()}
        assert body["domain_rule_margin"] == min(m for m, v in mv.items() if v >= max(mv.values()) - 1e-6)
        # each domain's corpus is summarised into corpus pilots; their weight is the held-out best domain accuracy
        assert body["corpus_pilots"] > 0
        wv = {float(k): row["avg"] for k, row in body["corpus_weight_validation"].items()}
        assert body["corpus_weight"] == min(w for w, v in wv.items() if v >= max(wv.values()) - 1e-6)
        for rule, row in body["domain_accuracy"].items():
            assert rule in SERVABLE and set(row) == {"aero", "bio"} and all(0.0 <= v <= 1.0 for v in row.values())
        # paired tests: each difference is the one in the table above, its interval holds it, p is a probability
        assert set(body["significance"]) == {f"{a} vs {b}" for a, b in comparisons(body["default_rule"])}
        for name, r in body["significance"].items():
            a, b = name.split(" vs ")
            assert abs(r["diff"] - (s[a]["avg"] - s[b]["avg"])) < 1e-3
            assert r["ci95"][0] - 1e-4 <= r["diff"] <= r["ci95"][1] + 1e-4 and 0.0 <= r["p_value"] <= 1.0
        for e, r in body["expert_vs_base_significance"].items():
            m = body["expert_matrix"]
            assert abs(r["diff"] - (m[e][e] - m["base"][e])) < 1e-3
    md = (root / "results" / "quality.md").read_text()
    assert "| router_retriever vs dataset_router |" in md
    assert "on the training queries no expert trained on" in md
    assert "Corpus rule: " in md and "| router_retriever_corpus |" in md
    assert (root / "results" / "quality.md").read_text().startswith("# Quality")
    assert (root / "experts" / "query" / "pilots.json").is_file()
    assert (root / "experts" / "query-document" / "aero" / "manifest.json").is_file()


def _modes(query_avg: float, qd_avg: float) -> dict:  # type: ignore[type-arg]
    def body(avg: float) -> dict:  # type: ignore[type-arg]
        return {
            "default_rule": "router_retriever",
            "systems": {"router_retriever": {"avg": avg}},
            "expert_matrix": {"a": {}, "b": {}, "multi_task": {}, "base": {}},
        }

    return {"query": body(query_avg), "query+document": body(qd_avg)}


def test_the_default_mode_weighs_quality_against_ingestion_cost() -> None:
    assert choose_default_mode(_modes(0.50, 0.505))[0] == "query"  # half a point does not pay for 2 passes
    mode, why = choose_default_mode(_modes(0.50, 0.52))
    assert mode == "query+document" and "52.0 vs 50.0" in why and "2 times" in why
    assert choose_default_mode({"query": _modes(0.5, 0.5)["query"]}) == ("query", "only query was measured")


def test_rerun_from_cache_trains_nothing(bench: tuple[dict, Path], tiny_model: Path, beir_root: Path) -> None:  # type: ignore[type-arg]
    out, root = bench
    settings = make_settings(tiny_model, root)
    again = run_quality(
        settings,
        beir_root,
        ("query",),
        None,
        train_budget_s=30,
        max_epochs=2,
        out_dir=root / "results2",
        console=Console(quiet=True),
    )
    assert "train_query" not in again["seconds"] or again["seconds"]["train_query"] < 5
    assert again["modes"]["query"]["systems"] == out["modes"]["query"]["systems"]


def test_rerunning_one_mode_keeps_the_other_with_its_provenance(
    bench: tuple[dict, Path],  # type: ignore[type-arg]
    tiny_model: Path,
    beir_root: Path,
) -> None:
    import shutil

    out, root = bench
    folder = root / "one-mode"
    shutil.copytree(root / "results", folder)
    before = json.loads((folder / "quality.json").read_text())
    before["modes"]["query+document"]["commit"] = "0123456789abcdef"  # as if measured by an earlier commit
    (folder / "quality.json").write_text(json.dumps(before))
    again = run_quality(
        make_settings(tiny_model, root),
        beir_root,
        ("query",),
        None,
        train_budget_s=30,
        max_epochs=2,
        out_dir=folder,
        console=Console(quiet=True),
    )
    assert list(again["modes"]) == ["query", "query+document"]
    kept = again["modes"]["query+document"]
    assert kept["commit"] == "0123456789abcdef" and kept["systems"] == out["modes"]["query+document"]["systems"]
    assert set(kept["seconds"]) and all(k.endswith("_query+document") for k in kept["seconds"])
    assert again["modes"]["query"]["commit"] == again["commit"]
    assert "Kept from an earlier run at commit 0123456789" in (folder / "quality.md").read_text()
    # A result on other datasets is not mixed in: the rerun's file holds its own mode only.
    other = json.loads((folder / "quality.json").read_text())
    other["datasets"] = ["aero"]
    (folder / "quality.json").write_text(json.dumps(other))
    alone = run_quality(
        make_settings(tiny_model, root), beir_root, ("query",), None, 30, 2, folder, Console(quiet=True)
    )
    assert list(alone["modes"]) == ["query"]


def test_a_run_keeps_no_other_mode_from_an_unreadable_file_or_for_a_subset(tmp_path: Path) -> None:
    from benchmarks.quality import carried_modes

    path = tmp_path / "quality.json"
    body = {"systems": {}, "commit": "abc"}
    path.write_text(json.dumps({"datasets": ["aero", "bio"], "modes": {"query+document": body}, "commit": "abc"}))
    assert set(carried_modes(tmp_path, ["aero", "bio"], ["query"], None)) == {"query+document"}
    assert carried_modes(tmp_path, ["aero", "bio"], ["query"], ["aero"]) == {}  # --only writes its own folder
    assert carried_modes(tmp_path, ["aero", "bio"], ["query", "query+document"], None) == {}  # both rerun
    path.write_text('{"datasets": ["aero", "bio"], "modes": {')  # cut short: the new run replaces it
    assert carried_modes(tmp_path, ["aero", "bio"], ["query"], None) == {}
    path.write_bytes(b"\xff\xfe")
    assert carried_modes(tmp_path, ["aero", "bio"], ["query"], None) == {}


def test_cli_eval_and_experts_list(
    bench: tuple[dict, Path],  # type: ignore[type-arg]
    tiny_model: Path,
    beir_root: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from cli.main import app

    out, root = bench
    use_bench_settings(monkeypatch, tiny_model, root / "experts", root / "cache")
    try:
        runner = CliRunner()
        res = runner.invoke(app, ["eval", "--data", str(beir_root / "bio"), "--system", "router_retriever"])
        assert res.exit_code == 0, res.output
        score = float(res.stdout.strip().rsplit("=", 1)[1])
        assert abs(score - out["modes"]["query"]["systems"]["router_retriever"]["bio"]) < 1e-3
        # the domain rule as served (with the served fallback margin) scores what the benchmark reported
        res = runner.invoke(app, ["eval", "--data", str(beir_root / "bio"), "--system", "router_retriever_domain"])
        assert res.exit_code == 0, res.output
        score = float(res.stdout.strip().rsplit("=", 1)[1])
        assert abs(score - out["modes"]["query"]["systems"]["router_retriever_domain"]["bio"]) < 1e-3
        # and the corpus rule with the served corpus weight
        res = runner.invoke(app, ["eval", "--data", str(beir_root / "bio"), "--system", "router_retriever_corpus"])
        assert res.exit_code == 0, res.output
        score = float(res.stdout.strip().rsplit("=", 1)[1])
        assert abs(score - out["modes"]["query"]["systems"]["router_retriever_corpus"]["bio"]) < 1e-3
        # an expert registered since the pilot scores were made is left out of routing, as served, not an error
        reg = root / "experts" / "query"
        shutil.copytree(reg / "bio", reg / "bio2")
        manifest = json.loads((reg / "bio2" / "manifest.json").read_text())
        (reg / "bio2" / "manifest.json").write_text(json.dumps({**manifest, "name": "bio2"}))
        res = runner.invoke(app, ["eval", "--data", str(beir_root / "bio"), "--system", "router_retriever_corpus"])
        assert res.exit_code == 0, res.output
        assert "leaving out bio2" in res.output and float(res.stdout.strip().rsplit("=", 1)[1]) == score
        shutil.rmtree(reg / "bio2")
        empty = tmp_path / "empty-split" / "bio"
        shutil.copytree(beir_root / "bio", empty)
        (empty / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n")
        res = runner.invoke(app, ["eval", "--data", str(empty), "--system", "base"])  # was nDCG@10 = 0.0000
        assert res.exit_code == 2 and "judges no query" in res.output, res.output
        res = runner.invoke(app, ["experts", "list"])
        assert "aero" in res.output and "bio" in res.output
        res = runner.invoke(app, ["eval", "--data", str(beir_root / "nope"), "--system", "base"])
        assert res.exit_code == 2 and "no such collection folder" in res.output
        served = out["modes"]["query"]["default_rule"]
        res = runner.invoke(app, ["route", "supersonic wing flow"])
        assert res.exit_code == 0 and f"(rule: {SERVABLE[served]})" in res.output, res.output
        res = runner.invoke(app, ["route", "supersonic wing flow", "--rule", "domain"])
        assert res.exit_code == 0 and "(rule: domain)" in res.output
        res = runner.invoke(app, ["route", "supersonic wing flow", "--rule", "vote"])
        assert res.exit_code == 2 and "unknown routing rule" in res.output
        # Removing an expert rebuilds the pilots without it and keeps the served rule (the last use of this bench).
        res = runner.invoke(app, ["experts", "remove", "aero"])
        assert res.exit_code == 0, res.output
        pilots = json.loads((root / "experts" / "query" / "pilots.json").read_text())
        assert pilots["rule"] == SERVABLE[served] and {p["expert"] for p in pilots["pilots"]} == {"bio"}
    finally:
        get_settings.cache_clear()


def test_an_extra_rule_is_served_only_if_it_wins_without_losing_a_point_anywhere() -> None:
    paper = {"x": 0.50, "y": 0.50, "avg": 0.50}
    rows = {name: dict(paper) for name in SERVABLE}
    rows["router_retriever_domain"] = {"x": 0.60, "y": 0.485, "avg": 0.5425}  # +10 on x, -1.5 on y
    assert choose_default_rule(rows, ["x", "y"]) == "router_retriever"
    rows["router_retriever_domain"] = {"x": 0.60, "y": 0.495, "avg": 0.5475}  # -0.5 on y: allowed
    assert choose_default_rule(rows, ["x", "y"]) == "router_retriever_domain"


def test_cli_trains_the_multi_task_baseline_on_every_collection(
    bench: tuple[dict, Path],  # type: ignore[type-arg]
    tiny_model: Path,
    beir_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shutil

    from cli.main import app

    _, root = bench
    experts = tmp_path / "experts"
    shutil.copytree(root / "experts", experts)  # the bench's own baseline stays as the other tests saw it
    manifest = experts / "baselines" / "multi_task-query" / "manifest.json"
    before = json.loads(manifest.read_text())
    use_bench_settings(monkeypatch, tiny_model, experts, root / "cache")
    try:
        runner = CliRunner()
        args = ["experts", "train-multi-task", "--data", str(beir_root), "--max-epochs", "1", "--budget", "30"]
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and "pass --replace" in res.output
        assert json.loads(manifest.read_text()) == before  # refused: nothing touched
        res = runner.invoke(app, [*args, "--only", "bio,nope", "--replace"])
        assert res.exit_code == 2 and "no collection named nope" in res.output
        # a collection without a train split: named, it is an error; found among others, it is left out
        untrained = tmp_path / "beir"
        shutil.copytree(beir_root / "bio", untrained / "bio")
        (untrained / "bio" / "qrels" / "train.tsv").unlink()
        no_train = ["experts", "train-multi-task", "--data", str(untrained), "--max-epochs", "1", "--replace"]
        res = runner.invoke(app, [*no_train, "--only", "bio"])
        said = " ".join(res.output.split())  # the console wraps long lines
        assert res.exit_code == 2 and "bio under" in said and "has no train split" in said
        res = runner.invoke(app, no_train)
        said = " ".join(res.output.split())
        assert res.exit_code == 2 and "needs at least one collection with a train split" in said
        assert json.loads(manifest.read_text()) == before  # every refusal left the baseline as it was
        res = runner.invoke(app, [*args, "--lr", "1e-3", "--replace"])
        assert res.exit_code == 0, res.output
        after = json.loads(manifest.read_text())
        assert after["name"] == "multi_task" and after["domain"] == "all" and after["sides"] == "query"
        assert sorted(after["training"]["data"]) == sorted(p.name for p in beir_root.iterdir())
        assert after["training"]["config"]["lr"] == 1e-3 and after["created_at"] != before["created_at"]
        assert not list(manifest.parent.parent.glob(".*.tmp")) and not list(manifest.parent.parent.glob(".*.old"))
    finally:
        get_settings.cache_clear()


def test_ctrl_c_during_cli_training_registers_the_best_checkpoint_so_far(
    tiny_model: Path,
    beir_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`rr experts train` interrupted in its second epoch: the expert of the first epoch is registered, the manifest
    and the console say it was interrupted."""
    from collections.abc import Iterator
    from contextlib import contextmanager
    from typing import Any

    import cli.main as cli_main
    from router.experts import ExpertRegistry

    real_display = cli_main._training_display

    @contextmanager
    def display_then_ctrl_c() -> Iterator[dict[str, Any]]:
        with real_display() as kwargs:
            seen = [0]

            def on_step(done: int, total: int) -> None:
                kwargs["on_step"](done, total)
                seen[0] += 1
                if seen[0] == total + 1:  # the first step of the second epoch
                    raise KeyboardInterrupt

            yield {**kwargs, "on_step": on_step}

    monkeypatch.setattr(cli_main, "_training_display", display_then_ctrl_c)
    use_bench_settings(monkeypatch, tiny_model, tmp_path / "experts", tmp_path / "cache")
    try:
        args = ["experts", "train", "--data", str(beir_root / "bio"), "--name", "bio", "--max-epochs", "4"]
        stale = tmp_path / "experts" / "query" / ".bio.tmp"  # an earlier run's leftovers: not part of this expert
        stale.mkdir(parents=True)
        (stale / "STALE_FILE").write_text("from a run that was killed")
        res = CliRunner().invoke(cli_main.app, [*args, "--budget", "120", "--lr", "1e-3"])
        assert res.exit_code == 0, res.output
        said = " ".join(res.output.split())
        assert "interrupted: kept epoch" in said and "of 1 completed" in said and "registered 'bio'" in said
        manifest = ExpertRegistry(tmp_path / "experts" / "query").get("bio").manifest
        assert manifest.training["stopped_by"] == "interrupted" and manifest.training["epochs_run"] == 1
        assert not list((tmp_path / "experts" / "query").glob(".*.tmp"))
        assert not (tmp_path / "experts" / "query" / "bio" / "STALE_FILE").exists()
    finally:
        get_settings.cache_clear()


def test_an_expert_registered_while_cli_training_runs_is_not_replaced(
    tiny_model: Path, beir_root: Path, tiny_experts: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`rr experts train` checks the name at its start; one registered by another run while it trained is kept (it
    was replaced without a word), and the expert trained here is left where the message says."""
    from typing import Any

    import cli.main as cli_main
    import router.training.trainer as trainer

    real_train = trainer.train_expert
    registry = tmp_path / "experts" / "query"

    def train_while_another_registers(*args: Any, **kwargs: Any) -> Any:
        out = real_train(*args, **kwargs)
        shutil.copytree(tiny_experts["bio"], registry / "bio")  # another run finished first
        return out

    monkeypatch.setattr(trainer, "train_expert", train_while_another_registers)
    use_bench_settings(monkeypatch, tiny_model, tmp_path / "experts", tmp_path / "cache")
    try:
        args = ["experts", "train", "--data", str(beir_root / "bio"), "--name", "bio", "--max-epochs", "1"]
        res = CliRunner().invoke(cli_main.app, [*args, "--budget", "60"])
        said = " ".join(res.output.split())
        assert res.exit_code == 2 and "registered while this one trained" in said, res.output
        weights = "adapter_model.safetensors"
        assert (registry / "bio" / weights).read_bytes() == (tiny_experts["bio"] / weights).read_bytes()  # kept
        assert (registry / ".bio.tmp" / "manifest.json").is_file()  # the one trained here, where the message says
    finally:
        get_settings.cache_clear()


def test_an_expert_whose_held_out_slice_is_lost_leaves_only_its_rows(bench: tuple[dict, Path], beir_root: Path) -> None:  # type: ignore[type-arg]
    import copy

    import numpy as np

    from benchmarks.quality import unseen_routing
    from ingest.beir import discover, load_dataset
    from router.experts import ExpertRegistry
    from router.pilots import PilotScores

    _, root = bench
    reg = ExpertRegistry(root / "experts" / "query")
    ps = PilotScores.load(reg.root / "pilot_scores.npz")
    experts = [copy.deepcopy(x) for x in reg.all()]
    datasets = [load_dataset(p) for p in discover(beir_root)]
    base = {d: np.zeros(len(q), dtype=np.float32) for d, q in ps.domains.items()}
    names = sorted(x.name for x in experts)  # other tests may have removed one of the bench's experts
    table, ids, skipped = unseen_routing(ps, names, base, experts, datasets, 0.0)
    assert set(ids) == set(names) and not skipped
    assert set(table["dataset_router"]) == {*names, "avg"}
    # An old manifest (no recorded ids) of an expert trained on more than its own domain: its slice cannot be drawn
    # again, so its domain leaves the table with the reason; the others stay.
    lost = experts[-1]
    del lost.manifest.training["val_queries"]
    lost.manifest.training["data"] = [lost.name, "elsewhere"]
    table, ids, skipped = unseen_routing(ps, names, base, experts, datasets, 0.0)
    assert set(ids) == set(names) - {lost.name} and "cannot be drawn again" in skipped[lost.name]
    assert table == {} if not ids else set(table["dataset_router"]) == {*ids, "avg"}


def test_where_no_bar_shows_a_slow_step_gets_a_line(tiny_model: Path, tmp_path: Path) -> None:
    import io

    from rich.progress import Progress

    from benchmarks.quality import Bench

    def log_of(log_after_s: float, log_every_s: float = 60.0) -> str:
        buf = io.StringIO()
        console = Console(file=buf, force_terminal=False, width=200)  # a log file, not a terminal
        bench = Bench(make_settings(tiny_model, tmp_path), console, 30, 1)
        bench.log_after_s = log_after_s
        bench.log_every_s = log_every_s
        with Progress(console=console, transient=True) as prog:
            advance = bench._progress_factory(prog)("aero docs [base]", 3)
            advance(2)
            advance(1)
        return buf.getvalue()

    assert "aero docs [base]: 3 texts in 0s" in log_of(0.0)
    assert "aero docs" not in log_of(60.0)  # a quick (e.g. cached) step stays quiet
    # a step still running when a line is due says how far it has got, then how long it took in all
    running = log_of(0.0, log_every_s=0.0)
    assert "aero docs [base]: 2/3 texts after 0s" in running and "aero docs [base]: 3 texts in 0s" in running
    assert "2/3" not in log_of(0.0)  # under a minute: no running line


def test_a_subset_run_keeps_its_own_multi_task_baseline(tmp_path: Path) -> None:
    """A baseline trained on a subset was written where the full run's is, and stood in for it from then on."""
    from benchmarks.quality import Bench
    from ingest.beir import BeirDataset
    from router.experts import Manifest
    from router.workbench import baseline_data, baseline_dir

    settings = get_settings().model_copy(update={"experts_dir": str(tmp_path / "experts")})
    bench = Bench.__new__(Bench)  # no encoder: only where the baseline goes is asked
    bench.settings, bench.out_dir = settings, tmp_path / "subset"
    both = [BeirDataset(n, tmp_path / n, [], {}, {}) for n in ("aero", "bio")]
    shared = baseline_dir(settings, "query")
    shared.mkdir(parents=True)
    Manifest("multi_task", "all", "m", "fp", training={"data": ["bio", "aero"]}).save(shared)
    assert baseline_data(shared) == ["aero", "bio"]
    bench.only = None
    assert bench.baseline_for("query", both) == shared
    bench.only = ["bio"]
    assert bench.baseline_for("query", both[1:]) == tmp_path / "subset" / "baselines" / shared.name
    assert bench.baseline_for("query", both) == shared  # a subset that is all of them uses the shared one

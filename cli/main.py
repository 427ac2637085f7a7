"""`rr`: train experts, build pilots, route, evaluate, benchmark, download data."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from core.errors import RRError
from core.settings import get_settings

app = typer.Typer(help="RouterRetriever: routed LoRA experts over a frozen encoder.", no_args_is_help=True)
experts_app = typer.Typer(help="Train, list and remove experts.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print a table and write benchmarks/results/*.json.", no_args_is_help=True)
app.add_typer(experts_app, name="experts")
app.add_typer(bench_app, name="bench")
console = Console()

Mode = Annotated[str, typer.Option(help="Expert sides: 'query' (default, the paper's) or 'query+document'.")]


def _fail(err: Exception) -> None:
    console.print(f"[red]error:[/] {err}")
    raise typer.Exit(2)


@experts_app.command("train")
def experts_train(
    data: Annotated[Path, typer.Option(help="A BEIR collection folder with qrels/train.tsv.")],
    name: Annotated[str, typer.Option(help="Expert name (also its domain unless --domain).")],
    sides: Mode = "query",
    domain: Annotated[str | None, typer.Option()] = None,
    budget: Annotated[float, typer.Option(help="Time budget in seconds.")] = 420.0,
    max_epochs: Annotated[int, typer.Option()] = 15,
    lr: Annotated[float, typer.Option()] = 5e-4,
    replace: Annotated[bool, typer.Option(help="Replace an expert of that name.")] = False,
) -> None:
    """Train one LoRA expert on a BEIR collection's train split and register it."""
    import shutil

    from ingest.beir import load_dataset
    from router.experts import check_name
    from router.training.data import domain_data
    from router.training.trainer import TrainConfig, train_expert
    from router.workbench import make_encoder, registry_for

    try:
        s = get_settings()
        check_name(name)
        reg = registry_for(s, sides)
        if name in reg.names() and not replace:
            _fail(RRError(f"expert {name!r} exists in {reg.root}; pass --replace to retrain it"))
        ds = load_dataset(data, ("train",))
        enc = make_encoder(s)
        docs = {ds.name: enc.encode([d.full_text for d in ds.corpus], None, "document")}
        cfg = TrainConfig(
            sides=sides,
            time_budget_s=budget,
            max_epochs=max_epochs,
            lr=lr,
            query_max_length=s.query_max_length,
            doc_max_length=s.doc_max_length,
        )
        tmp = reg.root / f".{name}.tmp"
        res = train_expert(
            s.base_model,
            enc.base_fingerprint,
            [domain_data(ds)],
            tmp,
            name=name,
            domain=domain or ds.name,
            cfg=cfg,
            doc_matrices=docs,
            progress=lambda ep, v, loss: console.print(f"{ep}: held-out nDCG@10 {v:.4f} loss {loss:.3f}"),
        )
        expert = reg.add(tmp, replace=True)
        shutil.rmtree(tmp, ignore_errors=True)
        console.print(f"registered {expert.name!r} at {expert.path}: {res.manifest.scores}")
        console.print("rebuild the pilot library with `rr bench quality` (or `rr pilots build`) to route to it")
    except RRError as e:
        _fail(e)


@experts_app.command("list")
def experts_list(sides: Mode = "query") -> None:
    from router.workbench import registry_for

    reg = registry_for(get_settings(), sides)
    for e in reg.all():
        m = e.manifest
        console.print(f"{m.name}\tdomain={m.domain}\tsides={m.sides}\tr={m.rank}\tscores={m.scores}\t{e.path}")


@experts_app.command("remove")
def experts_remove(name: str, sides: Mode = "query") -> None:
    """Remove an expert and rebuild the pilots without it (no training)."""
    from router.pilots import PilotScores
    from router.workbench import registry_for

    try:
        reg = registry_for(get_settings(), sides)
        reg.remove(name)
        scores_path = reg.root / "pilot_scores.npz"
        if scores_path.is_file():
            ps = PilotScores.load(scores_path)
            ps.remove_expert(name)
            ps.save(scores_path)
            ps.build([e for e in reg.names() if e in ps.experts]).save(reg.root / "pilots.json")
        console.print(f"removed {name!r}; pilots rebuilt from the remaining experts")
    except RRError as e:
        _fail(e)


@app.command()
def route(query: str, sides: Mode = "query", rule: str = "mean") -> None:
    """Show which expert a query is routed to, and the per-expert scores."""
    from router.pilots import PilotLibrary
    from router.workbench import make_encoder, registry_for

    try:
        s = get_settings()
        lib = PilotLibrary.load(registry_for(s, sides).root / "pilots.json")
        enc = make_encoder(s)
        (decision,) = lib.route(enc.encode([query], None, "query"), rule)
        console.print(f"expert: [bold]{decision.expert}[/]")
        for e, v in sorted(decision.scores.items(), key=lambda kv: -kv[1]):
            console.print(f"  {e:<12} {v:.4f}")
    except RRError as e:
        _fail(e)


@app.command("eval")
def eval_(
    data: Annotated[Path, typer.Option(help="A BEIR collection folder (it needs no expert: zero-shot works).")],
    system: Annotated[str, typer.Option(help="base, multi_task, router_retriever, expert:NAME, dataset_oracle, ...")],
    sides: Mode = "query",
    split: str = "test",
) -> None:
    """Score one system on one collection's split with nDCG@10."""
    from router.evaluate import evaluate_system

    try:
        score = evaluate_system(get_settings(), data, system, sides, split, console)
        console.print(f"{data.name} {split} {system} ({sides}): nDCG@10 = {score:.4f}")
    except (RRError, KeyError) as e:
        _fail(e)


@bench_app.command("quality")
def bench_quality(
    data: Annotated[Path, typer.Option(help="Folder of BEIR collections.")] = Path("../shared/data/beir"),
    modes: Annotated[str, typer.Option(help="Comma-separated: query,query+document")] = "query,query+document",
    only: Annotated[str | None, typer.Option(help="Comma-separated dataset names.")] = None,
    budget: Annotated[float, typer.Option(help="Training time budget per expert, seconds.")] = 420.0,
    max_epochs: Annotated[int, typer.Option()] = 15,
) -> None:
    """Table 1 on the data at hand: every system, every dataset, both expert modes."""
    from benchmarks.quality import run_quality

    try:
        run_quality(
            get_settings(),
            data,
            [m.strip() for m in modes.split(",") if m.strip()],
            [o.strip() for o in only.split(",")] if only else None,
            budget,
            max_epochs,
            console=console,
        )
    except RRError as e:
        _fail(e)


@app.command()
def download(
    name: Annotated[str, typer.Argument(help="A BEIR dataset name, e.g. scifact.")],
    out: Annotated[Path, typer.Option(help="Folder to unpack into.")] = Path("data/beir"),
    url: Annotated[str | None, typer.Option(help="Archive URL (default: the official BEIR archive).")] = None,
) -> None:
    """Download and unpack an official BEIR archive (needs the internet)."""
    from ingest.download import download_beir

    try:
        path = download_beir(name, out, url=url)
        console.print(f"unpacked into {path}")
    except RRError as e:
        _fail(e)


def main() -> None:  # pragma: no cover
    sys.exit(app())

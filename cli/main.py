"""`rr`: train experts, build pilots, route, evaluate, benchmark, download data."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from core.errors import Conflict, InvalidInput, NotFound, RRError
from core.settings import get_settings

if TYPE_CHECKING:
    from router.experts import Manifest
    from router.training.trainer import TrainConfig


class _Commands(TyperGroup):
    """Every command's refusal is one ``error:`` line and exit status 2, not a traceback or a boxed usage text: the
    platform's own errors wherever a command did not catch them (a store URL, a cluster option), settings that do not
    parse, and a subcommand's missing or unknown option or argument."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        """An argument that is not UTF-8 (Python keeps the undecodable bytes as lone surrogates) is refused here, in
        one line, rather than as a UnicodeEncodeError wherever it is first encoded (a query, a path)."""
        from core.text import is_unicode

        for arg in args:
            if not is_unicode(arg):
                shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                _fail(RRError(f"argument {shown!r} is not UTF-8 text; check the terminal's encoding"))
        return super().parse_args(ctx, args)  # type: ignore[no-any-return]

    def invoke(self, ctx: Any) -> Any:  # click's Context (typer's own copy of click)
        from pydantic import ValidationError

        try:  # typer 0.2x carries its own copy of click, whose exceptions are its own
            from typer._click.exceptions import NoArgsIsHelpError, UsageError
        except ImportError:  # typer on the click package
            from click.exceptions import NoArgsIsHelpError, UsageError  # type: ignore[assignment]

        try:
            return super().invoke(ctx)
        except RRError as e:
            _fail(e)
        except NoArgsIsHelpError:  # `rr experts` alone: its help, as click shows it
            raise
        except UsageError as e:  # a subcommand's missing or unknown option: one line, as every refusal
            where = e.ctx.command_path if e.ctx is not None else "rr"
            _fail(RRError(f"{e.format_message()} (see `{where} --help`)"))
        except ValidationError as e:
            if e.title != "Settings":
                raise
            _fail(RRError(f"bad settings: {settings_problems(e)}"))


def settings_problems(e: Any) -> str:
    """Pydantic's errors for the settings, one per variable: a field of a union type (RR_BF16: a boolean or 'auto')
    gets one error per branch, whose location names the branch, not a variable."""
    by_var: dict[str, tuple[Any, list[str]]] = {}
    for err in e.errors():
        var = f"RR_{str(err['loc'][0]).upper()}" if err["loc"] else "settings"
        _, msgs = by_var.setdefault(var, (err.get("input"), []))
        msg = str(err["msg"]).removeprefix("Value error, ")
        if msg not in msgs:
            msgs.append(msg)
    return "; ".join(f"{var}={value!r}: {' or '.join(msgs)}" for var, (value, msgs) in by_var.items())


app = typer.Typer(
    help="RouterRetriever: routed LoRA experts over a frozen encoder.", no_args_is_help=True, cls=_Commands
)
experts_app = typer.Typer(help="Train, list and remove experts.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print a table and write benchmarks/results/*.json.", no_args_is_help=True)
tenants_app = typer.Typer(
    help="Tenants and their API keys, through the API (admin key): create, list, issue, revoke.", no_args_is_help=True
)
collections_app = typer.Typer(
    help="Collections and ingestion jobs, through the API (any key: a tenant's sees its own).", no_args_is_help=True
)
jobs_app = typer.Typer(help="Ingestion jobs, through the API.", no_args_is_help=True)
app.add_typer(experts_app, name="experts")
app.add_typer(bench_app, name="bench")
app.add_typer(tenants_app, name="tenants")
app.add_typer(collections_app, name="collections")
app.add_typer(jobs_app, name="jobs")
console = Console()

Mode = Annotated[str, typer.Option(help="Expert sides: 'query' (default, the paper's) or 'query+document'.")]


errors = Console(stderr=True, soft_wrap=True)  # errors to stderr, one line whatever the width


def path_segment(value: str, what: str) -> str:
    from api.client import path_segment as segment  # httpx only for the commands that send requests

    return segment(value, what)


def _fail(err: Exception) -> None:
    errors.print(f"[red]error:[/] {escape(str(err))}")  # the message is text: a path's "[/x]" is not markup
    raise typer.Exit(2)


def _train_config(sides: str, budget: float, max_epochs: int, lr: float, **extra: Any) -> TrainConfig:
    """Training settings from the command line, with the query and document lengths and device of the settings."""
    from router.training.trainer import TrainConfig

    s = get_settings()
    return TrainConfig(
        sides=sides,
        time_budget_s=budget,
        max_epochs=max_epochs,
        lr=lr,
        query_max_length=s.query_max_length,
        doc_max_length=s.doc_max_length,
        device=s.device,
        bf16=s.bf16,
        **extra,
    )


@contextmanager
def _training_display() -> Iterator[dict[str, Any]]:
    """Keyword arguments for ``train_expert``: a line per epoch, a bar over each epoch's steps, and Ctrl-C ending
    training with the best checkpoint so far."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as prog:
        bar = prog.add_task("epoch 1", total=None)
        epochs = [0]

        def on_epoch(ep: str, v: float, loss: float) -> None:
            console.print(f"{ep}: held-out nDCG@10 {v:.4f} loss {loss:.3f}")
            epochs[0] += 1
            prog.reset(bar, description=f"epoch {epochs[0]} (Ctrl-C: stop, keep the best so far)", total=None)

        def on_step(done: int, total: int) -> None:
            prog.update(bar, completed=done, total=total)

        yield {"progress": on_epoch, "on_step": on_step, "keep_on_interrupt": True}


def _report_stop(manifest: Manifest) -> None:
    t = manifest.training
    if t.get("stopped_by") == "interrupted":
        console.print(
            f"[yellow]interrupted[/]: kept epoch {t['best_epoch']} of {t['epochs_run']} completed "
            f"(held-out nDCG@10 {manifest.scores['val_ndcg@10']:.4f})"
        )


@experts_app.command("train")
def experts_train(
    data: Annotated[Path, typer.Option(help="A BEIR collection folder with qrels/train.tsv.")],
    name: Annotated[str, typer.Option(help="Expert name.")],
    sides: Mode = "query",
    domain: Annotated[
        str | None,
        typer.Option(
            help="The domain it is for, as the pilot library names domains (default: the --data folder's name)."
        ),
    ] = None,
    budget: Annotated[float, typer.Option(help="Time budget in seconds.")] = 420.0,
    max_epochs: Annotated[int, typer.Option()] = 15,
    lr: Annotated[float, typer.Option()] = 5e-4,
    real_share: Annotated[
        float,
        typer.Option(help="Where self-supervised pairs top up the data: repeat real queries to this share of rows."),
    ] = 0.0,
    val_real_weight: Annotated[
        float | None,
        typer.Option(
            help="Early stopping: the weight of held-out real queries against held-out self-supervised pairs "
            "(default: every held-out example alike)."
        ),
    ] = None,
    hard_negatives: Annotated[
        int,
        typer.Option(help="query+document: per row, this many base-ranked non-relevant documents as negatives."),
    ] = 0,
    pseudo_context: Annotated[
        str,
        typer.Option(
            help="query+document: a pseudo-query's positive is its 'whole' document, or the document without it "
            "('ict', the inverse cloze task)."
        ),
    ] = "whole",
    doc_anchor: Annotated[
        float,
        typer.Option(
            help="query+document: weight of the pull of each batch's documents back to the base model's vectors "
            "(in logit units; 0: none)."
        ),
    ] = 0.0,
    replace: Annotated[bool, typer.Option(help="Replace an expert of that name.")] = False,
) -> None:
    """Train one LoRA expert on a BEIR collection's train split and register it."""
    import shutil

    from ingest.beir import load_dataset
    from router.experts import check_name
    from router.training.data import domain_data, left_out
    from router.training.trainer import check_trainable, train_expert
    from router.workbench import make_encoder, registry_for

    try:
        s = get_settings()
        check_name(name)
        reg = registry_for(s, sides)
        if (reg.root / name).exists() and not replace:
            if name in reg.names():
                _fail(RRError(f"expert {name!r} exists in {reg.root}; pass --replace to retrain it"))
            _fail(  # a folder of that name whose manifest does not load
                RRError(
                    f"{reg.root / name} exists and holds no expert that loads; `rr experts remove {name}` clears it, "
                    "or pass --replace to train over it"
                )
            )
        cfg = _train_config(  # every option is checked before the corpus is read and encoded
            sides,
            budget,
            max_epochs,
            lr,
            real_share=real_share,
            val_real_weight=val_real_weight,
            hard_negatives=hard_negatives,
            pseudo_context=pseudo_context,
            doc_anchor=doc_anchor,
        )
        ds = load_dataset(data, ("train",))  # no train split: an error naming the splits the folder has
        if not ds.qrels["train"]:  # self-supervised pairs alone would make an expert of no real query
            raise InvalidInput(f"{data}: qrels/train.tsv judges no query; there is nothing to train on", field="data")
        dropped = left_out(ds)
        if dropped:
            errors.print(
                f"note: {len(dropped)} judged training queries are left out: none of their relevant documents is in "
                f"the corpus (first: {dropped[0]!r})",
                markup=False,
            )
        training_data = domain_data(ds)
        check_trainable(
            [training_data], cfg
        )  # nothing to train on or to hold out: refused before the corpus is encoded
        enc = make_encoder(s)
        docs = {ds.name: _encode_corpus(enc, ds)}
        tmp = reg.root / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)  # an earlier run's leftovers are not part of this expert
        with _training_display() as display:
            res = train_expert(
                s.base_model,
                enc.base_fingerprint,
                [training_data],
                tmp,
                name=name,
                domain=domain or ds.name,
                cfg=cfg,
                doc_matrices=docs,
                **display,
            )
        try:
            expert = reg.add(tmp, replace=replace)  # another run may have registered the name meanwhile
        except Conflict as e:
            raise Conflict(
                f"{e}: it was registered while this one trained; the expert trained here is kept in {tmp} (pass "
                "--replace to train again over the other; the next run of this name clears that folder)"
            ) from e
        shutil.rmtree(tmp, ignore_errors=True)
        _report_stop(res.manifest)
        console.print(f"registered {expert.name!r} at {expert.path}: {res.manifest.scores}")
        console.print(
            f"to route to it, rebuild the pilot library with `rr bench quality --modes {sides}` (it routes to the "
            "experts named after a collection under its --data)"
        )
    except RRError as e:
        _fail(e)


def _encode_corpus(enc: Any, ds: Any) -> Any:
    """The collection's documents through the frozen base (cached), with a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    texts = [d.full_text for d in ds.corpus]
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as prog:
        task = prog.add_task(f"encoding {ds.name}'s corpus", total=len(texts))
        return enc.encode(texts, None, "document", progress=lambda n: prog.advance(task, n))


@experts_app.command("train-multi-task")
def experts_train_multi_task(
    data: Annotated[Path, typer.Option(help="Folder of BEIR collections; each with a train split joins.")] = Path(
        "../shared/data/beir"
    ),
    sides: Mode = "query",
    only: Annotated[str | None, typer.Option(help="Comma-separated collection names.")] = None,
    budget: Annotated[float, typer.Option(help="Time budget in seconds.")] = 1260.0,
    max_epochs: Annotated[int, typer.Option()] = 15,
    lr: Annotated[float, typer.Option()] = 5e-4,
    replace: Annotated[bool, typer.Option(help="Replace the baseline that is there.")] = False,
) -> None:
    """Train the multi-task baseline: one LoRA on every collection's training data (what `rr bench quality` trains
    when it is missing, with three times an expert's budget)."""
    from ingest.beir import discover, load_dataset
    from router.workbench import baseline_dir, make_encoder, train_multi_task

    try:
        s = get_settings()
        out = baseline_dir(s, sides)
        if (out / "manifest.json").is_file() and not replace:
            _fail(RRError(f"a multi-task baseline exists at {out}; pass --replace to retrain it"))
        names = [n.strip() for n in only.split(",") if n.strip()] if only else None
        folders = [p for p in discover(data) if names is None or p.name in names]
        missing = sorted(set(names or []) - {p.name for p in folders})
        if missing:
            _fail(RRError(f"no collection named {', '.join(missing)} under {data}"))
        loaded = [load_dataset(p, ("train",), optional=("train",)) for p in folders]
        untrained = [d.name for d in loaded if "train" not in d.qrels]
        if names and untrained:  # asked for by name: not silently left out
            _fail(RRError(f"{', '.join(untrained)} under {data} has no train split (qrels/train.tsv)"))
        datasets = [d for d in loaded if "train" in d.qrels]
        cfg = _train_config(sides, budget, max_epochs, lr)
        with _training_display() as display:
            res = train_multi_task(s, make_encoder(s), datasets, cfg, **display)
        _report_stop(res.manifest)
        console.print(f"wrote the multi-task baseline to {res.path}: {res.manifest.scores}")
    except RRError as e:
        _fail(e)


@experts_app.command("list")
def experts_list(sides: Mode = "query") -> None:
    from router.workbench import registry_for

    try:
        reg = registry_for(get_settings(), sides)
        experts = reg.all()
    except RRError as err:
        _fail(err)
    for path, why in reg.unreadable.items():
        hint = f"`rr experts remove {path.name}` deletes it"
        errors.print(f"[yellow]skipped[/] {escape(str(path))}: {escape(why)} ({escape(hint)})")
    for x in experts:  # plain lines, tab-separated: for pipes and scripts, not wrapped at the terminal's width
        m = x.manifest
        print(f"{m.name}\tdomain={m.domain}\tsides={m.sides}\tr={m.rank}\tscores={m.scores}\t{x.path}")


@experts_app.command("remove")
def experts_remove(name: str, sides: Mode = "query") -> None:
    """Remove an expert and rebuild the pilots without it (no training)."""
    from router.experts import check_name
    from router.pilots import PilotLibrary, PilotScores
    from router.workbench import registry_for

    try:
        reg = registry_for(get_settings(), sides)
        left = [e for e in reg.names() if e != name]  # an expert whose manifest does not load is not among them
        if name not in left and not (reg.root / check_name(name) / "manifest.json").is_file():
            raise NotFound(f"no expert {name!r} in {reg.root} (have: {', '.join(left) or 'none'})")
        scores_path = reg.root / "pilot_scores.npz"
        served = reg.root / "pilots.json"
        ps = library = None
        scored = PilotScores.load(scores_path) if scores_path.is_file() else None
        if scored is not None and name in scored.experts:
            # the new pilots are built (and refused, if they cannot be) before anything goes; an expert without
            # pilot scores is in no pilot, so the pilots stay as they are
            ps = scored
            ps.remove_expert(name)
            keep = [e for e in left if e in ps.experts]
            if not keep:
                _fail(RRError(f"{name!r} is the last expert with pilot scores in {reg.root}; routing needs one"))
            library = ps.build(keep, like=PilotLibrary.load(served) if served.is_file() else None)
        reg.remove(name)
        if ps is not None and library is not None:
            ps.save(scores_path)
            library.save(served)
        rebuilt = "pilots rebuilt from the remaining experts" if ps is not None else "it had no pilots: unchanged"
        console.print(f"removed {name!r}; {rebuilt}")
    except RRError as e:
        _fail(e)


@app.command()
def route(
    query: str,
    sides: Mode = "query",
    rule: Annotated[
        str | None,
        typer.Option(help="mean, nearest, topk, weighted, domain, corpus or stacked (default: the served one)"),
    ] = None,
) -> None:
    """Show which expert a query is routed to, and the per-expert scores."""
    from router.pilots import PilotLibrary, check_rule
    from router.workbench import make_encoder, registry_for

    try:
        if not query.strip():  # as the API's /route: nothing to route
            raise InvalidInput("query must not be empty", field="query")
        if rule is not None:  # '' too: it was taken for no choice, the served rule
            check_rule(rule)
        s = get_settings()
        lib = PilotLibrary.load(registry_for(s, sides).root / "pilots.json")
        chosen = lib.rule if rule is None else rule
        enc = make_encoder(s)
        (decision,) = lib.route(enc.encode([query], None, "query"), chosen)
        console.print(f"expert: [bold]{decision.expert}[/]  (rule: {chosen})")
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
    only: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated dataset names; such a run writes its pilots under --out, not the served library."
        ),
    ] = None,
    budget: Annotated[float, typer.Option(help="Training time budget per expert, seconds.")] = 420.0,
    max_epochs: Annotated[int, typer.Option()] = 15,
    out: Annotated[
        Path | None,
        typer.Option(help="Results folder (default benchmarks/results; with --only, benchmarks/results/subset)."),
    ] = None,
) -> None:
    """Table 1 on the data at hand: every system, every dataset, both expert modes."""
    from benchmarks.quality import RESULTS, run_quality

    try:
        run_quality(
            get_settings(),
            data,
            [m.strip() for m in modes.split(",") if m.strip()],
            [o.strip() for o in only.split(",") if o.strip()] if only else None,
            budget,
            max_epochs,
            out or (RESULTS / "subset" if only else RESULTS),  # a subset never replaces the full table
            console=console,
        )
    except RRError as e:
        _fail(e)


@bench_app.command("precision")
def bench_precision(
    data: Annotated[Path, typer.Option(help="One BEIR collection folder.")] = Path("../shared/data/beir/scifact"),
    n: Annotated[int, typer.Option(help="Documents to encode.")] = 512,
) -> None:
    """bf16 autocast against fp32: cosine, neighbour overlap and speed (benchmarks/results/precision_<cpu>.json)."""
    from benchmarks.precision import run_precision

    try:
        run_precision(get_settings(), data, n, console)
    except RRError as e:
        _fail(e)


@bench_app.command("platform")
def bench_platform(
    data: Annotated[Path, typer.Option(help="One BEIR collection folder.")] = Path("../shared/data/beir/scifact"),
    collection: Annotated[str, typer.Option()] = "bench-scifact",
    url: Annotated[str | None, typer.Option()] = None,
    key: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Through a running platform's HTTP API: ingest a collection, search its test queries, compare with offline."""
    from benchmarks.platform import run_platform_check

    base, headers = _api(url, key)
    try:
        with _reaching(base):
            run_platform_check(base, headers["Authorization"].split(" ", 1)[1], data, collection, console)
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


# ---- the platform ------------------------------------------------------------------------------------------
def _api(url: str | None, key: str | None) -> tuple[str, dict[str, str]]:
    s = get_settings()
    base = (url or s.api_url or f"http://{s.host}:{s.port}").rstrip("/")
    key = key or s.api_key or s.admin_key
    if key is None:
        path = Path(s.data_dir) / "admin.key"
        if not path.is_file():
            _fail(RRError(f"no API key: pass --key, set RR_API_KEY, or run `rr serve` once (it writes {path})"))
        key = path.read_text().strip()
    return base, {"Authorization": f"Bearer {key}"}


def _check(resp: object) -> dict:  # type: ignore[type-arg]
    import httpx

    from api.client import checked

    assert isinstance(resp, httpx.Response)
    try:
        out: dict = checked(resp)  # type: ignore[type-arg]
    except RRError as e:
        _fail(e)
    return out


@contextmanager
def _reaching(base: str) -> Iterator[None]:
    """An HTTP failure (nothing listening at the URL, a timeout, a dropped connection) ends the command with one line
    naming the URL, not a traceback."""
    import httpx

    try:
        yield
    except httpx.HTTPError as e:
        try:
            where = str(e.request.url)
        except RuntimeError:  # an error raised without its request
            where = base
        if isinstance(e, httpx.TransportError):
            _fail(RRError(f"could not reach {where} ({str(e) or type(e).__name__}); is the platform running there?"))
        _fail(RRError(f"{where}: {type(e).__name__}: {e}"))


@app.command()
def serve(
    data: Annotated[Path | None, typer.Option(help="Folder of BEIR collections to ingest as collections.")] = None,
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option(help="Default RR_PORT or 8000.")] = None,
) -> None:
    """The embedded platform in one process: API, in-process worker, embedded Qdrant, shipped experts."""
    from ingest.beir import discover

    folders: list[Path] = []
    if data is not None:
        try:
            folders = discover(data)  # a wrong --data fails here, before anything is loaded or served
        except RRError as e:
            _fail(e)

    import threading

    import uvicorn

    from api.main import create_app
    from core.runtime import get_runtime

    s = get_settings()
    host, port = host or s.host, port or s.port
    rt = get_runtime()
    key_path = rt.ensure_admin_key()
    console.print(f"experts: {', '.join(rt.retriever.experts) or 'none'}; store: {s.store_url} ({s.data_dir})")
    console.print(f"admin key: {key_path or 'RR_ADMIN_KEY'}")
    console.print(f"API: http://{host}:{port}  docs: http://{host}:{port}/docs  redoc: http://{host}:{port}/redoc")
    console.print(f"dashboard: http://{host}:{port}/dashboard  metrics: http://{host}:{port}/metrics")
    if folders:
        threading.Thread(target=_ingest_folders_in_process, args=(rt, folders), daemon=True).start()
    uvicorn.run(create_app(rt), host=host, port=port, log_level="info")


def _ingest_folders_in_process(rt: object, folders: list[Path]) -> None:
    """Queue each BEIR collection folder into a collection of the admin's (the demo's data). A folder that cannot be
    read is reported and left out; the server keeps serving."""
    from api import service
    from ingest.beir import iter_corpus
    from ingest.pipeline import batched, partition_valid
    from store.meta import ADMIN

    for folder in folders:
        try:
            try:
                service.create_collection(rt, ADMIN, folder.name)
            except Conflict:
                console.print(f"collection {folder.name!r} exists; re-sending its documents updates them in place")
            raw = [{"id": d.id, "title": d.title, "text": d.text, "metadata": d.metadata} for d in iter_corpus(folder)]
            docs, bad = partition_valid(raw)
            for doc_id, reason in bad:
                console.print(f"[yellow]skipped[/] {folder.name}/{doc_id}: {reason}")
            for chunk in batched(docs, get_settings().max_batch_documents):
                service.submit_documents(rt, ADMIN, folder.name, chunk)
            console.print(f"queued {len(docs)} documents of {folder.name!r} ({len(bad)} skipped)")
        except RRError as e:
            console.print(f"[red]error:[/] {folder.name} not ingested: {e}")


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="Worker processes (each loads the model once).")] = 1,
    loglevel: str = "INFO",
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus /metrics on this port (default RR_WORKER_METRICS_PORT; off).")
    ] = None,
) -> None:
    """A Celery worker for the ingestion queue (production: RR_BROKER_URL=redis://...)."""
    s = get_settings()
    if s.broker_url.startswith("memory://"):  # a worker on an in-memory broker: no API process could reach it
        _fail(
            RRError(
                f"rr worker needs a broker the API processes share, and RR_BROKER_URL is {s.broker_url!r}: set "
                "RR_BROKER_URL=redis://HOST:6379/0 for the API and the workers (the default memory:// runs its "
                "worker in-process, inside `rr serve`: no `rr worker` is needed then)"
            )
        )
    # First, whatever the port: Celery's command line loads its plugins (Flower's imports prometheus_client), and the
    # client picks its single- or multi-process mode when first imported, from what core.metrics exports.
    from core.metrics import start_metrics_server

    port = metrics_port or s.worker_metrics_port
    if port is not None:
        if concurrency > 1 and s.metrics_dir is None:
            _fail(RRError("--concurrency > 1 runs several processes: set RR_METRICS_DIR so /metrics sums them all"))
        try:
            start_metrics_server(port)
        except RRError as e:
            _fail(e)
        console.print(f"metrics: http://0.0.0.0:{port}/metrics")
    from workers.app import celery_app

    pool = "solo" if concurrency == 1 else "prefork"
    celery_app.worker_main(
        [
            "worker",
            f"--loglevel={loglevel}",
            f"--pool={pool}",
            f"--concurrency={concurrency}",
            "-Q",
            "rr",
            "-n",
            f"rr-{os.getpid()}@%h",  # one name per worker, also for several on one machine (Flower, ping)
        ]
    )


def _read_documents(path: Path) -> list[dict]:  # type: ignore[type-arg]
    """A BEIR folder's corpus, or a .jsonl[.gz] of document objects; a file that cannot be read raises RRError
    (a DataFormatError naming the file and line)."""
    from ingest.beir import iter_corpus, iter_jsonl

    if path.is_dir():
        return [{"id": d.id, "title": d.title, "text": d.text, "metadata": d.metadata} for d in iter_corpus(path)]
    out = []
    for _, obj in iter_jsonl(path):
        if "_id" in obj and "id" not in obj:
            obj["id"] = obj.pop("_id")
        out.append(obj)
    return out


@app.command()
def ingest(
    source: Annotated[Path, typer.Argument(help="A BEIR collection folder, or a .jsonl of {id,title,text,metadata}.")],
    collection: Annotated[str, typer.Option(help="Target collection (created if missing).")],
    url: Annotated[str | None, typer.Option()] = None,
    key: Annotated[str | None, typer.Option()] = None,
    batch: Annotated[int, typer.Option(min=1, help="Documents per request.")] = 500,
    wait: Annotated[bool, typer.Option(help="Wait until the queue has stored everything.")] = True,
    skip_invalid: Annotated[bool, typer.Option(help="Skip (and list) documents the API would reject.")] = False,
) -> None:
    """Send documents through the API's queue, with a progress bar."""
    import httpx
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from api.client import wait_for_jobs

    base, headers = _api(url, key)
    if not source.exists():
        _fail(RRError(f"{source}: no such file or folder"))
    from ingest.pipeline import partition_valid

    try:
        docs, bad = partition_valid(_read_documents(source))
    except RRError as e:
        _fail(e)
    if bad and not skip_invalid:
        listing = "; ".join(f"{i}: {r}" for i, r in bad[:5])
        _fail(RRError(f"{len(bad)} documents would be rejected ({listing}); fix them or pass --skip-invalid"))
    for doc_id, reason in bad:
        console.print(f"[yellow]skipped[/] {doc_id}: {reason}")
    coll_path = f"/collections/{path_segment(collection, 'the collection')}"
    docs_path = f"{coll_path}/documents"
    with _reaching(base), httpx.Client(base_url=base, headers=headers, timeout=120) as client:
        r = client.get(coll_path)
        if r.status_code == 404:
            _check(client.post("/collections", json={"name": collection}))
        else:
            _check(r)
        jobs = []
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
        ) as prog:
            sent = prog.add_task("queued", total=len(docs))
            for i in range(0, len(docs), batch):
                chunk = docs[i : i + batch]
                jobs.append(_check(client.post(docs_path, json={"documents": chunk}))["job_id"])
                prog.advance(sent, len(chunk))
            if wait:
                stored = prog.add_task("stored", total=len(docs))
                try:
                    states = wait_for_jobs(client, jobs, lambda n: prog.update(stored, completed=n))
                except RRError as e:
                    _fail(e)
                failed = [e for s in states for e in s["errors"]]
                if failed:
                    _fail(RRError(f"{len(failed)} batches failed; first: {failed[0]}"))
    console.print(f"{len(docs)} documents into {collection!r}")


@app.command()
def search(
    query: str,
    collection: Annotated[str, typer.Option()],
    top_k: Annotated[int, typer.Option()] = 10,
    expert: Annotated[str, typer.Option(help="auto, base or an expert name")] = "auto",
    url: Annotated[str | None, typer.Option()] = None,
    key: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Search a collection through the API."""
    import httpx

    base, headers = _api(url, key)
    body = {"query": query, "top_k": top_k, "expert": expert}
    with _reaching(base):
        resp = httpx.post(
            f"{base}/collections/{path_segment(collection, 'the collection')}/search",
            json=body,
            headers=headers,
            timeout=60,
        )
    res = _check(resp)
    console.print(f"expert: [bold]{res['route']['expert']}[/]  timings: {res['timings']}")
    for h in res["results"]:
        console.print(f"{h['score']:.4f}  {h['id']}  {h['title'][:80]}")


# ---- tenants and keys (the API's /tenants, with the admin key) ------------------------------------------------
Url = Annotated[str | None, typer.Option(help="The platform's URL (default RR_API_URL, else RR_HOST:RR_PORT).")]
Key = Annotated[str | None, typer.Option(help="The admin key (default RR_API_KEY, RR_ADMIN_KEY or admin.key).")]


def _call(
    method: str,
    path: str,
    url: str | None,
    key: str | None,
    body: dict | None = None,  # type: ignore[type-arg]
    params: dict[str, Any] | None = None,
) -> Any:
    import httpx

    base, headers = _api(url, key)
    with _reaching(base):
        resp = httpx.request(method, f"{base}{path}", json=body, params=params, headers=headers, timeout=60)
    return _check(resp)


def _utc(unix_time: float) -> str:
    return datetime.fromtimestamp(float(unix_time), UTC).strftime("%Y-%m-%d %H:%M:%S")


def _show_issued(issued: dict[str, str]) -> None:
    """The key alone on stdout, so that `KEY=$(rr tenants create acme)` takes it; what it is goes to stderr."""
    note = Console(stderr=True)
    note.print(f"tenant {issued['tenant']!r}, key_id {issued['key_id']}; shown once (only its hash is kept):")
    print(issued["api_key"])


@tenants_app.command("create")
def tenants_create(name: str, url: Url = None, key: Key = None) -> None:
    """Create a tenant and print its first API key."""
    _show_issued(_call("POST", "/tenants", url, key, {"name": name}))


@tenants_app.command("list")
def tenants_list(url: Url = None, key: Key = None) -> None:
    """The tenants, one a line."""
    for name in _call("GET", "/tenants", url, key):
        print(name)


@tenants_app.command("keys")
def tenants_keys(name: str, url: Url = None, key: Key = None) -> None:
    """A tenant's keys ('admin' for the admin's): key_id and creation time (UTC)."""
    for k in _call("GET", f"/tenants/{path_segment(name, 'the tenant')}/keys", url, key):
        print(f"{k['key_id']}  {_utc(k['created_at'])}")


@tenants_app.command("issue-key")
def tenants_issue_key(name: str, url: Url = None, key: Key = None) -> None:
    """Another key for a tenant; its other keys keep working until revoked."""
    _show_issued(_call("POST", f"/tenants/{path_segment(name, 'the tenant')}/keys", url, key))


@tenants_app.command("revoke-key")
def tenants_revoke_key(name: str, key_id: str, url: Url = None, key: Key = None) -> None:
    """Revoke one of a tenant's keys by its key_id (401 with it from the next request on)."""
    _call("DELETE", f"/tenants/{path_segment(name, 'the tenant')}/keys/{path_segment(key_id, 'the key id')}", url, key)
    console.print(f"revoked {key_id} of {name!r}")


# ---- collections and jobs (any key: a tenant's own, or the admin's) -----------------------------------------------
AnyKey = Annotated[
    str | None,
    typer.Option(help="An API key (default RR_API_KEY, RR_ADMIN_KEY or admin.key); a tenant's sees its own."),
]


def _collection_line(c: dict[str, Any]) -> str:
    backfill = ",".join(f"{e}={state}" for e, state in sorted(c["backfill"].items())) or "-"
    return "\t".join(
        [c["name"], c["tenant"], str(c["documents"]), c["expert"] or "auto", ",".join(c["vectors"]), backfill]
    )


@collections_app.command("list")
def collections_list(url: Url = None, key: AnyKey = None) -> None:
    """One collection a line, tab-separated: name, tenant, documents, expert (pinned, or auto), vectors, backfill."""
    for c in _call("GET", "/collections", url, key):
        print(_collection_line(c))


@collections_app.command("show")
def collections_show(name: str, url: Url = None, key: AnyKey = None) -> None:
    """One collection, as the list prints it."""
    print(_collection_line(_call("GET", f"/collections/{path_segment(name, 'the collection')}", url, key)))


@collections_app.command("create")
def collections_create(
    name: str,
    expert: Annotated[str | None, typer.Option(help="Pin one expert (or base) instead of routing.")] = None,
    url: Url = None,
    key: AnyKey = None,
) -> None:
    """Create an empty collection (`rr ingest` creates one too, when it is missing)."""
    body: dict[str, Any] = {"name": name} if expert is None else {"name": name, "expert": expert}
    c = _call("POST", "/collections", url, key, body)
    console.print(f"created {c['name']!r} ({c['expert'] or 'routed'})")


@collections_app.command("delete")
def collections_delete(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask (needed when stdin is not a terminal).")] = False,
    url: Url = None,
    key: AnyKey = None,
) -> None:
    """Delete a collection and every document in it."""
    if not yes:
        if not sys.stdin.isatty():
            _fail(RRError(f"deleting {name!r} deletes its documents: pass --yes to confirm"))
        if not typer.confirm(f"delete collection {name!r} and every document in it?"):
            _fail(RRError("not deleted"))
    _call("DELETE", f"/collections/{path_segment(name, 'the collection')}", url, key)
    console.print(f"deleted {name!r}")


@jobs_app.command("list")
def jobs_list(
    collection: Annotated[str | None, typer.Option(help="Only this collection's jobs.")] = None,
    status: Annotated[str | None, typer.Option(help="Only jobs in this state: queued, running, done, failed.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, the newest (1 to 1000).")] = 100,
    url: Url = None,
    key: AnyKey = None,
) -> None:
    """Newest first, one job a line, tab-separated: id, status, done/total, tenant, collection, queued at (UTC)."""
    params: dict[str, Any] = {"limit": limit}
    if collection is not None:
        params["collection"] = collection
    if status is not None:
        params["status"] = status
    for j in _call("GET", "/jobs", url, key, params=params):
        done = f"{j['done']}/{j['total']}"
        print("\t".join([j["job_id"], j["status"], done, j["tenant"], j["collection"], _utc(j["created_at"])]))


@jobs_app.command("show")
def jobs_show(job_id: str, url: Url = None, key: AnyKey = None) -> None:
    """A job's state on stdout (status, done of total), then each failed batch's ids and reason, one a line."""
    j = _call("GET", f"/jobs/{path_segment(job_id, 'the job id')}", url, key)
    print(f"{j['status']}\t{j['done']}/{j['total']}\t{j['collection']}")
    for e in j["errors"]:
        print(f"failed\t{','.join(map(str, e.get('ids', [])))}\t{e.get('reason', '')}")

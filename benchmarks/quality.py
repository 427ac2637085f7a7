"""`rr bench quality`: train what is missing, score every system on every dataset's test split, in both modes.

Writes benchmarks/results/quality.json and quality.md. Every vector is cached (router.cache), every expert is kept on
disk, so a rerun only re-scores. A run over every dataset also writes the served pilot library (each mode's
pilots.json and pilot_scores.npz in the expert registry); a run with ``only`` writes those under the results folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from benchmarks import checkout_commit
from core.errors import InvalidInput, NotFound
from core.settings import Settings
from ingest.beir import BeirDataset, discover, load_dataset
from router.encoders import BASE, TextEncoder
from router.evaluation import Run, mean
from router.experts import Expert, ExpertRegistry
from router.pilots import STACK_C, PilotScores, corpus_centroids
from router.significance import paired_test
from router.systems import EXTRA_SYSTEMS, PAPER_SYSTEMS, DatasetTables, SystemSuite, shares
from router.training.data import domain_data
from router.training.trainer import TrainConfig, held_out_queries, train_expert
from router.validation import (
    choose_corpus_weight,
    choose_margin,
    cross_validate,
    domain_accuracy,
    held_out_validate,
)
from router.workbench import (
    MULTI_TASK,
    Workbench,
    baseline_data,
    baseline_dir,
    check_mode,
    make_encoder,
    registry_for,
    train_multi_task,
)

RESULTS = Path(__file__).resolve().parent / "results"
MODES = ("query", "query+document")


def pilot_files_dir(registry_root: Path, out_dir: Path, only: Sequence[str] | None) -> Path:
    """Where a run writes pilots.json and pilot_scores.npz: the mode's registry (the library the platform serves)
    when it covers every dataset; with ``only`` (a subset), ``out_dir/<mode dir>``, so the served library is kept."""
    return out_dir / registry_root.name if only else registry_root


class Bench:
    def __init__(
        self,
        settings: Settings,
        console: Console,
        train_budget_s: float,
        max_epochs: int,
        out_dir: Path = RESULTS,
        only: Sequence[str] | None = None,
    ) -> None:
        self.settings = settings
        self.console = console
        self.train_budget_s = train_budget_s
        self.max_epochs = max_epochs
        self.out_dir = out_dir
        self.only = only
        self.encoder: TextEncoder = make_encoder(settings)
        self.seconds: dict[str, float] = {}
        # Corpus pilots come from BASE document vectors, the same in every mode: summarised once per dataset.
        self.corpus_pilots: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    # ---- progress ------------------------------------------------------------------------------------------
    # Where the console is not a terminal (a log file, CI), the bars do not show: a step that took at least this
    # long gets a line instead, and a step still running after ``log_every_s`` gets a line with its count that
    # often (a cold base-model pass over ArguAna's corpus runs for many minutes), so a long cold run shows where it is.
    log_after_s = 2.0
    log_every_s = 60.0

    def _progress_factory(self, prog: Progress) -> Callable[[str, int], Callable[[int], None]]:
        def factory(label: str, total: int) -> Callable[[int], None]:
            task = prog.add_task(escape(label), total=total)  # "[base]" in a label is text, not rich markup
            t0 = time.monotonic()
            last_line = t0
            done = 0

            def advance(n: int) -> None:
                nonlocal last_line, done
                prog.advance(task, n)
                done += n
                now = time.monotonic()
                if prog.tasks[prog.task_ids.index(task)].finished:
                    prog.remove_task(task)
                    took = now - t0
                    if not self.console.is_terminal and took >= self.log_after_s:
                        self.console.print(f"{escape(label)}: {total} texts in {took:.0f}s")
                elif not self.console.is_terminal and now - last_line >= self.log_every_s:
                    last_line = now
                    self.console.print(f"{escape(label)}: {done}/{total} texts after {now - t0:.0f}s")

            return advance

        return factory

    def _timed(self, key: str, t0: float) -> None:
        self.seconds[key] = round(self.seconds.get(key, 0.0) + time.monotonic() - t0, 1)

    # ---- training ------------------------------------------------------------------------------------------
    def _cfg(self, mode: str, budget: float) -> TrainConfig:
        return TrainConfig(
            sides=mode,
            time_budget_s=budget,
            max_epochs=self.max_epochs,
            query_max_length=self.settings.query_max_length,
            doc_max_length=self.settings.doc_max_length,
            val_docs=1000,  # query+document mode re-encodes this corpus sample at every epoch's check
            device=self.settings.device,
            bf16=self.settings.bf16,
        )

    def ensure_experts(
        self, mode: str, datasets: Sequence[BeirDataset], base_docs: dict[str, np.ndarray]
    ) -> ExpertRegistry:
        reg = registry_for(self.settings, mode)
        have: set[str] = set(reg.names())
        todo = [ds for ds in datasets if ds.name not in have]
        mt_dir = self.baseline_for(mode, datasets)
        need_mt = baseline_data(mt_dir) != sorted(ds.name for ds in datasets)
        for ds in todo:
            t0 = time.monotonic()
            self.console.print(f"[bold]training[/] {mode} expert {ds.name!r}")
            tmp = reg.root / f".{ds.name}.tmp"
            train_expert(
                self.settings.base_model,
                self.encoder.base_fingerprint,
                [domain_data(ds)],
                tmp,
                name=ds.name,
                domain=ds.name,
                cfg=self._cfg(mode, self.train_budget_s),
                doc_matrices=base_docs,
                progress=lambda ep, val, loss: self.console.print(f"  {ep}: val nDCG@10 {val:.4f} loss {loss:.3f}"),
            )
            reg.add(tmp, replace=True)
            _rmtree(tmp)
            self._timed(f"train_{mode}", t0)
        if need_mt:
            t0 = time.monotonic()
            self.console.print(f"[bold]training[/] {mode} multi-task baseline on all {len(datasets)} domains")
            train_multi_task(
                self.settings,
                self.encoder,
                datasets,
                self._cfg(mode, self.train_budget_s * 3),
                doc_matrices=base_docs,
                progress=lambda ep, val, loss: self.console.print(f"  {ep}: val nDCG@10 {val:.4f} loss {loss:.3f}"),
                out=mt_dir,
            )
            self._timed(f"train_{mode}", t0)
        return reg

    def baseline_for(self, mode: str, datasets: Sequence[BeirDataset]) -> Path:
        """Where this run's multi-task baseline is: the shared one (the registry's ``baselines/``), trained on
        exactly these collections; a subset run (``--only``) keeps its own under its results folder instead, so a
        baseline of a few collections never stands in for, or replaces, the one of all of them."""
        shared = baseline_dir(self.settings, mode)
        if self.only is None or baseline_data(shared) == sorted(ds.name for ds in datasets):
            return shared
        return self.out_dir / "baselines" / shared.name

    # ---- one mode ------------------------------------------------------------------------------------------
    def run_mode(self, mode: str, datasets: Sequence[BeirDataset]) -> dict[str, Any]:
        enc = self.encoder
        for name in list(enc.experts):
            enc.remove_expert(name)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        ) as prog:
            wb = Workbench(enc, mode, self._progress_factory(prog))
            base_docs = {ds.name: wb.doc_matrix(ds, None) for ds in datasets}  # a bar (or log lines) per corpus
            reg = self.ensure_experts(mode, datasets, base_docs)  # times its own training
            experts = [e for e in reg.all() if e.name in {ds.name for ds in datasets}]
            for x in experts:
                enc.add_expert(x.name, x.path, x.manifest.base_fingerprint)
            enc.add_expert(MULTI_TASK, self.baseline_for(mode, datasets))
            names = sorted(x.name for x in experts)

            # Algorithm 1 inputs: every expert on every training query (cached vectors make this cheap to redo).
            t0 = time.monotonic()
            ps = PilotScores()
            base_train: dict[str, np.ndarray] = {}
            for ds in datasets:
                if "train" not in ds.qrels:
                    continue
                qids, base_q = wb.query_matrix(ds, "train", None)
                ps.add_domain(ds.name, qids, base_q)
                base_sc = wb.score(ds, "train", None).per_query
                base_train[ds.name] = np.array([base_sc[q] for q in qids], dtype=np.float32)
                for name in names:
                    sc = wb.score(ds, "train", name).per_query
                    ps.set_scores(ds.name, name, [sc[q] for q in qids])
                if ds.name not in self.corpus_pilots:  # the corpus rule's second witness of the domain
                    self.corpus_pilots[ds.name] = corpus_centroids(base_docs[ds.name])
                ps.corpus[ds.name], ps.corpus_sizes[ds.name] = self.corpus_pilots[ds.name]
            pilot_dir = pilot_files_dir(reg.root, self.out_dir, self.only)
            ps.save(pilot_dir / "pilot_scores.npz")
            self._timed(f"pilot_scoring_{mode}", t0)

            # Test tables: every encoder on every dataset.
            t0 = time.monotonic()
            tables: dict[str, DatasetTables] = {}
            for ds in datasets:
                qids, base_q = wb.query_matrix(ds, "test", None)
                scores: dict[str, dict[str, float]] = {}
                runs: dict[str, Run] = {}
                for name in [BASE, *names, MULTI_TASK]:
                    sc_ = wb.score(ds, "test", None if name == BASE else name)
                    scores[name], runs[name] = sc_.per_query, sc_.run
                tables[ds.name] = DatasetTables(ds.name, qids, base_q, scores, runs, ds.qrels["test"])
            self._timed(f"test_scoring_{mode}", t0)

        # The domain rule's fallback margin and the served rule are chosen on held-out training queries, never on
        # the test splits reported below.
        t0 = time.monotonic()
        margin, margin_scores = choose_margin(ps, names, base_train)
        corpus_weight, weight_scores = choose_corpus_weight(ps, names)
        stacked_accuracy = domain_accuracy(ps, names, corpus_weight, stacked=True)
        self._timed(f"margin_validation_{mode}", t0)
        suite = SystemSuite(ps, names, {n: n for n in names}, margin=margin, corpus_weight=corpus_weight)
        systems: dict[str, dict[str, float]] = {}
        per_query: dict[str, dict[str, list[float]]] = {}
        for system in (*PAPER_SYSTEMS, *EXTRA_SYSTEMS):
            per_query[system] = {d: suite.per_query(system, t) for d, t in tables.items()}
            row = {d: round(mean(v), 4) for d, v in per_query[system].items()}
            row["avg"] = round(mean([row[d] for d in tables]), 4)
            systems[system] = row
        t0 = time.monotonic()
        validation = cross_validate(ps, names, base_train, margin=margin, corpus_weight=corpus_weight)
        # The same systems on the queries no expert trained on (each expert's held-out slice): reported beside the
        # cross-validation, whose levels run high where an expert trained on the queries it is judged on.
        unseen, unseen_ids, unseen_skipped = unseen_routing(
            ps, names, base_train, experts, datasets, margin, corpus_weight
        )
        for name, why in unseen_skipped.items():
            self.console.print(f"[yellow]routing on unseen queries leaves out {name}[/]: {why}")
        self._timed(f"routing_validation_{mode}", t0)
        default_rule = choose_default_rule(validation, sorted(ps.domains))
        test_check = {d: round(systems[default_rule][d] - systems["router_retriever"][d], 4) for d in [*tables, "avg"]}
        suite.library.rule = SERVABLE[default_rule]  # what the platform serves
        suite.library.save(pilot_dir / "pilots.json")
        if pilot_dir != reg.root:
            self.console.print(
                f"--only: wrote this subset's pilots.json and pilot_scores.npz to {pilot_dir}; "
                f"the served library in {reg.root} is unchanged"
            )
        matrix = {e: {d: round(mean(t.scores[e]), 4) for d, t in tables.items()} for e in [*names, MULTI_TASK, BASE]}
        routing: dict[str, dict[str, float]] = {}
        routing_served: dict[str, dict[str, float]] = {}
        for d, t in tables.items():
            ch = suite.choices("router_retriever", t)
            served = suite.choices(default_rule, t)
            assert ch is not None and served is not None
            routing[d] = shares(ch, names)
            routing_served[d] = shares(served, [*names, BASE])
        beats = {e: matrix[e][e] > matrix[BASE][e] for e in names if e in matrix[e]}
        t0 = time.monotonic()
        significance = {
            f"{a} vs {b}": paired_test(per_query[a], per_query[b]).to_json() for a, b in comparisons(default_rule)
        }
        own_vs_base = {
            e: paired_test({e: [t.scores[e][q] for q in t.qids]}, {e: [t.scores[BASE][q] for q in t.qids]}).to_json()
            for e, t in tables.items()
            if e in names
        }
        self._timed(f"significance_{mode}", t0)
        return {
            "default_rule": default_rule,
            "default_rule_basis": VALIDATION_BASIS,
            "default_rule_test_delta": test_check,
            "systems": systems,
            "routing_validation": validation,
            "routing_unseen": unseen,
            "routing_unseen_queries": {d: len(q) for d, q in sorted(unseen_ids.items())},
            "routing_unseen_left_out": unseen_skipped,
            "expert_matrix": matrix,
            "routing": routing,
            "routing_served": routing_served,
            "expert_beats_base_in_domain": beats,
            "significance": significance,
            "expert_vs_base_significance": own_vs_base,
            "pilots": len(suite.library),
            "domain_rule_margin": suite.library.margin,
            "domain_rule_margin_validation": {str(m): v for m, v in margin_scores.items()},
            "corpus_pilots": int(suite.library.corpus.sum()),
            "corpus_weight": suite.library.corpus_weight,
            "corpus_weight_validation": {str(w): row for w, row in weight_scores.items()},
            "domain_accuracy": {
                system: {
                    d: round(float(np.mean([g == d for g in suite.library.guess_domains(t.base_emb, w, st)])), 4)
                    for d, t in tables.items()
                    if d in ps.domains
                }
                for system, w, st in (
                    ("router_retriever_domain", 0.0, False),
                    ("router_retriever_corpus", corpus_weight, False),
                    ("router_retriever_stacked", corpus_weight, True),
                )
            },
            "stacked_domain_accuracy_validation": stacked_accuracy,
            "experts": {
                e.name: {
                    "sides": e.manifest.sides,
                    "training": {k: v for k, v in e.manifest.training.items() if k != "history"},
                }
                for e in experts
            },
        }


def unseen_routing(
    ps: PilotScores,
    names: Sequence[str],
    base_train: dict[str, np.ndarray],
    experts: Sequence[Expert],
    datasets: Sequence[BeirDataset],
    margin: float,
    corpus_weight: float = 0.0,
) -> tuple[dict[str, dict[str, float]], dict[str, list[str]], dict[str, str]]:
    """Every routing system on the training queries no expert trained on (each expert's early-stopping and judging
    slices), the query ids per domain, and the experts left out with the reason (their slice cannot be found
    again, e.g. an old manifest of an expert trained on other data): such an expert costs its rows of the table,
    not the run."""
    by_name = {ds.name: ds for ds in datasets}
    ids: dict[str, list[str]] = {}
    skipped: dict[str, str] = {}
    for x in experts:
        if x.name not in ps.domains:
            continue
        try:
            ids[x.name] = held_out_queries(x.manifest, domain_data(by_name[x.name]))
        except InvalidInput as e:
            skipped[x.name] = str(e)
    if not any(ids.values()):
        return {}, ids, skipped  # no expert held any query out (domains too small for a slice)
    try:
        return held_out_validate(ps, names, base_train, ids, margin=margin, corpus_weight=corpus_weight), ids, skipped
    except InvalidInput as e:  # the training queries changed since the experts were trained
        return {}, {}, {**skipped, **{n: str(e) for n in ids}}


def _rmtree(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)


ROUTER_BASELINES = ("base", "multi_task", "dataset_router", "expert_classifier_router", "classification_head_router")


def comparisons(served: str) -> list[tuple[str, str]]:
    """The pairs the done-when questions are about: the paper's router and the served rule against every
    baseline, and the served rule against the paper's rule and the dataset oracle."""
    pairs = [("router_retriever", b) for b in ROUTER_BASELINES]
    if served != "router_retriever":
        pairs += [(served, b) for b in (*ROUTER_BASELINES, "router_retriever")]
    return [*pairs, (served, "dataset_oracle")]


SERVABLE = {
    "router_retriever": "mean",
    "router_retriever_weighted": "weighted",
    "router_retriever_nearest": "nearest",
    "router_retriever_topk": "topk",
    "router_retriever_domain": "domain",
    "router_retriever_corpus": "corpus",
    "router_retriever_stacked": "stacked",
}


VALIDATION_BASIS = (
    "5-fold cross-validation over each domain's training queries, 3 seeds (router.validation); test splits unused"
)


def choose_default_rule(systems: dict[str, dict[str, float]], datasets: Sequence[str]) -> str:
    """An extra rule becomes the default only if it beats the paper's on average and loses at most one point on
    any dataset. ``systems`` are validation scores (held-out training queries), so the choice never sees a test
    split. Only rules that pick one expert per query from the pilot collection are candidates (fusion would
    double the expert passes per query)."""
    paper = systems["router_retriever"]
    best = "router_retriever"
    for extra in SERVABLE:
        row = systems[extra]
        if row["avg"] > systems[best]["avg"] and all(row[d] >= paper[d] - 0.01 for d in datasets):
            best = extra
    return best


MODE_MARGIN = 0.01  # query+document must win by a point on average to pay for one document pass per expert


def choose_default_mode(modes: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """Quality against ingestion cost: query-side experts need one document encoding per collection; experts on
    both sides need one per expert (and a backfill of every collection when an expert is added). The
    query+document mode becomes the default only if its served rule wins on average by MODE_MARGIN."""
    if "query" not in modes or "query+document" not in modes:
        only = next(iter(modes))
        return only, f"only {only} was measured"
    q, qd = (modes[m]["systems"][modes[m]["default_rule"]]["avg"] for m in ("query", "query+document"))
    n_encoders = len(modes["query+document"]["expert_matrix"]) - 2  # experts without multi_task and base
    cost = f"query+document encodes each document {n_encoders} times instead of once"
    if qd - q >= MODE_MARGIN:
        return "query+document", f"{100 * qd:.1f} vs {100 * q:.1f} on average, worth the cost ({cost})"
    return "query", f"query+document reaches {100 * qd:.1f} vs {100 * q:.1f}, not enough to pay for it ({cost})"


def render_markdown(result: dict[str, Any]) -> str:
    ds = result["datasets"]
    lines = [f"# Quality (nDCG@10 x 100, test splits) — commit {result['commit'][:10]}", ""]
    for mode, body in result["modes"].items():
        lines += [f"## mode: {mode}" + (" (default)" if mode == result["default_mode"] else ""), ""]
        measured = body.get("commit", result["commit"])
        if measured != result["commit"]:
            took = ", ".join(f"{k} {v}" for k, v in body.get("seconds", {}).items())
            lines += [f"Kept from an earlier run at commit {measured[:10]} (seconds: {took}); not rerun here.", ""]
        lines += ["| system | " + " | ".join(ds) + " | avg |", "|---|" + "---|" * (len(ds) + 1)]
        for name, row in body["systems"].items():
            lines.append(
                f"| {name} | " + " | ".join(f"{100 * row[d]:.1f}" for d in ds) + f" | {100 * row['avg']:.1f} |"
            )
        lines += [
            "",
            "Expert x dataset:",
            "",
            "| expert | " + " | ".join(ds) + " |",
            "|---|" + "---|" * len(ds),
        ]
        for e, row in body["expert_matrix"].items():
            lines.append(f"| {e} | " + " | ".join(f"{100 * row[d]:.1f}" for d in ds) + " |")
        served = body.get("default_rule", "router_retriever")
        lines += ["", f"Served rule: {served}.", ""]
        lines += _corpus_lines(body)
        if "routing_validation" in body:
            vds = [d for d in next(iter(body["routing_validation"].values())) if d != "avg"]
            lines += [
                f"Routing on held-out training queries ({body.get('default_rule_basis', '')}), "
                "the basis of the served rule:",
                "",
                *_score_table(body["routing_validation"], vds),
            ]
            if body.get("routing_unseen"):
                counts = body.get("routing_unseen_queries", {})
                lines += [
                    "",
                    "The same systems on the training queries no expert trained on (each expert's early-stopping "
                    "slice, and its judging slice where it has one: "
                    + ", ".join(f"{d} {n}" for d, n in counts.items())
                    + f", {sum(counts.values())} in all), routed by pilots and routers fitted on the other training "
                    "queries:",
                    "",
                    *_score_table(body["routing_unseen"], vds),
                ]
            delta = body.get("default_rule_test_delta", {})
            if served != "router_retriever" and delta:
                lines += [
                    "",
                    f"On the test splits, {served} minus router_retriever: "
                    + ", ".join(f"{d} {100 * v:+.1f}" for d, v in delta.items())
                    + ".",
                ]
            lines.append("")
        lines += _significance_lines(body)
        for key, label in (("routing", "router_retriever"), ("routing_served", served)):
            if (key == "routing_served" and served == "router_retriever") or key not in body:
                continue
            lines += [f"Routing shares ({label}, rows: dataset):", ""]
            experts = sorted(next(iter(body[key].values())))
            lines += ["| dataset | " + " | ".join(experts) + " |", "|---|" + "---|" * len(experts)]
            for d, row in body[key].items():
                lines.append(f"| {d} | " + " | ".join(f"{100 * row[e]:.0f}%" for e in experts) + " |")
            lines.append("")
    if "default_mode_reason" in result:
        lines += [f"Default mode: {result['default_mode']} ({result['default_mode_reason']}).", ""]
    lines += ["Seconds: " + ", ".join(f"{k} {v}" for k, v in result["seconds"].items()), ""]
    return "\n".join(lines)


def _corpus_lines(body: dict[str, Any]) -> list[str]:
    """The corpus rule's weight, how it was chosen, and how often each domain step places a test query in its own
    dataset's domain."""
    if "corpus_weight_validation" not in body or not body["corpus_weight_validation"]:
        return []
    picks = ", ".join(f"{w} {100 * row['avg']:.1f}%" for w, row in body["corpus_weight_validation"].items())
    lines = [
        f"Corpus rule: {body['corpus_pilots']} corpus pilots, weight {body['corpus_weight']}, chosen by how often "
        f"held-out training queries are placed in their own domain (macro, 5 folds x 3 seeds): {picks}.",
        "",
    ]
    stacked = body.get("stacked_domain_accuracy_validation")
    if stacked:
        per = ", ".join(f"{d} {100 * v:.1f}%" for d, v in stacked.items() if d != "avg")
        lines += [
            f"Stacked rule: its domain model (a class-balanced logistic regression over every domain's query and "
            f"corpus evidence, C {STACK_C}) places {100 * stacked['avg']:.1f}% of held-out training queries in "
            f"their own domain (macro, same folds; {per}).",
            "",
        ]
    acc = body.get("domain_accuracy", {})
    if acc:
        ds = sorted(next(iter(acc.values())))
        lines += [
            "Test queries placed in their own dataset's domain by the domain step:",
            "",
            "| rule | " + " | ".join(ds) + " | macro |",
            "|---|" + "---|" * (len(ds) + 1),
        ]
        for name, row in acc.items():
            cells = [f"{100 * row[d]:.0f}%" for d in ds]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {100 * sum(row.values()) / len(row):.1f}% |")
        lines.append("")
    return lines


def _score_table(rows: dict[str, dict[str, float]], datasets: Sequence[str]) -> list[str]:
    """Markdown rows of nDCG@10 x 100 per system, per dataset ("-" where a system has no score) and on average."""
    out = ["| system | " + " | ".join(datasets) + " | avg |", "|---|" + "---|" * (len(datasets) + 1)]
    for name, row in rows.items():
        cells = [f"{100 * row[d]:.1f}" if d in row else "-" for d in datasets]
        out.append(f"| {name} | " + " | ".join(cells) + f" | {100 * row['avg']:.1f} |")
    return out


def _significance_lines(body: dict[str, Any]) -> list[str]:
    if "significance" not in body:
        return []
    lines = [
        "Paired tests on the test queries (router.significance): the macro-average difference x 100, its 95% "
        "interval from a bootstrap within each dataset, the two-sided p of a paired randomization test, and the "
        "queries won/lost/tied:",
        "",
        "| a vs b | diff | 95% interval | p | won/lost/tied |",
        "|---|---|---|---|---|",
    ]

    def row(name: str, r: dict[str, Any]) -> str:
        lo, hi = r["ci95"]
        return (
            f"| {name} | {100 * r['diff']:+.1f} | [{100 * lo:+.1f}, {100 * hi:+.1f}] | {r['p_value']:.3f} "
            f"| {r['wins']}/{r['losses']}/{r['ties']} |"
        )

    lines += [row(name, r) for name, r in body["significance"].items()]
    lines += [row(f"expert {e} vs base on {e}", r) for e, r in body.get("expert_vs_base_significance", {}).items()]
    return [*lines, ""]


def print_table(console: Console, result: dict[str, Any]) -> None:
    ds = result["datasets"]
    for mode, body in result["modes"].items():
        table = Table(title=f"nDCG@10 x 100 — mode {mode}")
        table.add_column("system")
        for d in [*ds, "avg"]:
            table.add_column(d, justify="right")
        for name, row in body["systems"].items():
            table.add_row(name, *[f"{100 * row[d]:.1f}" for d in [*ds, "avg"]])
        console.print(table)


def carried_modes(
    out_dir: Path, datasets: Sequence[str], modes: Sequence[str], only: Sequence[str] | None
) -> dict[str, dict[str, Any]]:
    """The modes a run leaves out, as the quality.json already in ``out_dir`` holds them, so that rerunning one mode
    (the query mode takes minutes from the cache, the query+document mode hours on a CPU when its cache is empty)
    keeps the other. Each kept mode says which commit measured it and how long its steps took; it is kept only
    when it covers the same datasets, and never for an --only run (whose folder is its own)."""
    path = out_dir / "quality.json"
    if only or not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}  # not a result this code can read: the new run replaces it
    if not isinstance(old, dict) or old.get("datasets") != list(datasets):
        return {}
    kept: dict[str, dict[str, Any]] = {}
    for mode, body in (old.get("modes") or {}).items():
        if mode in modes or mode not in MODES:
            continue
        body = dict(body)
        body.setdefault("commit", old.get("commit", "unknown"))  # results written before modes carried a commit
        if "seconds" not in body:
            body["seconds"] = {k: v for k, v in (old.get("seconds") or {}).items() if k.endswith(f"_{mode}")}
        kept[mode] = body
    return kept


def run_quality(
    settings: Settings,
    data: Path,
    modes: Sequence[str] = MODES,
    only: Sequence[str] | None = None,
    train_budget_s: float = 420.0,
    max_epochs: int = 15,
    out_dir: Path = RESULTS,
    console: Console | None = None,
) -> dict[str, Any]:
    console = console or Console()
    start = time.monotonic()
    if not modes:  # before anything is trained or written, as the checks below
        raise InvalidInput(f"--modes names no mode; give one or more of {', '.join(MODES)}", field="modes")
    for mode in modes:
        check_mode(mode)
    commit = checkout_commit()
    found = discover(data)
    unknown = sorted(set(only or []) - {p.name for p in found})
    if unknown:  # before anything is trained or written
        raise NotFound(
            f"--only: no collection named {', '.join(unknown)} under {data} (there: {', '.join(p.name for p in found)})"
        )
    folders = [p for p in found if not only or p.name in only]
    datasets = [load_dataset(p, ("train", "test"), optional=("train",)) for p in folders]
    untrained = [d.name for d in datasets if "train" not in d.qrels]
    if untrained:  # an expert per collection is trained on its train split: without one there is nothing to train
        raise InvalidInput(
            f"{', '.join(untrained)} under {data} has no train split (qrels/train.tsv); every collection of the "
            "benchmark trains its expert on one (score others zero-shot with `rr eval`)",
            field="data",
        )
    bench = Bench(settings, console, train_budget_s, max_epochs, out_dir, only)
    out: dict[str, Any] = {"datasets": [d.name for d in datasets], "default_mode": "query", "modes": {}}
    for mode in modes:
        out["modes"][mode] = bench.run_mode(mode, datasets)
        out["modes"][mode]["commit"] = commit
    for mode, body in carried_modes(out_dir, out["datasets"], modes, only).items():
        out["modes"][mode] = body
        console.print(
            f"[yellow]kept mode {mode} from the quality.json already in {out_dir} (commit "
            f"{body['commit'][:10]}); rerun with --modes {mode} to measure it again[/]"
        )
    out["modes"] = {m: out["modes"][m] for m in MODES if m in out["modes"]}
    out["default_mode"], out["default_mode_reason"] = choose_default_mode(out["modes"])
    bench.seconds["total"] = round(time.monotonic() - start, 1)
    out["commit"] = commit
    out["seconds"] = bench.seconds
    out["settings"] = {
        "base_model": Path(settings.base_model).name,
        "query_max_length": settings.query_max_length,
        "doc_max_length": settings.doc_max_length,
        "bf16": bench.encoder.bf16,  # as resolved on this machine (RR_BF16=auto: where bf16 is native)
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "quality.json").write_text(json.dumps(out, indent=2) + "\n")
    (out_dir / "quality.md").write_text(render_markdown(out))
    print_table(console, out)
    console.print(f"wrote {out_dir / 'quality.json'} and quality.md in {bench.seconds['total']:.0f}s")
    return out

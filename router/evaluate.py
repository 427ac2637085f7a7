"""`rr eval`: one system on one BEIR collection (with or without an expert of its own)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from core.errors import InvalidInput, NotFound
from core.settings import Settings
from ingest.beir import load_dataset
from router.encoders import BASE
from router.evaluation import Run
from router.pilots import PilotLibrary, PilotScores
from router.systems import EXTRA_SYSTEMS, PAPER_SYSTEMS, DatasetTables, SystemSuite
from router.workbench import MULTI_TASK, Workbench, baseline_dir, make_encoder, registry_for


def check_system(system: str, experts: Sequence[str]) -> None:
    """A system of Table 1 (router.systems), or ``expert:NAME`` with NAME a registered expert; otherwise an
    InvalidInput listing the valid names (before anything is read or encoded)."""
    if system in (*PAPER_SYSTEMS, *EXTRA_SYSTEMS):
        return
    have = ", ".join(experts) or "none registered"
    if system.startswith("expert:"):
        name = system.split(":", 1)[1]
        if name not in experts:
            raise InvalidInput(f"unknown expert {name!r} in {system!r} (experts: {have})", field="system")
        return
    raise InvalidInput(
        f"unknown system {system!r}; choose one of {', '.join((*PAPER_SYSTEMS, *EXTRA_SYSTEMS))}, "
        f"or expert:NAME (experts: {have})",
        field="system",
    )


def evaluate_system(settings: Settings, data: Path, system: str, mode: str, split: str, console: Console) -> float:
    reg = registry_for(settings, mode)
    experts = reg.all()
    check_system(system, [x.name for x in experts])
    ds = load_dataset(data, (split,))  # a split the folder lacks: an error naming the splits it has
    if not ds.qrels[split]:
        raise InvalidInput(f"{data}: qrels/{split}.tsv judges no query; there is nothing to score", field="split")
    names = sorted(x.name for x in experts)
    routed = not (system in (BASE, MULTI_TASK) or system.startswith("expert:"))
    ps_path = reg.root / "pilot_scores.npz"
    if routed:
        if not ps_path.is_file():
            raise NotFound(f"{ps_path}: no pilot scores; build them with `rr bench quality`")
        pilot_scores = PilotScores.load(ps_path)
        unscored = [n for n in names if n not in pilot_scores.experts]
        if unscored:  # registered since the pilot scores were made (rr experts train): not routed to, as served
            console.print(
                f"[yellow]leaving out {', '.join(unscored)}: no pilot scores yet (`rr bench quality` makes them)[/]"
            )
        names = [n for n in names if n in pilot_scores.experts]
    encoders: list[str] = [BASE]
    if system == MULTI_TASK:
        mt = baseline_dir(settings, mode)
        if not (mt / "manifest.json").is_file():
            raise NotFound(f"no multi-task baseline at {mt}; run `rr bench quality` to train it")
        encoders.append(MULTI_TASK)
    elif system.startswith("expert:"):
        encoders.append(system.split(":", 1)[1])
    elif system != BASE:
        encoders += names
    enc = make_encoder(settings)
    for e in experts:  # only the adapters this system encodes with
        if e.name in encoders:
            enc.add_expert(e.name, e.path, e.manifest.base_fingerprint)
    if system == MULTI_TASK:
        enc.add_expert(MULTI_TASK, mt)
    wb = Workbench(enc, mode)
    qids, base_q = wb.query_matrix(ds, split, None)
    scores: dict[str, dict[str, float]] = {}
    runs: dict[str, Run] = {}
    for enc_name in encoders:
        s = wb.score(ds, split, None if enc_name == BASE else enc_name)
        scores[enc_name], runs[enc_name] = s.per_query, s.run
    table = DatasetTables(ds.name, qids, base_q, scores, runs, ds.qrels[split])
    if system in (BASE, MULTI_TASK) or system.startswith("expert:"):
        name = system.split(":", 1)[1] if system.startswith("expert:") else system
        return float(sum(scores[name].values()) / max(1, len(scores[name])))
    # The served library's fallback margin and corpus weight, so the domain and corpus rules score as served.
    lib = PilotLibrary.load(reg.root / "pilots.json") if (reg.root / "pilots.json").is_file() else None
    margin, weight = (lib.margin, lib.corpus_weight) if lib is not None else (0.0, 0.0)
    suite = SystemSuite(pilot_scores, names, {n: n for n in names}, margin=margin, corpus_weight=weight)
    return suite.score(system, table)

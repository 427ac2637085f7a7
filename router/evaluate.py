"""`rr eval`: one system on one BEIR collection (with or without an expert of its own)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from core.errors import NotFound
from core.settings import Settings
from ingest.beir import load_dataset
from router.encoders import BASE
from router.evaluation import Run
from router.pilots import PilotLibrary, PilotScores
from router.systems import DatasetTables, SystemSuite
from router.workbench import MULTI_TASK, Workbench, baseline_dir, make_encoder, registry_for


def evaluate_system(settings: Settings, data: Path, system: str, mode: str, split: str, console: Console) -> float:
    ds = load_dataset(data, (split,))
    enc = make_encoder(settings)
    reg = registry_for(settings, mode)
    experts = reg.all()
    for e in experts:
        enc.add_expert(e.name, e.path, e.manifest.base_fingerprint)
    names = sorted(x.name for x in experts)
    encoders: list[str] = [BASE]
    if system == MULTI_TASK:
        mt = baseline_dir(settings, mode)
        if not (mt / "manifest.json").is_file():
            raise NotFound(f"no multi-task baseline at {mt}; run `rr bench quality` to train it")
        enc.add_expert(MULTI_TASK, mt)
        encoders.append(MULTI_TASK)
    elif system.startswith("expert:"):
        encoders.append(system.split(":", 1)[1])
    elif system != BASE:
        encoders += names
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
    ps_path = reg.root / "pilot_scores.npz"
    if not ps_path.is_file():
        raise NotFound(f"{ps_path}: no pilot scores; build them with `rr bench quality`")
    # The served library's fallback margin and corpus weight, so the domain and corpus rules score as served.
    lib = PilotLibrary.load(reg.root / "pilots.json") if (reg.root / "pilots.json").is_file() else None
    margin, weight = (lib.margin, lib.corpus_weight) if lib is not None else (0.0, 0.0)
    suite = SystemSuite(PilotScores.load(ps_path), names, {n: n for n in names}, margin=margin, corpus_weight=weight)
    return suite.score(system, table)

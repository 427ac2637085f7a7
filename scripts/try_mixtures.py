"""Does mixing experts' query vectors beat picking one? Judged on the training queries no expert trained on.

In the query mode every expert searches the same base document vectors, so a weighted sum of several experts' query
vectors costs one search (and one encoder pass per expert mixed). This script routes each expert's held-out
training queries (its early-stopping and judging slices, :func:`router.training.trainer.held_out_queries`) with a
pilot library built on the other training queries, and scores, per domain:

- ``hard``: the domain rule's expert alone (what the platform serves);
- ``softT``: every domain leader's vector weighted by a softmax over the rule's per-domain similarities at
  temperature T;
- ``+baseA`` / ``+mtA``: the chosen expert's vector mixed with the base model's or the multi-task baseline's at
  weight A (caution: the multi-task baseline drew its early-stopping slices from one generator across domains, so
  outside the first domain it trained on most of these queries);
- ``mean_all``: the plain mean of every expert's vector; ``own``: the domain's own expert.

Reads the embedding cache the quality benchmark fills (run ``rr bench quality`` first, or it encodes what is
missing). Prints one row per domain and the averages (nDCG@10 x 100).

    python scripts/try_mixtures.py --data ../shared/data/beir
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.settings import get_settings  # noqa: E402  (after the path insert)
from ingest.beir import discover, load_dataset  # noqa: E402
from router.evaluation import ndcg_at_10, search_matrix  # noqa: E402
from router.pilots import PilotScores  # noqa: E402
from router.systems import SystemSuite  # noqa: E402
from router.training.data import domain_data  # noqa: E402
from router.training.trainer import held_out_queries  # noqa: E402
from router.validation import _subset  # noqa: E402
from router.workbench import MULTI_TASK, Workbench, baseline_dir, make_encoder, registry_for  # noqa: E402


def mean_ndcg(
    q: np.ndarray, docs: np.ndarray, doc_ids: list[str], qids: list[str], qrels: dict[str, dict[str, int]]
) -> float:
    q = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    per = ndcg_at_10(search_matrix(q, docs, doc_ids, qids), qrels)
    return float(np.mean([per[x] for x in qids]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data/beir"))
    args = p.parse_args()
    s = get_settings()
    enc = make_encoder(s)
    reg = registry_for(s, "query")
    experts = reg.all()
    for x in experts:
        enc.add_expert(x.name, x.path, x.manifest.base_fingerprint)
    enc.add_expert(MULTI_TASK, baseline_dir(s, "query"))
    names = sorted(x.name for x in experts)
    wb = Workbench(enc, "query")
    dss = {d.name: load_dataset(d, ("train",)) for d in discover(args.data) if d.name in names}
    ps = PilotScores.load(reg.root / "pilot_scores.npz")
    held = {x.name: set(held_out_queries(x.manifest, domain_data(dss[x.name]))) for x in experts if x.name in dss}
    masks = {d: np.array([q in held.get(d, set()) for q in ps.domains[d]], dtype=bool) for d in ps.domains}
    library = SystemSuite(_subset(ps, {d: ~m for d, m in masks.items()}), names, {n: n for n in names}).library

    results: dict[str, dict[str, float]] = {}
    for d, ds in sorted(dss.items()):
        qids_all, base_all = wb.query_matrix(ds, "train", None)
        keep = [i for i, q in enumerate(qids_all) if q in held[d]]
        qids = [qids_all[i] for i in keep]
        vecs = {e: wb.query_matrix(ds, "train", e)[1][keep] for e in [*names, MULTI_TASK]}
        base = base_all[keep]
        docs, doc_ids = wb.doc_matrix(ds, None), [x.id for x in ds.corpus]
        qrels = {q: ds.qrels["train"][q] for q in qids}
        sims = library.expert_scores(base, "domain")  # -inf for experts that lead no domain
        stack = np.stack([vecs[e] for e in library.routable], axis=1)  # (queries, experts, dim)
        chosen = stack[np.arange(len(qids)), np.argmax(sims, axis=1)]
        score = partial(mean_ndcg, docs=docs, doc_ids=doc_ids, qids=qids, qrels=qrels)
        row = {"hard": score(chosen)}
        for t in (0.002, 0.005, 0.01, 0.02):
            z = np.where(np.isfinite(sims), sims / t, -np.inf)
            w = np.exp(z - z.max(axis=1, keepdims=True))
            row[f"soft{t:g}"] = score(np.einsum("nk,nkd->nd", w / w.sum(axis=1, keepdims=True), stack))
        for a in (0.25, 0.5):
            row[f"+base{a:g}"] = score((1 - a) * chosen + a * base)
            row[f"+mt{a:g}"] = score((1 - a) * chosen + a * vecs[MULTI_TASK])
        row["mean_all"] = score(stack.mean(axis=1))
        row["own"] = score(vecs[d])
        results[d] = row
        print(f"{d:10} {len(qids):4}  " + "  ".join(f"{k} {100 * v:.1f}" for k, v in row.items()), flush=True)
    keys = list(next(iter(results.values())))
    print("average    " + "  ".join(f"{k} {100 * np.mean([r[k] for r in results.values()]):.2f}" for k in keys))


if __name__ == "__main__":
    main()

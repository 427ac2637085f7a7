"""Exact dense retrieval over a matrix and nDCG@10 as trec_eval computes it (pytrec_eval bindings)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytrec_eval

Run = dict[str, dict[str, float]]


def search_matrix(
    queries: np.ndarray,
    docs: np.ndarray,
    doc_ids: Sequence[str],
    query_ids: Sequence[str],
    k: int = 100,
    drop_self: bool = True,
) -> Run:
    """Top-k by dot product; a document whose id equals the query id is dropped (BEIR's rule, needed for ArguAna)."""
    run: Run = {}
    kk = min(k + 1, len(doc_ids))
    for start in range(0, len(queries), 256):
        sims = queries[start : start + 256] @ docs.T
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        for row, qid in enumerate(query_ids[start : start + 256]):
            idx = top[row][np.argsort(-sims[row, top[row]])]
            hits: dict[str, float] = {}
            for j in idx:
                did = doc_ids[j]
                if drop_self and did == qid:
                    continue
                hits[did] = float(sims[row, j])
                if len(hits) == k:
                    break
            run[qid] = hits
    return run


def ndcg_at_10(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]]) -> dict[str, float]:
    """Per-query nDCG@10 for every judged query; a judged query missing from the run scores 0."""
    evaluator = pytrec_eval.RelevanceEvaluator({q: dict(v) for q, v in qrels.items()}, {"ndcg_cut.10"})
    # pytrec_eval ranks by score then by doc id; pass the run as given.
    res = evaluator.evaluate({q: dict(v) for q, v in run.items() if q in qrels})
    return {q: float(res[q]["ndcg_cut_10"]) if q in res else 0.0 for q in qrels}


def mean(values: Mapping[str, float] | Sequence[float]) -> float:
    vals = list(values.values()) if isinstance(values, Mapping) else list(values)
    return float(np.mean(vals)) if vals else 0.0


def reciprocal_rank_fusion(runs: Sequence[Mapping[str, float]], k: int = 60, depth: int = 100) -> dict[str, float]:
    """Fuse ranked lists by RRF (Cormack et al. 2009); robust to the experts' different score scales."""
    fused: dict[str, float] = {}
    for run in runs:
        for rank, did in enumerate(sorted(run, key=lambda d: -run[d])[:depth]):
            fused[did] = fused.get(did, 0.0) + 1.0 / (k + rank + 1)
    return fused

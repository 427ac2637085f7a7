from __future__ import annotations

import math

import numpy as np

from router.evaluation import ndcg_at_10, reciprocal_rank_fusion, search_matrix


def test_ndcg_matches_hand_computation() -> None:
    qrels = {"q": {"d1": 1, "d2": 1}}
    run = {"q": {"x": 3.0, "d1": 2.0, "d2": 1.0}}
    ideal = 1 + 1 / math.log2(3)
    got = (1 / math.log2(3) + 1 / math.log2(4)) / ideal
    assert abs(ndcg_at_10(run, qrels)["q"] - got) < 1e-4
    assert ndcg_at_10({}, qrels) == {"q": 0.0}


def test_search_drops_the_query_itself() -> None:
    docs = np.eye(3, dtype=np.float32)
    run = search_matrix(docs[:1], docs, ["q1", "d2", "d3"], ["q1"], k=2)
    assert "q1" not in run["q1"] and len(run["q1"]) == 2
    kept = search_matrix(docs[:1], docs, ["q1", "d2", "d3"], ["q1"], k=2, drop_self=False)
    assert next(iter(kept["q1"])) == "q1"


def test_rrf_prefers_documents_both_lists_rank() -> None:
    fused = reciprocal_rank_fusion([{"a": 3, "b": 2, "c": 1}, {"b": 9, "c": 8, "a": 1}])
    assert max(fused, key=lambda d: fused[d]) == "b"

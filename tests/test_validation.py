"""Routing rules judged on held-out training queries (router.validation), on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import InvalidInput
from router.pilots import PilotScores
from router.validation import (
    VALIDATED,
    choose_corpus_weight,
    choose_margin,
    cross_validate,
    domain_accuracy,
    held_out_validate,
)


def _cluster(center: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    x = center + 0.05 * rng.standard_normal((n, len(center)))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _two_domains(n_a: int = 20, n_b: int = 20) -> tuple[PilotScores, dict[str, np.ndarray]]:
    """Two well-separated domains; each one's own expert finds everything (1.0) and the other nothing (0.0)."""
    rng = np.random.default_rng(0)
    ps = PilotScores()
    base = {}
    for name, n, center in (("a", n_a, np.array([1.0, 0, 0, 0])), ("b", n_b, np.array([0, 1.0, 0, 0]))):
        ps.add_domain(name, [f"{name}{i}" for i in range(n)], _cluster(center, n, rng))
        ps.set_scores(name, "a", [1.0 if name == "a" else 0.0] * n)
        ps.set_scores(name, "b", [1.0 if name == "b" else 0.0] * n)
        base[name] = np.full(n, 0.5, dtype=np.float32)
    return ps, base


def test_separated_domains_route_perfectly_on_held_out_queries() -> None:
    ps, base = _two_domains()
    got = cross_validate(ps, ["a", "b"], base, folds=4, seeds=(0,))
    assert set(got) == set(VALIDATED)
    for system in ("router_retriever", "router_retriever_domain", "dataset_router", "dataset_oracle"):
        assert got[system] == {"a": 1.0, "b": 1.0, "avg": 1.0}, system


def test_a_query_is_never_judged_by_pilots_it_built() -> None:
    # Domain "b" holds one query only: with it held out, no pilot of "b" exists, every rule sends it to "a"'s
    # expert, and it scores 0. In-sample it would score 1.
    ps, base = _two_domains(n_b=1)
    got = cross_validate(ps, ["a", "b"], base, folds=3, seeds=(0, 1))
    assert got["router_retriever"]["b"] == 0.0 and got["router_retriever_domain"]["b"] == 0.0
    assert got["router_retriever"]["a"] == 1.0
    assert got["dataset_oracle"]["b"] == 1.0  # the oracle looks at the held-out scores themselves


def test_fewer_than_two_folds_is_refused() -> None:
    ps, base = _two_domains()
    with pytest.raises(InvalidInput, match="at least 2 folds"):
        cross_validate(ps, ["a", "b"], base, folds=1)


def test_the_fallback_margin_is_chosen_on_held_out_queries() -> None:
    # A third domain "c" sits halfway between "a" and "b": neither expert finds anything for its queries, the base
    # model finds everything. Only a margin wider than its queries' domain gaps (a few hundredths) sends them to
    # the base model; "a" and "b" queries lead by about 1 and keep their experts.
    ps, base = _two_domains()
    rng = np.random.default_rng(1)
    ps.add_domain("c", [f"c{i}" for i in range(12)], _cluster(np.array([1.0, 1.0, 0, 0]) / np.sqrt(2), 12, rng))
    ps.set_scores("c", "a", [0.0] * 12)
    ps.set_scores("c", "b", [0.0] * 12)
    base["c"] = np.ones(12, dtype=np.float32)
    margin, scores = choose_margin(ps, ["a", "b"], base, grid=(0.0, 0.3, 0.9), folds=3, seeds=(0,))
    assert margin == 0.3  # 0.9 scores the same (a and b still lead by more), and ties go to the smaller
    assert scores[0.0] == pytest.approx((1 + 1 + 0) / 3, abs=1e-4) and scores[0.3] == pytest.approx(1.0)
    assert scores[0.9] == pytest.approx(1.0)
    # where no query is ambiguous, no margin helps and none is taken
    ps2, base2 = _two_domains()
    assert choose_margin(ps2, ["a", "b"], base2, grid=(0.0, 0.3), folds=3, seeds=(0,))[0] == 0.0
    with pytest.raises(InvalidInput, match="margin grid"):
        choose_margin(ps2, ["a", "b"], base2, grid=(-0.1,))


def test_routing_is_judged_on_the_given_held_out_queries_only() -> None:
    ps, base = _two_domains()
    # "b3" scores 1 for expert "a" alone: only a rule that sends it to "a" earns it. Routed by pilots fitted on
    # the other queries, it goes to "b" and scores 0; the oracle, which reads the scores, takes "a".
    ps.scores["b"]["a"][3], ps.scores["b"]["b"][3] = 1.0, 0.0
    got = held_out_validate(ps, ["a", "b"], base, {"a": ["a0", "a1"], "b": ["b2", "b3"]})
    assert set(got) == set(VALIDATED)
    assert got["router_retriever"] == {"a": 1.0, "b": 0.5, "avg": 0.75}
    assert got["dataset_router"] == {"a": 1.0, "b": 0.5, "avg": 0.75}
    assert got["dataset_oracle"]["b"] == 0.5  # one expert for the whole held-out slice: "a" and "b" tie at 0.5
    # a domain with no held-out queries is left out of the average
    only_a = held_out_validate(ps, ["a", "b"], base, {"a": ["a0"]})
    assert only_a["router_retriever"] == {"a": 1.0, "avg": 1.0}


def test_held_out_queries_must_be_training_queries() -> None:
    ps, base = _two_domains()
    with pytest.raises(InvalidInput, match="1 held-out queries of 'a' are not among its training queries"):
        held_out_validate(ps, ["a", "b"], base, {"a": ["a0", "zz"]})
    with pytest.raises(InvalidInput, match="domains without training queries: \\['c'\\]"):
        held_out_validate(ps, ["a", "b"], base, {"c": ["c0"]})
    with pytest.raises(InvalidInput, match="no held-out queries"):
        held_out_validate(ps, ["a", "b"], base, {"a": []})


def _small_domain_with_a_corpus() -> PilotScores:
    """Domain "a": 40 queries tight around e1. Domain "b": 8 queries on a ring around e1, in every direction of the
    (e2, e3) plane: the centroid of a few of them sits near e1, so a held-out "b" query often looks more like "a".
    Each domain's 200 documents cover its region, so the nearest corpus pilot tells the two apart."""
    rng = np.random.default_rng(0)
    e1 = np.array([1.0, 0, 0, 0])

    def ring(n: int) -> np.ndarray:
        t = rng.uniform(0, 2 * np.pi, n)
        x = np.stack([np.full(n, 1.2), np.cos(t), np.sin(t), np.zeros(n)], axis=1)
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    ps = PilotScores()
    for name, q in (("a", _cluster(e1, 40, rng)), ("b", ring(8))):
        ps.add_domain(name, [f"{name}{i}" for i in range(len(q))], q)
        ps.set_scores(name, "a", [1.0 if name == "a" else 0.0] * len(q))
        ps.set_scores(name, "b", [1.0 if name == "b" else 0.0] * len(q))
    ps.add_corpus("a", _cluster(e1, 200, rng), n_pilots=16)
    ps.add_corpus("b", ring(200), n_pilots=16)
    return ps


def test_the_corpus_weight_is_chosen_by_held_out_domain_accuracy() -> None:
    ps = _small_domain_with_a_corpus()
    without = domain_accuracy(ps, ["a", "b"], 0.0, folds=4, seeds=(0,))
    assert without["b"] < 0.5  # the query pilots alone misplace most held-out "b" queries
    weight, table = choose_corpus_weight(ps, ["a", "b"], grid=(0.0, 0.3, 0.7), folds=4, seeds=(0,))
    assert weight == 0.7 and table[0.7] == {"a": 1.0, "b": 1.0, "avg": 1.0}
    assert table[0.0] == without
    base = {d: np.zeros(len(ps.domains[d]), dtype=np.float32) for d in ps.domains}
    got = cross_validate(ps, ["a", "b"], base, folds=4, seeds=(0,), corpus_weight=weight)
    assert got["router_retriever_corpus"]["avg"] == 1.0
    assert got["router_retriever_domain"]["b"] == without["b"]  # each "b" query placed in "a" scores 0


def test_the_corpus_weight_without_corpus_pilots_or_with_a_bad_grid() -> None:
    ps, _ = _two_domains()
    assert choose_corpus_weight(ps, ["a", "b"]) == (0.0, {})
    with pytest.raises(InvalidInput, match="within"):
        choose_corpus_weight(ps, ["a", "b"], grid=(0.0, 1.5))
    with pytest.raises(InvalidInput, match="at least 2 folds"):
        domain_accuracy(ps, ["a", "b"], 0.0, folds=1)

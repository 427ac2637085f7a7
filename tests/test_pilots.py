"""Algorithm 1 and the routing rules on hand-made cases whose answers are known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.errors import InvalidInput, NotFound
from router.pilots import PilotLibrary, PilotScores


def _unit(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


@pytest.fixture
def scores() -> PilotScores:
    ps = PilotScores()
    # domain "d1": q0, q1 best with expert A; q2 best with B; q3 found by nobody (dropped).
    ps.add_domain(
        "d1",
        ["q0", "q1", "q2", "q3"],
        np.stack([_unit(1, 0, 0), _unit(1, 1, 0), _unit(0, 1, 0), _unit(0, 0, 1)]),
    )
    ps.set_scores("d1", "A", [0.9, 0.5, 0.1, 0.0])
    ps.set_scores("d1", "B", [0.2, 0.4, 0.8, 0.0])
    # domain "d2": both queries best with B; the tie on q1 goes to the first expert in sorted order (A).
    ps.add_domain("d2", ["q0", "q1"], np.stack([_unit(0, 0, 1), _unit(0, 1, 1)]))
    ps.set_scores("d2", "A", [0.1, 0.6])
    ps.set_scores("d2", "B", [0.7, 0.6])
    return ps


def test_algorithm1_labels_groups_and_centroids(scores: PilotScores) -> None:
    assert scores.labels("d1", ["A", "B"]).tolist() == [0, 0, 1, -1]
    assert scores.labels("d2", ["A", "B"]).tolist() == [1, 0]
    lib = scores.build()
    got = {(p.domain, p.expert): (p.size, p.vector) for p in lib.pilots}
    assert set(got) == {("d1", "A"), ("d1", "B"), ("d2", "A"), ("d2", "B")}
    size, vec = got[("d1", "A")]
    assert size == 2
    np.testing.assert_allclose(vec, (_unit(1, 0, 0) + _unit(1, 1, 0)) / 2, rtol=1e-6)
    assert got[("d1", "B")][0] == 1 and got[("d2", "B")][0] == 1
    assert len(lib) <= 2 * 2  # at most T x T pilots


def test_ties_go_to_the_home_expert(scores: PilotScores) -> None:
    # d2's q1 ties A and B: without a home expert the first by name (A) wins, with home B it is B's.
    assert scores.labels("d2", ["A", "B"]).tolist() == [1, 0]
    assert scores.labels("d2", ["A", "B"], home="B").tolist() == [1, 1]
    assert scores.labels("d1", ["A", "B"], home="B").tolist() == [0, 0, 1, -1]  # q3: nobody found anything


def test_mean_rule_differs_from_nearest() -> None:
    from router.pilots import Pilot

    # A owns one pilot right on the query and one far away; B owns two pilots moderately close.
    lib = PilotLibrary(
        [
            Pilot("A", "d1", 1, _unit(1, 0)),
            Pilot("A", "d2", 1, _unit(-1, 0.1)),
            Pilot("B", "d1", 1, _unit(1, 0.6)),
            Pilot("B", "d2", 1, _unit(1, 0.8)),
        ]
    )
    q = _unit(1, 0)[None, :]
    assert lib.route(q, "nearest")[0].expert == "A"
    mean = lib.route(q, "mean")[0]
    assert mean.expert == "B"
    np.testing.assert_allclose(mean.scores["A"], (1.0 + float(_unit(-1, 0.1)[0])) / 2, atol=1e-6)
    assert lib.route(q, "topk", k=1)[0].expert == "A"
    weighted = PilotLibrary(
        [
            Pilot("A", "d1", 19, _unit(1, 0)),
            Pilot("A", "d2", 1, _unit(-1, 0.1)),
            Pilot("B", "d1", 1, _unit(1, 0.6)),
            Pilot("B", "d2", 1, _unit(1, 0.8)),
        ]
    )
    assert weighted.route(q, "weighted")[0].expert == "A"  # A's big group outweighs its stray pilot
    assert weighted.route(q, "mean")[0].expert == "B"
    with pytest.raises(InvalidInput, match="unknown routing rule"):
        lib.route(q, "vote")


def test_domain_rule_routes_by_domain_then_its_majority_expert() -> None:
    from router.pilots import Pilot

    # Domain d1 (around x): A won 30 of its training queries, B won 2, and B's stray pilot sits right on the query.
    # Domain d2 (around y): B won 40, A won 1.
    lib = PilotLibrary(
        [
            Pilot("A", "d1", 30, _unit(1, 0.2)),
            Pilot("B", "d1", 2, _unit(1, 0)),
            Pilot("A", "d2", 1, _unit(0.3, 1)),
            Pilot("B", "d2", 40, _unit(0, 1)),
        ]
    )
    q = _unit(1, 0)[None, :]
    assert lib.route(q, "nearest")[0].expert == "B"  # the stray pilot wins the single-nearest rule
    d = lib.route(q, "domain")[0]
    assert d.expert == "A"  # the query is from d1, whose training queries A served best
    want = (30 * float(_unit(1, 0.2)[0]) + 2 * 1.0) / 32
    assert d.scores["A"] == pytest.approx(want, abs=1e-6)
    assert lib.route(_unit(0.1, 1)[None, :], "domain")[0].expert == "B"
    # A domain whose largest groups tie goes to the first expert by name.
    tie = PilotLibrary([Pilot("B", "d1", 5, _unit(1, 0)), Pilot("A", "d1", 5, _unit(0, 1))])
    assert tie.route(q, "domain")[0].expert == "A"
    assert tie.expert_scores(q, "domain")[0, 1] == -np.inf  # B leads no domain: never chosen


def test_domain_rule_falls_back_to_base_when_the_domain_is_ambiguous() -> None:
    from router.pilots import Pilot

    lib = PilotLibrary([Pilot("A", "d1", 10, _unit(1, 0)), Pilot("B", "d2", 10, _unit(0, 1))])
    between = _unit(1, 0.98)[None, :]  # nearly as close to d2 as to d1
    assert lib.route(between, "domain")[0].expert == "A"
    lib.margin = 0.05
    assert lib.route(between, "domain")[0].expert == "base"
    assert lib.route(_unit(1, 0.1)[None, :], "domain")[0].expert == "A"  # a clear case still goes to its expert
    lib.rule = "domain"
    assert PilotLibrary.from_json(json.loads(json.dumps(lib.to_json()))).margin == 0.05


def test_the_fallback_margin_sends_only_ambiguous_queries_to_the_base_model() -> None:
    # (the margin itself is chosen on held-out queries: tests/test_validation.py)
    ps = PilotScores()
    # d1's queries sit near x, d2's near y; q2 of d1 lies between the two.
    ps.add_domain("d1", ["q0", "q1", "q2"], np.stack([_unit(1, 0), _unit(1, 0.1), _unit(1, 0.97)]))
    ps.set_scores("d1", "A", [0.9, 0.9, 0.0])
    ps.set_scores("d1", "B", [0.1, 0.1, 0.0])
    ps.add_domain("d2", ["q0", "q1"], np.stack([_unit(0, 1), _unit(0.1, 1)]))
    ps.set_scores("d2", "A", [0.1, 0.1])
    ps.set_scores("d2", "B", [0.8, 0.8])
    lib = ps.build(["A", "B"])
    assert [r.expert for r in lib.route(ps.embeddings["d1"], "domain")] == ["A", "A", "A"]
    lib.margin = 0.05
    assert [r.expert for r in lib.route(ps.embeddings["d1"], "domain")] == ["A", "A", "base"]
    assert [r.expert for r in lib.route(ps.embeddings["d2"], "domain")] == ["B", "B"]


def test_removing_an_expert_relabels_without_training(scores: PilotScores, tmp_path: Path) -> None:
    scores.remove_expert("B")
    lib = scores.build()
    assert lib.experts == ["A"]
    # d1's q2 (formerly B's) now belongs to A since A still found something there.
    sizes = {(p.domain, p.expert): p.size for p in lib.pilots}
    assert sizes == {("d1", "A"): 3, ("d2", "A"): 2}


def test_adding_an_expert_only_adds_its_column(scores: PilotScores, tmp_path: Path) -> None:
    before = {d: dict(cols) for d, cols in scores.scores.items()}
    scores.set_scores("d1", "C", [1.0, 0.0, 0.0, 0.0])
    scores.set_scores("d2", "C", [0.0, 0.0])
    for d, cols in before.items():
        for e, v in cols.items():
            np.testing.assert_array_equal(scores.scores[d][e], v)
    lib = scores.build()
    assert ("d1", "C", 1) in {(p.domain, p.expert, p.size) for p in lib.pilots}


def test_persistence_round_trip(scores: PilotScores, tmp_path: Path) -> None:
    scores.save(tmp_path / "s.npz")
    again = PilotScores.load(tmp_path / "s.npz")
    assert again.experts == scores.experts and again.domains == scores.domains
    lib = scores.build()
    lib.save(tmp_path / "p.json")
    lib2 = PilotLibrary.load(tmp_path / "p.json")
    q = _unit(1, 0.2, 0.1)[None, :]
    assert lib2.route(q)[0].expert == lib.route(q)[0].expert


def test_a_malformed_pilot_library_is_an_error_naming_the_file(scores: PilotScores, tmp_path: Path) -> None:
    from core.errors import DataFormatError

    path = tmp_path / "pilots.json"
    path.write_text('{"experts": ["A"], "pilots": [')
    with pytest.raises(DataFormatError, match="not valid JSON") as err:
        PilotLibrary.load(path)
    assert str(path) in str(err.value)
    for body, want in (("[1, 2]", "JSON object"), ('{"experts": ["A"]}', "not a pilot library")):
        path.write_text(body)
        with pytest.raises(DataFormatError, match=want) as err:
            PilotLibrary.load(path)
        assert str(path) in str(err.value)
    path.write_bytes(b'{"rule": "\xff"}')
    with pytest.raises(DataFormatError, match="UTF-8"):
        PilotLibrary.load(path)
    good = scores.build().to_json()
    path.write_text(json.dumps({**good, "rule": "vote"}))
    with pytest.raises(InvalidInput, match="unknown routing rule") as bad_rule:
        PilotLibrary.load(path)
    assert str(path) in str(bad_rule.value)
    # The stacked rule's model: missing weights, or weights of the wrong shape, name the file too.
    path.write_text(json.dumps({**good, "stacker": {"domains": ["d1", "d2"]}}))
    with pytest.raises(DataFormatError, match="not a pilot library") as err:
        PilotLibrary.load(path)
    assert str(path) in str(err.value)
    path.write_text(json.dumps({**good, "stacker": {"domains": ["d1", "d2"], "coef": [[1.0]], "intercept": [0, 0]}}))
    with pytest.raises(InvalidInput, match="weights of shape") as err2:
        PilotLibrary.load(path)
    assert str(path) in str(err2.value)
    # Rule 'stacked' with no model at all (a hand edit): refused when read, not on every search afterwards.
    assert len({p["domain"] for p in good["pilots"] if p.get("kind", "query") == "query"}) > 1
    path.write_text(json.dumps({**{k: v for k, v in good.items() if k != "stacker"}, "rule": "stacked"}))
    with pytest.raises(InvalidInput, match="no domain model") as err3:
        PilotLibrary.load(path)
    assert str(path) in str(err3.value) and err3.value.field == "stacker"
    with pytest.raises(NotFound, match="rr bench quality"):
        PilotLibrary.load(tmp_path / "none.json")


def test_bad_inputs(scores: PilotScores) -> None:
    with pytest.raises(InvalidInput, match="expected 4 scores"):
        scores.set_scores("d1", "A", [1.0])
    with pytest.raises(InvalidInput, match="at least one expert"):
        scores.build([])


def test_rebuilding_after_a_change_of_experts_keeps_the_served_rule_and_margin(scores: PilotScores) -> None:
    served = scores.build()
    served.rule, served.margin = "domain", 0.02
    fewer = scores.build(["B"], like=served)  # expert A removed: new pilots, same way of reading them
    assert {p.expert for p in fewer.pilots} == {"B"}
    assert (fewer.rule, fewer.margin) == ("domain", 0.02)
    assert (scores.build(["B"]).rule, scores.build(["B"]).margin) == ("mean", 0.0)  # nothing to carry over


def test_corpus_pilots_tell_the_domain_where_its_few_query_pilots_do_not() -> None:
    from router.pilots import CORPUS, Pilot

    # d1 (expert A) has one query pilot far from the query, but its documents sit right on it; d2's query pilot
    # is closer. The domain rule picks d2; with enough weight on corpus pilots the corpus rule picks d1.
    q = _unit(1, 0.1, 0)[None, :]
    pilots = [
        Pilot("A", "d1", 3, _unit(0.2, 0, 1)),
        Pilot("A", "d1", 500, _unit(1, 0.1, 0), CORPUS),
        Pilot("B", "d2", 40, _unit(1, 1, 0)),
        Pilot("B", "d2", 500, _unit(0, 1, 0), CORPUS),
    ]
    lib = PilotLibrary(pilots)
    assert lib.route(q, "domain")[0].expert == "B"
    lib.corpus_weight = 0.5
    d = lib.route(q, "corpus")[0]
    assert d.expert == "A"
    want = 0.5 * float(_unit(0.2, 0, 1) @ q[0]) + 0.5 * 1.0
    assert d.scores["A"] == pytest.approx(want, abs=1e-6)
    assert lib.guess_domains(q) == ["d1"] and lib.guess_domains(q, 0.0) == ["d2"]
    # No other rule reads corpus pilots: the same library without them routes the same.
    plain = PilotLibrary([p for p in pilots if p.kind != CORPUS])
    for rule in ("mean", "nearest", "topk", "weighted", "domain"):
        np.testing.assert_allclose(lib.expert_scores(q, rule), plain.expert_scores(q, rule))
    # Weight 0 makes the corpus rule the domain rule.
    lib.corpus_weight = 0.0
    np.testing.assert_allclose(lib.expert_scores(q, "corpus"), lib.expert_scores(q, "domain"))
    again = PilotLibrary.from_json(json.loads(json.dumps({**lib.to_json(), "corpus_weight": 0.5})))
    assert again.corpus_weight == 0.5 and [p.kind for p in again.pilots] == [p.kind for p in pilots]
    assert again.route(q, "corpus")[0].expert == "A"


def test_corpus_pilot_errors() -> None:
    from router.pilots import CORPUS, Pilot, aggregate, corpus_centroids

    with pytest.raises(InvalidInput, match="unknown pilot kind"):
        PilotLibrary([Pilot("A", "d1", 1, _unit(1, 0)), Pilot("A", "d1", 1, _unit(0, 1), "document")])
    with pytest.raises(InvalidInput, match="cannot be routed to"):
        PilotLibrary([Pilot("A", "d1", 1, _unit(1, 0)), Pilot("B", "d1", 1, _unit(0, 1), CORPUS)])
    with pytest.raises(InvalidInput, match="corpus_weight"):
        aggregate(np.ones((1, 1)), np.zeros(1), np.zeros(1), np.ones(1), 1, "corpus", corpus_weight=1.5)
    with pytest.raises(InvalidInput, match="non-empty"):
        corpus_centroids(np.zeros((0, 3)))
    with pytest.raises(InvalidInput, match="at least 1"):
        corpus_centroids(np.ones((4, 3)), n_pilots=0)


def test_corpus_pilots_are_built_persisted_and_follow_their_domain_leader(scores: PilotScores, tmp_path: Path) -> None:
    from router.pilots import CORPUS, corpus_centroids

    rng = np.random.default_rng(0)
    docs = rng.standard_normal((50, 3)).astype(np.float32)
    centres, sizes = corpus_centroids(docs, n_pilots=4)
    assert centres.shape == (4, 3) and sizes.sum() == 50
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 1.0, atol=1e-5)
    small, ones = corpus_centroids(docs[:3], n_pilots=4)  # a corpus no bigger than the pilots is kept whole
    assert small.shape == (3, 3) and ones.tolist() == [1, 1, 1]
    with pytest.raises(NotFound, match="no domain"):
        scores.add_corpus("nowhere", docs)
    scores.add_corpus("d1", docs, n_pilots=4)
    lib = scores.build(["A", "B"])
    corpus = [p for p in lib.pilots if p.kind == CORPUS]
    assert len(corpus) == 4 and {p.domain for p in corpus} == {"d1"}
    assert {p.expert for p in corpus} == {"A"}  # A won two of d1's three labelled queries
    scores.save(tmp_path / "s.npz")
    again = PilotScores.load(tmp_path / "s.npz")
    np.testing.assert_array_equal(again.corpus["d1"], scores.corpus["d1"])
    assert again.corpus_sizes["d1"].tolist() == scores.corpus_sizes["d1"].tolist()
    # Without A, B leads d1 and the corpus pilots go with the domain, not with the removed expert.
    assert {p.expert for p in again.build(["B"]).pilots if p.kind == CORPUS} == {"B"}
    again.remove_domain("d1")
    assert "d1" not in again.corpus


def _stacked_case() -> PilotScores:
    """Two domains whose corpus misleads the corpus rule: d2's documents look like d1's queries (the x axis),
    d1's documents look like neither domain's queries (the z axis)."""
    rng = np.random.default_rng(0)
    ps = PilotScores()
    for d, axis, winner in (("d1", 0, "A"), ("d2", 1, "B")):
        emb = np.zeros((20, 4), dtype=np.float32)
        emb[:, axis] = 1.0
        emb[:, 3] = rng.uniform(0.0, 0.3, 20)  # a little spread, so the regression has something to fit
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        ps.add_domain(d, [f"{d}-{i}" for i in range(20)], emb)
        ps.set_scores(d, "A", [0.9 if winner == "A" else 0.1] * 20)
        ps.set_scores(d, "B", [0.9 if winner == "B" else 0.1] * 20)
    ps.corpus["d1"], ps.corpus_sizes["d1"] = np.stack([_unit(0, 0, 1, 0)]), np.array([100])
    ps.corpus["d2"], ps.corpus_sizes["d2"] = np.stack([_unit(1, 0, 0, 0)]), np.array([100])
    return ps


def test_stacked_rule_learns_which_evidence_tells_each_domain() -> None:
    lib = _stacked_case().build(["A", "B"])
    lib.corpus_weight = 0.5
    q = _unit(1, 0, 0, 0.1)[None, :]  # a d1 query: on d1's queries and on d2's documents
    assert lib.route(q, "corpus")[0].expert == "B"  # the corpus rule adds the two evidences: d2's documents win
    d = lib.route(q, "stacked")[0]
    assert d.expert == "A" and lib.guess_domains(q, stacked=True) == ["d1"]
    # Scores are each domain leader's log-probability: they sum to one as probabilities.
    assert sum(np.exp(v) for v in d.scores.values()) == pytest.approx(1.0, abs=1e-5)
    model = lib.domain_model()
    assert model is not None and model.domains == ["d1", "d2"] and model.coef.shape == (2, 4)
    # The model travels in pilots.json: a library read back routes the same without its training queries.
    again = PilotLibrary.from_json(json.loads(json.dumps(lib.to_json())))
    assert not again.training_queries and again.stacker is not None
    np.testing.assert_allclose(again.expert_scores(q, "stacked"), lib.expert_scores(q, "stacked"), atol=1e-5)


def test_stacked_rule_errors_and_refits_when_the_domains_change() -> None:
    from router.pilots import DomainStacker, aggregate

    ps = _stacked_case()
    q = _unit(1, 0, 0, 0.1)[None, :]
    bare = PilotLibrary.from_json({k: v for k, v in ps.build(["A", "B"]).to_json().items() if k != "stacker"})
    with pytest.raises(InvalidInput, match="domain model"):
        bare.route(q, "stacked")
    with pytest.raises(InvalidInput, match="domain model"):
        aggregate(np.ones((1, 2)), np.zeros(2), np.arange(2), np.ones(2), 1, "stacked")
    stale = DomainStacker(["d1", "d9"], np.zeros((2, 4)), np.zeros(2))
    bare.stacker = stale
    with pytest.raises(InvalidInput, match="rebuild the pilot library"):
        bare.route(q, "stacked")
    with pytest.raises(InvalidInput, match="weights of shape"):
        DomainStacker.from_json({"domains": ["d1", "d2"], "coef": [[0.0]], "intercept": [0.0, 0.0]})
    # Without d2, one domain is left: nothing to tell apart, no model; the rule routes to d1's leader.
    ps.remove_domain("d2")
    one = ps.build(["A", "B"])
    assert one.domain_model() is None and "stacker" not in one.to_json()
    assert one.route(q, "stacked")[0].expert == "A" and one.route(q, "stacked")[0].scores["A"] == 0.0

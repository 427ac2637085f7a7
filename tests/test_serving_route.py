"""Routing through the pilot collection gives exactly the offline library's decision, for every servable rule."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from ingest.beir import load_dataset
from router.encoders import TextEncoder
from router.experts import ExpertRegistry
from router.serving import PILOT_COLLECTION, PILOTS_FILE, SCORES_FILE, Retriever
from store import EdgeStore
from store.base import iter_points
from tests.platform_fixtures import build_pilot_scores, train_tiny_expert

QUERIES = ["protein in the cell", "supersonic wing flow", "cancer drug trial", "shock boundary layer", "heat plate"]


@pytest.mark.parametrize("rule", ["mean", "weighted", "nearest", "topk", "domain", "corpus"])
def test_pilot_collection_routes_like_the_library(tiny_model: Path, beir_root: Path, tmp_path: Path, rule: str) -> None:
    reg_root = tmp_path / "experts"
    reg_root.mkdir()
    experts = {n: train_tiny_expert(tiny_model, beir_root, n, "query", tmp_path / "src" / n) for n in ("bio", "aero")}
    for n, p in experts.items():
        shutil.copytree(p, reg_root / n)
    ps = build_pilot_scores(tiny_model, beir_root, experts)
    if rule == "corpus":  # each domain's documents become its corpus pilots, read with half the weight
        enc = TextEncoder(str(tiny_model), bf16=False)
        for d in ("aero", "bio"):
            ps.add_corpus(d, enc.encode([x.full_text for x in load_dataset(beir_root / d).corpus]), n_pilots=4)
    ps.save(reg_root / SCORES_FILE)
    lib = ps.build(["aero", "bio"])
    lib.rule = rule
    lib.corpus_weight = 0.5 if rule == "corpus" else 0.0
    if rule == "domain":  # a margin between the queries' domain gaps: some fall back to the base model
        base_emb = TextEncoder(str(tiny_model), bf16=False).encode(QUERIES)
        sims = base_emb @ lib.matrix.T
        doms = sorted({p.domain for p in lib.pilots})
        per_domain = np.stack(
            [
                sims[:, [p.domain == d for p in lib.pilots]] @ lib.sizes[[p.domain == d for p in lib.pilots]]
                for d in doms
            ],
            axis=1,
        ) / np.array([sum(p.size for p in lib.pilots if p.domain == d) for d in doms])
        gaps = np.sort(np.abs(per_domain[:, 0] - per_domain[:, 1]))
        lib.margin = float((gaps[0] + gaps[-1]) / 2)
    lib.save(reg_root / PILOTS_FILE)
    store = EdgeStore(tmp_path / "store")
    r = Retriever(TextEncoder(str(tiny_model), bf16=False), ExpertRegistry(reg_root), store)
    assert r.library is not None and r.library.rule == rule
    if rule == "corpus":
        assert len(r.library) == len(lib) and int(r.library.corpus.sum()) == 8
        assert sum(1 for _ in iter_points(store, PILOT_COLLECTION)) == len(lib)
    base = r.encoder.encode(QUERIES)
    offline = lib.expert_scores(base, rule)
    for i, q in enumerate(QUERIES):
        online = r.route(q)
        for j, e in enumerate(lib.routable):
            if np.isfinite(offline[i, j]):
                assert online.scores[e] == pytest.approx(float(offline[i, j]), abs=1e-4)
            else:  # the rule cannot choose this expert (domain: it leads no domain)
                assert e not in online.scores
        assert online.expert == lib.route(base[i : i + 1], rule)[0].expert
    if rule == "domain":
        chosen = {d.expert for d in lib.route(base, rule)}
        assert "base" in chosen and chosen - {"base"}  # both the fallback and an expert were exercised
    store.close()

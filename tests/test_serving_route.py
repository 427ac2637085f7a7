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
from tests.platform_fixtures import build_pilot_scores, perturbed_expert, train_tiny_expert

QUERIES = ["protein in the cell", "supersonic wing flow", "cancer drug trial", "shock boundary layer", "heat plate"]


@pytest.mark.parametrize("rule", ["mean", "weighted", "nearest", "topk", "domain", "corpus", "stacked"])
def test_pilot_collection_routes_like_the_library(tiny_model: Path, beir_root: Path, tmp_path: Path, rule: str) -> None:
    reg_root = tmp_path / "experts"
    reg_root.mkdir()
    experts = {n: train_tiny_expert(tiny_model, beir_root, n, "query", tmp_path / "src" / n) for n in ("bio", "aero")}
    for n, p in experts.items():
        shutil.copytree(p, reg_root / n)
    ps = build_pilot_scores(tiny_model, beir_root, experts)
    if rule in ("corpus", "stacked"):  # each domain's documents become its corpus pilots
        enc = TextEncoder(str(tiny_model), bf16=False)
        for d in ("aero", "bio"):
            ps.add_corpus(d, enc.encode([x.full_text for x in load_dataset(beir_root / d).corpus]), n_pilots=4)
    ps.save(reg_root / SCORES_FILE)
    lib = ps.build(["aero", "bio"])
    lib.rule = rule
    lib.corpus_weight = 0.5 if rule in ("corpus", "stacked") else 0.0
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
    if rule in ("corpus", "stacked"):
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
    if rule == "stacked":  # a tenant allowed one expert: the model still reads every domain, one expert is left
        assert r.library.stacker is not None
        for q in QUERIES:
            assert set(r.route(q, allowed=["bio"]).scores) == {"bio"}
    if rule == "domain":
        chosen = {d.expert for d in lib.route(base, rule)}
        assert "base" in chosen and chosen - {"base"}  # both the fallback and an expert were exercised
    store.close()


@pytest.mark.parametrize("others", [["aero"], []], ids=["beside-another", "alone"])
def test_an_expert_replaced_under_its_name_is_served_with_its_new_weights(
    tiny_model: Path, tiny_experts: dict[str, Path], tmp_path: Path, others: list[str]
) -> None:
    from router.cache import EmbeddingCache

    reg_root = tmp_path / "experts"
    for n in ["bio", *others]:
        shutil.copytree(tiny_experts[n], reg_root / n)
    enc = TextEncoder(str(tiny_model), bf16=False, cache=EmbeddingCache(tmp_path / "cache"))
    r = Retriever(enc, ExpertRegistry(reg_root))  # a running API or worker

    def fresh(name: str) -> np.ndarray:  # what a process started now serves
        started = Retriever(TextEncoder(str(tiny_model), bf16=False), ExpertRegistry(reg_root))
        return started.encode_query(QUERIES[0], name)

    old = r.encode_query(QUERIES[0], "bio")  # now in the embedding cache
    old_fp = enc.fingerprint("bio", "query")
    before = {n: r.encode_query(QUERIES[0], n) for n in others}
    assert r.refresh() is False  # nothing changed: nothing reloaded

    # another process replaces it the way `rr experts train --replace` does: a copy renamed in under the name
    ExpertRegistry(reg_root).add(perturbed_expert(tiny_experts["bio"], tmp_path / "new" / "bio", 0.5), replace=True)
    assert r.refresh() is True and r.experts == sorted(["bio", *others])
    new = r.encode_query(QUERIES[0], "bio")
    assert not np.allclose(new, old, atol=1e-4)  # the new weights, not the old ones nor their cached vector
    np.testing.assert_allclose(new, fresh("bio"), atol=1e-6)
    assert enc.fingerprint("bio", "query") != old_fp  # the cache keys the new adapter's vectors apart
    for n in others:  # the other expert is untouched
        np.testing.assert_allclose(r.encode_query(QUERIES[0], n), before[n], atol=1e-6)
    assert r.refresh() is False

    # the adapter's weights rewritten in place: the registry folder's mtime does not move, the file's stamp does
    again = perturbed_expert(tiny_experts["bio"], tmp_path / "again" / "bio", 1.0)
    (reg_root / "bio" / "adapter_model.safetensors").write_bytes((again / "adapter_model.safetensors").read_bytes())
    assert r.refresh() is True
    newer = r.encode_query(QUERIES[0], "bio")
    assert not np.allclose(newer, new, atol=1e-4)
    np.testing.assert_allclose(newer, fresh("bio"), atol=1e-6)
    assert r.refresh() is False


def test_a_replacement_the_encoder_refuses_is_not_served_in_the_old_ones_place(
    tiny_model: Path, tiny_experts: dict[str, Path], tmp_path: Path
) -> None:
    import json

    reg_root = tmp_path / "experts"
    for n in ("bio", "aero"):
        shutil.copytree(tiny_experts[n], reg_root / n)
    r = Retriever(TextEncoder(str(tiny_model), bf16=False), ExpertRegistry(reg_root))
    manifest = reg_root / "bio" / "manifest.json"
    m = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**m, "base_fingerprint": "0" * 16}))  # now trained on another base model
    assert r.refresh() is True
    assert r.experts == ["aero"] and r.encoder.experts == ["aero"]  # not the old weights under the new manifest
    assert r.refresh() is False  # not tried again on every search ...
    manifest.write_text(json.dumps(m))
    assert r.refresh() is True and r.experts == ["aero", "bio"]  # ... but once its files change


def test_an_expert_whose_removal_cannot_read_the_pilot_scores_is_kept(
    tiny_model: Path, tiny_experts: dict[str, Path], beir_root: Path, tmp_path: Path
) -> None:
    """The folder was deleted before the scores file was read: a damaged file left pilots of an expert gone."""
    from core.errors import DataFormatError

    reg_root = tmp_path / "experts"
    for n in ("bio", "aero"):
        shutil.copytree(tiny_experts[n], reg_root / n)
    r = Retriever(TextEncoder(str(tiny_model), bf16=False), ExpertRegistry(reg_root))
    (reg_root / SCORES_FILE).write_bytes(b"garbage")
    with pytest.raises(DataFormatError, match="not a pilot scores file"):
        r.unregister("aero")
    assert "aero" in r.experts and (reg_root / "aero" / "manifest.json").is_file()

"""Manifests, the registry, and experts on the encoder: a tiny real BERT with real peft adapters."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from core.errors import Conflict, IncompatibleExpert, InvalidInput, NotFound
from ingest.beir import BeirDataset, Document, load_dataset
from router.cache import EmbeddingCache
from router.encoders import TextEncoder, native_bf16, resolve_bf16
from router.experts import ExpertRegistry, Manifest
from router.training.data import DomainData, Example, domain_data
from router.training.trainer import TrainConfig, TrainResult, held_out_queries, train_expert


def word_pair_docs(n: int = 24) -> list[str]:
    """Small documents of two alternating words from the tiny model's vocabulary."""
    words = ["shock", "wave", "wing", "cell", "protein", "gene", "flow", "drag"]
    return [f"{a} {b} {a} {b} {a}" for a in words for b in words if a != b][:n]


def word_pair_domain() -> DomainData:
    """24 labelled queries "a b", each finding its own word-pair document."""
    docs = word_pair_docs()
    examples = [Example(f"q{i}", f"{d.split()[0]} {d.split()[1]}", (i,)) for i, d in enumerate(docs)]
    return DomainData("aero", [str(i) for i in range(len(docs))], docs, examples)


def train_on_word_pairs(tiny_model: Path, data: DomainData, out: Path, cfg: TrainConfig, **kw: Any) -> TrainResult:
    """A query-side expert "aero" trained on ``data`` against the base model's document vectors."""
    enc = TextEncoder(str(tiny_model), bf16=False)
    docs = {"aero": enc.encode(data.doc_texts, None, "document")}
    return train_expert(
        str(tiny_model), enc.base_fingerprint, [data], out, name="aero", domain="aero", cfg=cfg, doc_matrices=docs, **kw
    )


def test_manifest_round_trip(tmp_path: Path) -> None:
    m = Manifest(
        name="scifact",
        domain="scifact",
        base_model="m",
        base_fingerprint="abc",
        sides="query+document",
        training={"supervised_queries": 3},
        scores={"val_ndcg@10": 0.7},
    )
    m.save(tmp_path)
    again = Manifest.load(tmp_path)
    assert again == m and again.encodes_documents


def test_manifest_validation(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="sides"):
        Manifest(name="x", domain="x", base_model="m", base_fingerprint="f", sides="both")
    with pytest.raises(InvalidInput, match="name"):
        Manifest(name="Bad Name", domain="x", base_model="m", base_fingerprint="f")
    with pytest.raises(InvalidInput, match="name"):  # "$" alone would let a trailing newline through
        Manifest(name="med\n", domain="x", base_model="m", base_fingerprint="f")
    (tmp_path / "manifest.json").write_text(
        json.dumps({"name": "x", "domain": "x", "base_model": "m", "base_fingerprint": "f", "colour": 1})
    )
    with pytest.raises(InvalidInput, match="unknown fields"):
        Manifest.load(tmp_path)
    with pytest.raises(InvalidInput, match=r"no manifest\.json; is this an expert directory") as err:
        Manifest.load(tmp_path / "nope")  # a folder given as an expert: bad input (400 from POST /experts)
    assert err.value.field == "path"


@pytest.fixture(scope="module")
def trained(tiny_model: Path, beir_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two real experts trained on the tiny model (a few seconds)."""
    out = tmp_path_factory.mktemp("experts")
    enc = TextEncoder(str(tiny_model), bf16=False)
    paths = {}
    for name in ("bio", "aero"):
        ds = load_dataset(beir_root / name)
        docs = {name: enc.encode([d.full_text for d in ds.corpus], None, "document")}
        res = train_expert(
            str(tiny_model),
            enc.base_fingerprint,
            [domain_data(ds, min_supervised=0)],
            out / name,
            name=name,
            domain=name,
            cfg=TrainConfig(max_epochs=8, patience=8, bf16=False, lr=5e-3, batch_size=2, keep="last"),
            doc_matrices=docs,
        )
        paths[name] = res.path
    return paths


def test_training_loss_falls(trained: dict[str, Path]) -> None:
    m = Manifest.load(trained["bio"])
    losses = [h["loss"] for h in m.training["history"][1:]]
    assert losses[-1] < losses[0], losses
    assert m.training["supervised_queries"] == 4
    # Strict JSON, as other tools read it: epoch 0's missing loss was written as NaN, which is not JSON.
    json.loads((trained["bio"] / "manifest.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert m.training["history"][0]["loss"] is None
    assert m.training["negatives"].startswith("whole frozen-base corpus")


def test_registry_add_list_remove(trained: dict[str, Path], tmp_path: Path) -> None:
    reg = ExpertRegistry(tmp_path / "reg")
    assert reg.all() == []
    reg.add(trained["bio"])
    reg.add(trained["aero"])
    assert reg.names() == ["aero", "bio"]
    with pytest.raises(Conflict):
        reg.add(trained["bio"])
    reg.remove("bio")
    assert reg.names() == ["aero"]
    with pytest.raises(NotFound, match="have: aero"):
        reg.get("bio")


def test_encoder_experts_cache_and_mixed_batches(tiny_model: Path, trained: dict[str, Path], tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "cache")
    enc = TextEncoder(str(tiny_model), bf16=False, cache=cache, batch_size=3)
    texts = ["protein in the cell", "supersonic wing flow", "gene trial", "shock layer heat"]
    base = enc.encode(texts)
    np.testing.assert_allclose(np.linalg.norm(base, axis=1), 1.0, rtol=1e-5)
    enc.add_expert("bio", trained["bio"], Manifest.load(trained["bio"]).base_fingerprint)
    enc.add_expert("aero", trained["aero"])
    bio = enc.encode(texts, "bio")
    assert not np.allclose(bio, base)
    np.testing.assert_allclose(enc.encode(texts, None), base, atol=1e-6)  # base pass unaffected by adapters
    mixed = enc.encode_mixed(texts, ["bio", "aero", None, "bio"], side="query")
    aero = enc.encode(texts, "aero")
    np.testing.assert_allclose(mixed[[0, 3]], bio[[0, 3]], atol=1e-5)
    np.testing.assert_allclose(mixed[1], aero[1], atol=1e-5)
    np.testing.assert_allclose(mixed[2], base[2], atol=1e-5)
    # cache: a second encoder with the same adapter reads the vectors without a forward pass
    assert len(cache.get_many(enc.fingerprint("bio", "query"), texts)) == 4
    enc.remove_expert("bio")
    with pytest.raises(NotFound, match="unknown expert"):
        enc.encode(texts, "bio")
    with pytest.raises(IncompatibleExpert):
        enc.add_expert("bio", trained["bio"], base_fingerprint="0" * 16)
    # the last expert removed: the LoRA layers go with it, and the next one loads onto the plain base model
    enc.remove_expert("aero")
    assert not hasattr(enc.model, "peft_config") and not any("lora" in n for n, _ in enc.model.named_modules())
    enc.cache = None  # a forward pass, not the cache
    np.testing.assert_allclose(enc.encode(texts), base, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # peft warns when it wraps a model that still has adapters
        enc.add_expert("aero", trained["aero"])
    np.testing.assert_allclose(enc.encode(texts, "aero"), aero, atol=1e-5)


def test_real_queries_are_repeated_to_the_asked_share() -> None:
    from router.training.trainer import repeats_for_real

    real = [Example(f"q{i}", "a question", (0,)) for i in range(15)]
    synth = [Example(f"s{i}", "a title", (1,), synthetic=True) for i in range(960)]
    assert repeats_for_real(real + synth, TrainConfig()) == 1  # off by default
    assert repeats_for_real(real + synth, TrainConfig(real_share=0.25)) == 20  # 0.25*960/(0.75*15) = 21.3, capped
    assert repeats_for_real(real + synth, TrainConfig(real_share=0.1)) == 7  # 0.1*960/(0.9*15) = 7.1
    assert repeats_for_real(real, TrainConfig(real_share=0.25)) == 1  # nothing to balance against
    with pytest.raises(InvalidInput, match="real_share"):
        TrainConfig(real_share=1.0)


def test_early_stopping_can_weigh_real_queries_against_self_supervised_pairs() -> None:
    from router.training.trainer import held_out_score

    val = [Example("q1", "a question", (0,))] + [Example(f"ssl:{i}", "a title", (1,), synthetic=True) for i in range(9)]
    per_query = {"q1": 1.0, **{f"ssl:{i}": 0.0 for i in range(9)}}
    assert held_out_score(per_query, val, None) == pytest.approx(0.1)  # every example alike
    assert held_out_score(per_query, val, 0.5) == pytest.approx(0.5)  # the one real query weighs half
    assert held_out_score(per_query, val[1:], 0.5) == pytest.approx(0.0)  # no real query held out
    with pytest.raises(InvalidInput, match="val_real_weight"):
        TrainConfig(val_real_weight=1.5)


def test_device_choice_is_checked() -> None:
    import torch

    from router.encoders import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InvalidInput, match="device must be"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInput, match="sees no GPU"):
            resolve_device("cuda")


def test_query_document_training_with_base_ranked_hard_negatives(
    tiny_model: Path, beir_root: Path, tmp_path: Path
) -> None:
    from router.training.trainer import _Model, mine_hard_negatives

    enc = TextEncoder(str(tiny_model), bf16=False)
    ds = load_dataset(beir_root / "bio")
    data = domain_data(ds, min_supervised=0)
    docs = enc.encode([d.full_text for d in ds.corpus], None, "document")
    cfg = TrainConfig(
        sides="query+document", hard_negatives=2, max_epochs=4, patience=4, bf16=False, lr=5e-3, batch_size=2
    )
    # Mining ranks with the base model: the two best-scored documents that are not the example's positives.
    mined = mine_hard_negatives(_Model(str(tiny_model), cfg), data, data.examples, docs, cfg)
    q = enc.encode([e.text for e in data.examples], None, "query")
    for e, sims in zip(data.examples, q @ docs.T, strict=True):
        want = [int(i) for i in np.argsort(-sims) if int(i) not in e.positives][:2]
        assert mined[e.qid] == want
    res = train_expert(
        str(tiny_model),
        enc.base_fingerprint,
        [data],
        tmp_path / "bio",
        name="bio",
        domain="bio",
        cfg=cfg,
        doc_matrices={"bio": docs},
    )
    m = Manifest.load(res.path)
    assert m.sides == "query+document" and "2 base-ranked hard negatives" in m.training["negatives"]
    losses = [h["loss"] for h in m.training["history"][1:]]
    assert losses[-1] < losses[0], losses
    with pytest.raises(InvalidInput, match="hard_negatives must be >= 0"):
        TrainConfig(sides="query+document", hard_negatives=-1)
    with pytest.raises(InvalidInput, match="mining hard negatives needs the base document vectors"):
        train_expert(str(tiny_model), enc.base_fingerprint, [data], tmp_path / "x", name="x", domain="bio", cfg=cfg)


def test_the_document_anchor_holds_documents_near_the_base_model(tiny_model: Path, tmp_path: Path) -> None:
    """Trained alike but for ``doc_anchor``, the anchored expert's document vectors stay nearer the base model's."""
    from router.training.trainer import _Model

    enc = TextEncoder(str(tiny_model), bf16=False)
    data = word_pair_domain()
    docs = enc.encode(data.doc_texts, None, "document")
    drift = {}
    for weight in (0.0, 2.0):
        cfg = TrainConfig(
            sides="query+document",
            doc_anchor=weight,
            keep="last",
            max_epochs=3,
            patience=3,
            bf16=False,
            lr=1e-2,
            batch_size=4,
        )
        out = tmp_path / f"anchor-{weight}"
        train_expert(
            str(tiny_model),
            enc.base_fingerprint,
            [data],
            out,
            name="aero",
            domain="aero",
            cfg=cfg,
            doc_matrices={"aero": docs},
        )
        m = Manifest.load(out)
        assert (m.training["document_anchor"] is None) == (weight == 0)
        trained = _Model(str(tiny_model), cfg, init_adapter=out).embed_eval(data.doc_texts, cfg.doc_max_length)
        cos = np.sum(trained * docs, axis=1) / np.linalg.norm(trained, axis=1) / np.linalg.norm(docs, axis=1)
        drift[weight] = float(np.mean(1 - cos))
    assert drift[0.0] > 1e-3, drift  # unanchored, the documents move
    assert drift[2.0] < drift[0.0] / 2, drift
    with pytest.raises(InvalidInput, match="doc_anchor must be >= 0"):
        TrainConfig(sides="query+document", doc_anchor=-1)
    with pytest.raises(InvalidInput, match="the document anchor needs the base document vectors"):
        cfg = TrainConfig(sides="query+document", doc_anchor=1.0, bf16=False)
        train_expert(str(tiny_model), enc.base_fingerprint, [data], tmp_path / "x", name="x", domain="aero", cfg=cfg)


def _pseudo_query_collection() -> BeirDataset:

    body = (
        "the wing stalls at a high angle of attack. the shock wave moves aft along the chord. "
        "the boundary layer separates early on the upper surface."
    )
    return BeirDataset(
        name="aero",
        path=Path("."),
        corpus=[
            Document("d1", "shock waves on swept wings", "pressure " * 25),  # titled: title -> body
            Document("d2", "", body),  # untitled: a sentence -> the other sentences
        ],
        queries={},
        qrels={"train": {}},
    )


def test_self_supervised_pairs_carry_their_inverse_cloze_context() -> None:
    from router.training.data import self_supervised_examples

    ds = _pseudo_query_collection()
    by_id = {e.qid: e for e in self_supervised_examples(ds, limit=10)}
    titled, untitled = by_id["ssl:d1"], by_id["ssl:d2"]
    assert titled.text == "shock waves on swept wings" and titled.context == ds.corpus[0].text
    assert titled.positives == (0,) and titled.synthetic
    assert untitled.text in ds.corpus[1].text and untitled.context is not None
    assert untitled.text not in untitled.context
    # the other two sentences stay, in order
    others = [s for s in ds.corpus[1].text.split(". ") if s.rstrip(".") != untitled.text.rstrip(".")]
    assert len(others) == 2 and all(s.rstrip(".") in untitled.context for s in others)


def test_query_document_training_on_inverse_cloze_pairs(tiny_model: Path, tmp_path: Path) -> None:
    enc = TextEncoder(str(tiny_model), bf16=False)
    docs = word_pair_docs()
    examples = [
        Example(f"ssl:{i}", d.split()[0] + " " + d.split()[1], (i,), synthetic=True, context=f"{d.split()[1]} {d}")
        for i, d in enumerate(docs)
    ]
    data = DomainData("aero", [str(i) for i in range(len(docs))], docs, examples)
    cfg = TrainConfig(
        sides="query+document",
        pseudo_context="ict",
        ict_keep=0.0,
        max_epochs=4,
        patience=4,
        bf16=False,
        lr=5e-3,
        batch_size=4,
    )
    res = train_expert(
        str(tiny_model), enc.base_fingerprint, [data], tmp_path / "aero", name="aero", domain="aero", cfg=cfg
    )
    m = Manifest.load(res.path)
    assert m.training["self_supervised"].startswith("inverse cloze") and m.training["config"]["pseudo_context"] == "ict"
    losses = [h["loss"] for h in m.training["history"][1:]]
    assert losses[-1] < losses[0], losses
    with pytest.raises(InvalidInput, match="needs sides 'query\\+document'"):
        TrainConfig(sides="query", pseudo_context="ict")
    with pytest.raises(InvalidInput, match="pseudo_context must be"):
        TrainConfig(sides="query+document", pseudo_context="span")
    with pytest.raises(InvalidInput, match="ict_keep must be"):
        TrainConfig(sides="query+document", pseudo_context="ict", ict_keep=1.5)


def test_a_judging_slice_is_held_out_from_training_and_early_stopping() -> None:
    import random

    from router.training.trainer import _split

    real = [Example(f"q{i}", "a question", (i,)) for i in range(40)]
    synth = [Example(f"ssl:{i}", "a title", (i,), synthetic=True) for i in range(100)]
    fit0, val0, judge0 = _split(real + synth, TrainConfig(), random.Random(0))
    fit, val, judge = _split(real + synth, TrainConfig(judge_fraction=0.1), random.Random(0))
    assert judge0 == [] and len(judge) == 4 and all(not e.synthetic for e in judge)
    assert [e.qid for e in val] == [e.qid for e in val0]  # early stopping holds out the same slice either way
    assert {e.qid for e in judge}.isdisjoint({e.qid for e in fit} | {e.qid for e in val})
    assert {e.qid for e in fit} | {e.qid for e in judge} == {e.qid for e in fit0}
    # a domain too small for a judging slice keeps its few queries for training
    assert _split(real[:5], TrainConfig(judge_fraction=0.3), random.Random(0))[2] == []
    with pytest.raises(InvalidInput, match="judge_fraction"):
        TrainConfig(judge_fraction=0.5)


def test_training_scores_the_judging_slice(tiny_model: Path, tmp_path: Path) -> None:
    data = word_pair_domain()
    examples, docs = data.examples, data.doc_texts
    cfg = TrainConfig(judge_fraction=0.2, max_epochs=2, patience=2, bf16=False, lr=5e-3, batch_size=4)
    res = train_on_word_pairs(tiny_model, data, tmp_path / "aero", cfg)
    m = Manifest.load(res.path)
    judged = m.training["judge_queries"]["aero"]
    assert len(judged) == 5 and set(judged) <= {e.qid for e in examples}  # 20% of 24
    assert 0 <= m.scores["judge_ndcg@10"] <= 1 and 0 <= m.scores["judge_ndcg@10_base"] <= 1
    # each judged query's score, so two candidates judged on this slice can be compared query by query
    per_query = m.training["judge_per_query"]["aero"]
    assert sorted(per_query) == sorted(judged)
    assert m.scores["judge_ndcg@10"] == pytest.approx(sum(per_query.values()) / len(per_query), abs=1e-3)
    assert m.training["config"]["judge_fraction"] == 0.2
    # The queries the expert never trained on: its early-stopping slice (recorded) and its judging slice.
    val = m.training["val_queries"]["aero"]
    assert len(val) == 4 and not set(val) & set(judged)  # 15% of 24
    unseen = held_out_queries(m, data)
    assert unseen == val + judged
    # An older manifest without the record: the slices are drawn again exactly as training drew them ...
    del m.training["val_queries"]
    assert held_out_queries(m, data) == unseen
    # ... and a draw that no longer matches the recorded held-out count (the data changed) is refused.
    shrunk = DomainData("aero", data.doc_ids, docs, examples[:-8])
    with pytest.raises(InvalidInput, match="held-out slice again gave 2"):
        held_out_queries(m, shrunk)
    m.training["data"] = ["aero", "bio"]
    with pytest.raises(InvalidInput, match="cannot be drawn again"):
        held_out_queries(m, data)


def test_an_interrupt_keeps_the_best_checkpoint_so_far(tiny_model: Path, tmp_path: Path) -> None:
    data = word_pair_domain()
    cfg = TrainConfig(max_epochs=5, patience=5, bf16=False, lr=5e-3, batch_size=4)
    steps: list[tuple[int, int]] = []

    def step(done: int, total: int) -> None:
        steps.append((done, total))
        if len(steps) == total + 2:  # two steps into the second epoch
            raise KeyboardInterrupt

    def run(out: Path, keep: bool) -> Manifest:
        steps.clear()
        return train_on_word_pairs(tiny_model, data, out, cfg, on_step=step, keep_on_interrupt=keep).manifest

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "raised", keep=False)
    assert not (tmp_path / "raised").exists()  # nothing half-written

    m = run(tmp_path / "kept", keep=True)
    per_epoch = steps[0][1]  # 20 training rows in batches of 4
    assert per_epoch == 5 and steps[:per_epoch] == [(i, per_epoch) for i in range(1, per_epoch + 1)]
    t = m.training
    assert t["stopped_by"] == "interrupted" and t["epochs_run"] == 1 and t["best_epoch"] in (0, 1)
    assert m.scores["val_ndcg@10"] == round(max(h["val_ndcg10"] for h in t["history"]), 4)
    assert (tmp_path / "kept" / "adapter_model.safetensors").is_file()


def test_a_repeated_text_gets_one_vector_cold_or_cached(tiny_model: Path, tmp_path: Path) -> None:
    # Sorted by length, the batches of two are [long, twin] and [twin, twin]: the first twin is padded to the long
    # text's length, the others are not. Each text must still get one vector, the one a cached rerun reads.
    cache = EmbeddingCache(tmp_path / "cache")
    enc = TextEncoder(str(tiny_model), bf16=True, cache=cache, batch_size=2)
    long = " ".join(["protein gene cell shock wave wing flow drag"] * 6)
    texts = ["gene trial", long, "gene trial", "gene trial"]
    seen: list[int] = []
    cold = enc.encode(texts, progress=seen.append)
    assert sum(seen) == len(texts)  # progress counts every row, copies included
    np.testing.assert_array_equal(cold[0], cold[2])
    np.testing.assert_array_equal(cold[0], cold[3])
    warm = TextEncoder(str(tiny_model), bf16=True, cache=cache, batch_size=2).encode(texts)
    np.testing.assert_array_equal(warm, cold)


def test_bf16_auto_follows_the_hardware(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    assert resolve_bf16(True, cpu) is True and resolve_bf16(False, cpu) is False
    assert resolve_bf16("auto", cpu) is native_bf16(cpu)
    with pytest.raises(InvalidInput, match="true, false or auto"):
        resolve_bf16("sometimes", cpu)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="true, false or auto"):
        TrainConfig(bf16="sometimes")
    # What oneDNN says of this CPU decides: emulated bf16 runs several times slower than fp32.
    for native in (True, False):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda n=native: n)
        assert native_bf16(cpu) is native
        enc = TextEncoder(str(tiny_model))  # "auto" by default
        assert enc.bf16 is native
        assert enc.fingerprint(None, "query") == TextEncoder(str(tiny_model), bf16=native).fingerprint(None, "query")


def test_a_multi_domain_model_holds_out_what_each_domain_expert_holds_out(tiny_model: Path, tmp_path: Path) -> None:
    """The multi-task baseline leaves unseen the same queries as each single-domain expert, so both can be judged
    on them; a shared generator across domains used to draw other slices for every domain after the first."""
    aero = word_pair_domain()
    bio = DomainData(
        "bio", aero.doc_ids, aero.doc_texts, [Example(f"b{e.qid}", e.text, e.positives) for e in aero.examples]
    )
    cfg = TrainConfig(max_epochs=1, patience=1, bf16="auto", lr=5e-3, batch_size=4)
    enc = TextEncoder(str(tiny_model), bf16=False)
    docs = enc.encode(aero.doc_texts, None, "document")
    both = train_expert(
        str(tiny_model),
        enc.base_fingerprint,
        [aero, bio],
        tmp_path / "mt",
        name="multi_task",
        domain="all",
        cfg=cfg,
        doc_matrices={"aero": docs, "bio": docs},
    )
    alone = {
        d.name: train_expert(
            str(tiny_model),
            enc.base_fingerprint,
            [d],
            tmp_path / d.name,
            name=d.name,
            domain=d.name,
            cfg=cfg,
            doc_matrices={d.name: docs},
        )
        for d in (aero, bio)
    }
    for name, res in alone.items():
        mine = res.manifest.training["val_queries"][name]
        assert both.manifest.training["val_queries"][name] == mine and len(mine) == 4
    # The manifest records the precision "auto" resolved to here, not the word.
    assert both.manifest.training["config"]["bf16"] is native_bf16(torch.device("cpu"))


def test_an_adapters_fingerprint_covers_its_config_and_either_weights_format(tmp_path: Path) -> None:
    from router.encoders import model_fingerprint

    def adapter(name: str, config: str, weights: tuple[str, bytes]) -> Path:
        d = tmp_path / name
        d.mkdir()
        (d / "adapter_config.json").write_text(config)
        (d / weights[0]).write_bytes(weights[1])
        return d

    a = adapter("a", '{"r": 8, "lora_alpha": 32}', ("adapter_model.safetensors", b"w"))
    b = adapter("b", '{"r": 8, "lora_alpha": 16}', ("adapter_model.safetensors", b"w"))  # alpha scales the delta
    c = adapter("c", '{"r": 8}', ("adapter_model.bin", b"x"))
    d = adapter("d", '{"r": 8}', ("adapter_model.bin", b"y"))  # old-format weights are hashed too
    assert len({model_fingerprint(x) for x in (a, b, c, d)}) == 4


@pytest.mark.parametrize("keep", ["best", "last"])
def test_the_manifest_scores_the_epoch_whose_adapter_is_kept(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: str
) -> None:
    import router.training.trainer as trainer

    # Held-out scores by epoch (0: the base model): epoch 1 is the best, the last (2) is worse.
    script = iter([0.5, 0.9, 0.3])

    def scripted(m: object, data: DomainData, val: list[Example], *_: object) -> dict[str, float]:
        score = next(script)
        return {e.qid: score for e in val}

    monkeypatch.setattr(trainer, "_evaluate", scripted)
    cfg = TrainConfig(max_epochs=2, patience=2, bf16=False, lr=5e-3, batch_size=4, keep=keep)
    m = train_on_word_pairs(tiny_model, word_pair_domain(), tmp_path / keep, cfg).manifest
    t = m.training
    assert [h["val_ndcg10"] for h in t["history"]] == [0.5, 0.9, 0.3]
    assert t["best_epoch"] == 1 and t["epochs_run"] == 2 and t["stopped_by"] == "max_epochs"
    assert m.scores["val_ndcg@10_base"] == 0.5
    if keep == "best":
        assert t["kept_epoch"] == 1 and m.scores["val_ndcg@10"] == 0.9 and "val_ndcg@10_best" not in m.scores
    else:  # the last epoch's adapter is saved, so its score is the one recorded; the best is kept beside it
        assert t["kept_epoch"] == 2 and m.scores["val_ndcg@10"] == 0.3 and m.scores["val_ndcg@10_best"] == 0.9
    saved = Manifest.load(tmp_path / keep)  # as written beside the adapter
    assert saved.scores == m.scores and saved.training["kept_epoch"] == t["kept_epoch"]


def test_training_with_nothing_to_learn_or_hold_out_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    """An expert trained on no examples, or on too few to hold any out, was registered with NaN scores."""
    cfg = TrainConfig(max_epochs=1, bf16=False)
    docs = {"bio": np.zeros((1, 32), dtype=np.float32)}
    text = ["the protein binds the gene"]
    empty = DomainData("bio", ["d1"], text, [])
    with pytest.raises(InvalidInput, match="no training examples in bio") as err:
        train_expert(str(tiny_model), "fp", [empty], tmp_path / "x", name="x", domain="bio", cfg=cfg, doc_matrices=docs)
    assert err.value.field == "data"
    two = DomainData("bio", ["d1"], text, [Example(f"q{i}", "protein", (0,)) for i in range(2)])
    with pytest.raises(InvalidInput, match="too few training queries to hold any out"):
        train_expert(str(tiny_model), "fp", [two], tmp_path / "x", name="x", domain="bio", cfg=cfg, doc_matrices=docs)
    assert not (tmp_path / "x").exists()  # nothing written


def test_replacing_an_expert_that_cannot_be_copied_keeps_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    reg = ExpertRegistry(tmp_path / "reg")
    for version in ("old", "new"):
        d = tmp_path / version / "good"
        d.mkdir(parents=True)
        Manifest(name="good", domain=version, base_model="m", base_fingerprint="fp").save(d)
        (d / "adapter_config.json").write_text("{}")
    reg.add(tmp_path / "old" / "good")

    def disk_full(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copytree", disk_full)
    with pytest.raises(OSError, match="No space left"):
        reg.add(tmp_path / "new" / "good", replace=True)
    monkeypatch.undo()
    assert reg.get("good").manifest.domain == "old"  # it was deleted before the copy
    assert reg.add(tmp_path / "new" / "good", replace=True).manifest.domain == "new"
    assert reg.get("good").manifest.domain == "new" and sorted(p.name for p in reg.root.iterdir()) == ["good"]


def test_a_registry_folder_whose_manifest_does_not_load_is_skipped_and_removable(tmp_path: Path) -> None:
    reg = ExpertRegistry(tmp_path / "reg")
    (reg.root / "good").mkdir(parents=True)
    (reg.root / "bad").mkdir()
    (reg.root / "bad" / "manifest.json").write_text("{half-copied")
    good = Manifest(name="good", domain="bio", base_model="m", base_fingerprint="fp", sides="query")
    good.save(reg.root / "good")
    assert reg.names() == ["good"]
    assert list(reg.unreadable) == [reg.root / "bad"] and "not valid JSON" in reg.unreadable[reg.root / "bad"]
    reg.remove("bad")
    assert not (reg.root / "bad").exists()
    assert reg.names() == ["good"] and reg.unreadable == {}
    with pytest.raises(NotFound):
        reg.remove("bad")


def test_judged_queries_without_a_document_in_the_corpus_are_left_out_by_name() -> None:
    from core.errors import DataFormatError
    from router.training.data import left_out, supervised_examples

    ds = BeirDataset(
        name="aero",
        path=Path("aero"),
        corpus=[Document("d1", "wing", "flow over the wing"), Document("d2", "shock", "a shock wave")],
        queries={"q1": "wing flow", "q2": "shock", "q3": "lost"},
        qrels={"train": {"q1": {"d1": 1}, "q2": {"d2": 1, "gone": 1}, "q3": {"gone": 1, "d1": 0}}},
    )
    assert [(e.qid, e.positives) for e in supervised_examples(ds)] == [("q1", (0,)), ("q2", (1,))]
    assert left_out(ds) == ["q3"]  # its only relevant document is not in the corpus; d1 is judged not relevant
    ds.qrels["train"]["q4"] = {"d1": 1}  # judged, but not in queries.jsonl: an error, as in evaluation
    with pytest.raises(DataFormatError, match=r"absent from queries\.jsonl"):
        supervised_examples(ds)

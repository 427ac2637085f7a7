"""Shared fixtures: a tiny real BERT (built once per session) and a tiny real BEIR collection."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = [
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "on",
    "with",
    "by",
    "from",
    "protein",
    "cell",
    "gene",
    "cancer",
    "tumor",
    "drug",
    "dose",
    "patient",
    "trial",
    "wing",
    "flow",
    "pressure",
    "shock",
    "boundary",
    "layer",
    "airfoil",
    "mach",
    "supersonic",
    "heat",
    "transfer",
    "plate",
    "algorithm",
    "program",
    "compiler",
    "language",
    "memory",
    "computer",
    "sort",
    "list",
    "parse",
    "argument",
    "should",
    "ban",
    "free",
    "speech",
    "school",
    "tax",
    "vote",
    "law",
    "rights",
]

DOCS = {
    "bio": [
        ("b1", "protein gene", "the protein binds the gene in the cell"),
        ("b2", "cancer drug", "a drug dose for cancer patient in a trial"),
        ("b3", "tumor cell", "the tumor cell and the protein"),
        ("b4", "gene trial", "gene trial with patient dose"),
    ],
    "aero": [
        ("a1", "wing flow", "flow over the wing at supersonic mach"),
        ("a2", "shock layer", "shock and boundary layer on a plate"),
        ("a3", "heat transfer", "heat transfer in the boundary layer"),
        ("a4", "airfoil pressure", "pressure on the airfoil with shock"),
    ],
}
QUERIES = {
    "bio": {
        "qb1": ("protein in the cell", "b1"),
        "qb2": ("drug for cancer", "b2"),
        "qb3": ("tumor protein", "b3"),
        "qb4": ("gene trial dose", "b4"),
        "qb5": ("cancer patient trial", "b2"),
        "qb6": ("cell gene", "b1"),
    },
    "aero": {
        "qa1": ("supersonic wing flow", "a1"),
        "qa2": ("shock boundary layer", "a2"),
        "qa3": ("heat transfer layer", "a3"),
        "qa4": ("airfoil pressure shock", "a4"),
        "qa5": ("mach flow wing", "a1"),
        "qa6": ("plate boundary layer", "a2"),
    },
}


def write_beir(root: Path, name: str) -> Path:
    d = root / name
    (d / "qrels").mkdir(parents=True)
    with gzip.open(d / "corpus.jsonl.gz", "wt") as fh:
        for did, title, text in DOCS[name]:
            fh.write(json.dumps({"_id": did, "title": title, "text": text}) + "\n")
    with (d / "queries.jsonl").open("w") as fh:
        for qid, (text, _) in QUERIES[name].items():
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    items = list(QUERIES[name].items())
    for split, part in (("train", items[:4]), ("test", items[4:])):
        with (d / "qrels" / f"{split}.tsv").open("w") as fh:
            fh.write("query-id\tcorpus-id\tscore\n")
            for qid, (_, did) in part:
                fh.write(f"{qid}\t{did}\t1\n")
    return d


@pytest.fixture(scope="session")
def beir_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("beir")
    for name in DOCS:
        write_beir(root, name)
    return root


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT with a word-level vocabulary: real transformers code, milliseconds per batch."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast  # type: ignore[attr-defined]

    d = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = BertTokenizerFast(vocab_file=str(d / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(d)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(cfg).save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def tiny_experts(tiny_model: Path, beir_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two real LoRA experts on the tiny model, trained once per session: 'bio' (query side) and 'aero' (both)."""
    from tests.platform_fixtures import train_tiny_expert

    out = tmp_path_factory.mktemp("tiny-experts")
    return {
        "bio": train_tiny_expert(tiny_model, beir_root, "bio", "query", out / "bio"),
        "aero": train_tiny_expert(tiny_model, beir_root, "aero", "query+document", out / "aero"),
    }

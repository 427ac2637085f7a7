"""Training examples for one domain: labelled queries, plus self-supervised pairs where labels are few."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from ingest.beir import BeirDataset


@dataclass(frozen=True)
class Example:
    qid: str
    text: str
    positives: tuple[int, ...]  # indices into the domain's corpus
    synthetic: bool = False
    # A pseudo-query's document with the pseudo-query taken out (the inverse cloze task of Lee et al., 2019);
    # query+document training can show this instead of the whole document (TrainConfig.pseudo_context).
    context: str | None = None


@dataclass
class DomainData:
    """A domain's corpus (ids and texts) and its training examples."""

    name: str
    doc_ids: list[str]
    doc_texts: list[str]
    examples: list[Example]
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {d: i for i, d in enumerate(self.doc_ids)}

    @property
    def n_supervised(self) -> int:
        return sum(not e.synthetic for e in self.examples)

    @property
    def n_synthetic(self) -> int:
        return sum(e.synthetic for e in self.examples)


_SENT = re.compile(r"(?<=[.!?])\s+")


def supervised_examples(ds: BeirDataset, split: str = "train") -> list[Example]:
    """One example per judged query with a relevant document in the corpus (``left_out`` names the others). A judged
    query absent from queries.jsonl is a DataFormatError naming the qrels file, as in evaluation."""
    return _supervised(ds, split)[0]


def left_out(ds: BeirDataset, split: str = "train") -> list[str]:
    """The judged queries of ``split`` that give no example: none of their relevant documents is in the corpus
    (ArguAna's train split has 3, whose counter-arguments BEIR's corpus lacks)."""
    return _supervised(ds, split)[1]


def _supervised(ds: BeirDataset, split: str) -> tuple[list[Example], list[str]]:
    queries = ds.split_queries(split)  # every judged query must be there
    index = {d.id: i for i, d in enumerate(ds.corpus)}
    out, dropped = [], []
    for qid, judged in sorted(ds.qrels[split].items()):
        pos = tuple(sorted(index[d] for d, g in judged.items() if g > 0 and d in index))
        if pos:
            out.append(Example(qid, queries[qid], pos))
        else:
            dropped.append(qid)
    return out, dropped


def self_supervised_examples(ds: BeirDataset, limit: int, seed: int = 0) -> list[Example]:
    """Pseudo-queries from the corpus: a document's title, or (without one) a sentence of its body.

    The positive is the whole document; ``context`` keeps the document without the pseudo-query (its body for a
    title, the other sentences for a sentence). Used for domains with few labelled queries (Cranfield, CACM, MED),
    where a handful of real queries cannot move a LoRA without overfitting.
    """
    rng = random.Random(seed)
    order = list(range(len(ds.corpus)))
    rng.shuffle(order)
    out: list[Example] = []
    for i in order:
        doc = ds.corpus[i]
        if len(doc.text.split()) < 20:
            continue  # title-only or tiny documents make trivial pairs
        if len(doc.title.split()) >= 4:
            query, context = doc.title, doc.text
        else:
            all_sents = _SENT.split(doc.text)
            sents = [s for s in all_sents if 6 <= len(s.split()) <= 60]
            if len(sents) < 2:
                continue
            query = rng.choice(sents)
            rest = list(all_sents)
            rest.remove(query)
            context = " ".join([doc.title, *rest]).strip()
        out.append(Example(f"ssl:{doc.id}", query, (i,), synthetic=True, context=context))
        if len(out) >= limit:
            break
    return out


def domain_data(
    ds: BeirDataset, split: str = "train", min_supervised: int = 300, max_synthetic: int = 1500
) -> DomainData:
    """Labelled examples of ``split``; topped up with self-supervised pairs when fewer than ``min_supervised``."""
    examples = supervised_examples(ds, split)
    if len(examples) < min_supervised:
        examples += self_supervised_examples(ds, max_synthetic)
    return DomainData(ds.name, [d.id for d in ds.corpus], [d.full_text for d in ds.corpus], examples)

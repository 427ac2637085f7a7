"""Every system of the paper's Table 1 as a choice of encoder per test query.

All systems share the per-query nDCG@10 tables from the workbench, so a system is fully described by which expert
answers each query (or, for the fusion rule, which two).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from router.baselines import ClassificationHeadRouter, DatasetRouter, ExpertClassifierRouter
from router.encoders import BASE
from router.evaluation import Run, mean, ndcg_at_10, reciprocal_rank_fusion
from router.pilots import PilotLibrary, PilotScores

PAPER_SYSTEMS = (
    "base",
    "multi_task",
    "dataset_router",
    "expert_classifier_router",
    "classification_head_router",
    "router_retriever",
    "dataset_oracle",
    "instance_oracle",
    "router_retriever_loo",
)
EXTRA_SYSTEMS = (
    "router_retriever_nearest",
    "router_retriever_topk",
    "router_retriever_weighted",
    "router_retriever_domain",
    "router_retriever_corpus",
    "router_retriever_stacked",
    "router_retriever_fusion",
)


@dataclass
class DatasetTables:
    """One dataset's test queries: base embeddings, and per-encoder per-query scores and runs."""

    name: str
    qids: list[str]
    base_emb: np.ndarray
    scores: dict[str, dict[str, float]]  # encoder -> qid -> nDCG@10
    runs: dict[str, Run]
    qrels: Mapping[str, Mapping[str, int]]


def shares(choices: Sequence[str], experts: Sequence[str]) -> dict[str, float]:
    n = max(1, len(choices))
    return {e: round(sum(c == e for c in choices) / n, 4) for e in experts}


class SystemSuite:
    """Fits the routers once on training queries, then scores any dataset's test tables."""

    def __init__(
        self,
        pilot_scores: PilotScores,
        experts: Sequence[str],
        expert_of_dataset: Mapping[str, str],
        margin: float = 0.0,
        corpus_weight: float = 0.0,
    ) -> None:
        """``margin`` is the domain rule's fallback margin and ``corpus_weight`` the corpus rule's weight on corpus
        pilots, both chosen on held-out queries (:mod:`router.validation`)."""
        self.pilot_scores = pilot_scores
        self.experts = sorted(experts)
        self.expert_of_dataset = dict(expert_of_dataset)
        self.library = pilot_scores.build(self.experts)
        self.library.margin = margin
        self.library.corpus_weight = corpus_weight

    # The baseline routers are fitted when first asked for: validating one rule needs none of them.
    def _training_set(self) -> tuple[np.ndarray, np.ndarray]:
        domains = sorted(self.pilot_scores.domains)
        x = np.concatenate([self.pilot_scores.embeddings[d] for d in domains])
        labels = np.concatenate([self.pilot_scores.labels(d, self.experts, d) for d in domains])
        return x, labels

    @cached_property
    def dataset_router(self) -> DatasetRouter:
        ps = self.pilot_scores
        return DatasetRouter().fit({d: ps.embeddings[d] for d in sorted(ps.domains)}, self.expert_of_dataset)

    @cached_property
    def expert_classifier(self) -> ExpertClassifierRouter:
        return ExpertClassifierRouter().fit(*self._training_set(), self.experts)

    @cached_property
    def classification_head(self) -> ClassificationHeadRouter:
        return ClassificationHeadRouter().fit(*self._training_set(), self.experts)

    def loo_library(self, dataset: str) -> PilotLibrary:
        """Without the dataset's own expert and without pilots from its queries: Table 2's question."""
        own = self.expert_of_dataset.get(dataset)
        experts = [e for e in self.experts if e != own]
        domains = [d for d in self.pilot_scores.domains if d != dataset]
        return self.pilot_scores.build(experts, domains, like=self.library)

    def choices(self, system: str, t: DatasetTables) -> list[str] | None:
        """The encoder answering each query, or None for systems that are not a per-query choice (fusion)."""
        n = len(t.qids)
        if system == "base":
            return [BASE] * n
        if system == "multi_task":
            return ["multi_task"] * n
        if system.startswith("expert:"):
            return [system.split(":", 1)[1]] * n
        if system == "dataset_router":
            return self.dataset_router.choose(t.base_emb)
        if system == "expert_classifier_router":
            return self.expert_classifier.choose(t.base_emb)
        if system == "classification_head_router":
            return self.classification_head.choose(t.base_emb)
        if system == "router_retriever":
            return [r.expert for r in self.library.route(t.base_emb, "mean")]
        if system == "router_retriever_nearest":
            return [r.expert for r in self.library.route(t.base_emb, "nearest")]
        if system == "router_retriever_topk":
            return [r.expert for r in self.library.route(t.base_emb, "topk", k=3)]
        if system == "router_retriever_weighted":
            return [r.expert for r in self.library.route(t.base_emb, "weighted")]
        if system == "router_retriever_domain":
            return [r.expert for r in self.library.route(t.base_emb, "domain")]
        if system == "router_retriever_corpus":
            return [r.expert for r in self.library.route(t.base_emb, "corpus")]
        if system == "router_retriever_stacked":
            return [r.expert for r in self.library.route(t.base_emb, "stacked")]
        if system == "router_retriever_loo":
            return [r.expert for r in self.loo_library(t.name).route(t.base_emb, "mean")]
        if system == "dataset_oracle":
            best = max(self.experts, key=lambda e: (mean(t.scores[e]), e))
            return [best] * n
        if system == "instance_oracle":
            own = self.expert_of_dataset.get(t.name)
            return [self._best_for(t, q, own) for q in t.qids]
        if system == "router_retriever_fusion":
            return None
        raise KeyError(system)

    def _best_for(self, t: DatasetTables, qid: str, own: str | None) -> str:
        """The query's best expert; ties go to the dataset's own expert, then by name."""
        return max(self.experts, key=lambda e: (t.scores[e][qid], e == own, e))

    def per_query(self, system: str, t: DatasetTables) -> list[float]:
        """The system's nDCG@10 on each of the dataset's queries, in ``t.qids`` order."""
        if system == "router_retriever_fusion":
            return self.fusion_per_query(t)
        ch = self.choices(system, t)
        assert ch is not None
        return [t.scores[c][q] for q, c in zip(t.qids, ch, strict=True)]

    def score(self, system: str, t: DatasetTables) -> float:
        return mean(self.per_query(system, t))

    def fusion_per_query(self, t: DatasetTables) -> list[float]:
        """Reciprocal-rank fusion of the two experts with the highest mean pilot similarity."""
        scores = self.library.expert_scores(t.base_emb, "mean")
        top2 = np.argsort(-scores, axis=1)[:, :2]
        fused: Run = {}
        for row, qid in enumerate(t.qids):
            names = [self.library.routable[i] for i in top2[row]]
            fused[qid] = reciprocal_rank_fusion([t.runs[e][qid] for e in names])
        per = ndcg_at_10(fused, {q: t.qrels[q] for q in t.qids})
        return [per[q] for q in t.qids]

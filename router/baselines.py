"""The routing baselines of the paper's Table 1, each a small object with ``fit`` and ``choose``.

They see the same inputs as the pilot router: BASE embeddings of training queries, with either their dataset
(DatasetRouter) or their Algorithm-1 label, the best expert on that query (the two classifier routers).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression

from core.errors import InvalidInput


class DatasetRouter:
    """Nearest of ``per_dataset`` random training queries per dataset; its DATASET's expert answers."""

    def __init__(self, per_dataset: int = 100, seed: int = 0) -> None:
        self.per_dataset = per_dataset
        self.seed = seed

    def fit(self, embeddings: dict[str, np.ndarray], expert_of_dataset: dict[str, str]) -> DatasetRouter:
        rng = np.random.default_rng(self.seed)
        rows, owners = [], []
        for d in sorted(embeddings):
            if d not in expert_of_dataset:
                continue
            emb = embeddings[d]
            take = rng.choice(len(emb), size=min(self.per_dataset, len(emb)), replace=False)
            rows.append(emb[take])
            owners += [expert_of_dataset[d]] * len(take)
        if not rows:
            raise InvalidInput("DatasetRouter needs training queries of at least one dataset with an expert")
        self.matrix = np.concatenate(rows)
        self.owners = np.array(owners)
        return self

    def choose(self, queries: np.ndarray) -> list[str]:
        return [str(x) for x in self.owners[(queries @ self.matrix.T).argmax(axis=1)]]


def _labelled(x: np.ndarray, labels: np.ndarray, experts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    keep = labels >= 0
    if keep.sum() == 0:
        raise InvalidInput("a classifier router needs at least one labelled training query")
    return x[keep], labels[keep]


class ExpertClassifierRouter:
    """One binary classifier per expert ("is this expert the best for the query?"); the most probable wins."""

    def fit(self, x: np.ndarray, labels: np.ndarray, experts: Sequence[str]) -> ExpertClassifierRouter:
        self.experts = list(experts)
        xs, ys = _labelled(x, labels, experts)
        # An expert that is never (or always) best has nothing to learn: it gets a constant probability.
        self.constant = [float((ys == i).mean()) for i in range(len(self.experts))]
        self.models: list[LogisticRegression | None] = []
        for i in range(len(self.experts)):
            y = (ys == i).astype(int)
            self.models.append(LogisticRegression(max_iter=2000, C=1.0).fit(xs, y) if 0 < y.sum() < len(y) else None)
        return self

    def choose(self, queries: np.ndarray) -> list[str]:
        probs = np.stack(
            [
                m.predict_proba(queries)[:, 1] if m is not None else np.full(len(queries), self.constant[i])
                for i, m in enumerate(self.models)
            ],
            axis=1,
        )
        return [self.experts[i] for i in probs.argmax(axis=1)]


class ClassificationHeadRouter:
    """One linear layer with a softmax over the experts (multinomial logistic regression)."""

    def fit(self, x: np.ndarray, labels: np.ndarray, experts: Sequence[str]) -> ClassificationHeadRouter:
        self.experts = list(experts)
        xs, ys = _labelled(x, labels, experts)
        classes = sorted(set(ys.tolist()))
        self.only: int | None = classes[0] if len(classes) == 1 else None
        self.model = LogisticRegression(max_iter=2000, C=1.0).fit(xs, ys) if self.only is None else None
        return self

    def choose(self, queries: np.ndarray) -> list[str]:
        if self.model is None:
            return [self.experts[int(self.only or 0)]] * len(queries)
        return [self.experts[int(c)] for c in self.model.predict(queries)]

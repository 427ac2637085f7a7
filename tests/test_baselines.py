"""The routing baselines of Table 1 on hand-made cases (router.baselines)."""

from __future__ import annotations

import numpy as np

from router.baselines import ExpertClassifierRouter


def test_an_expert_best_on_every_training_query_is_chosen() -> None:
    """An expert that is always best has nothing to learn: it gets probability 1 (and one never best gets 0), so it
    wins every query instead of losing to a classifier's small probabilities."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 4)).astype(np.float32)
    labels = np.ones(20, dtype=int)  # expert "always" (index 1) is best on every labelled training query
    labels[:3] = -1  # queries no expert found: not labelled
    router = ExpertClassifierRouter().fit(x, labels, ["never", "always"])
    assert router.constant == [0.0, 1.0]
    assert router.choose(rng.normal(size=(7, 4)).astype(np.float32)) == ["always"] * 7


def test_an_expert_never_best_stays_below_the_trained_ones() -> None:
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1])
    router = ExpertClassifierRouter().fit(x, labels, ["a", "b", "never"])
    assert router.constant[2] == 0.0
    assert router.choose(np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)) == ["a", "b"]

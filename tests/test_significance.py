"""Paired tests between systems: known answers on small hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import InvalidInput
from router.significance import paired_test


def test_identical_systems_are_not_different() -> None:
    a = {"x": [0.1, 0.5, 0.9], "y": [0.2, 0.4]}
    r = paired_test(a, a)
    assert r.diff == 0.0 and r.p_value == 1.0 and r.ties == 5 and r.wins == r.losses == 0
    assert r.ci95 == (0.0, 0.0)


def test_exact_sign_flip_p_value_on_five_queries() -> None:
    # 5 queries, all won by the same amount: of the 2^5 sign patterns only "all +" and "all -" are as extreme,
    # so the exact two-sided p is 2/32 (scipy enumerates every pattern when there are fewer than n_resamples).
    a = {"d": [0.6, 0.7, 0.8, 0.9, 1.0]}
    b = {"d": [0.5, 0.6, 0.7, 0.8, 0.9]}
    r = paired_test(a, b)
    assert r.diff == pytest.approx(0.1)
    assert r.p_value == pytest.approx(2 / 32)
    assert (r.wins, r.losses, r.ties) == (5, 0, 0)
    assert r.ci95[0] == pytest.approx(0.1) and r.ci95[1] == pytest.approx(0.1)


def test_difference_is_the_macro_average() -> None:
    # One dataset of 1 query (+0.4) and one of 3 queries (0 difference): the macro difference is 0.2, not 0.1.
    a = {"small": [0.9], "large": [0.5, 0.5, 0.5]}
    b = {"small": [0.5], "large": [0.5, 0.5, 0.5]}
    assert paired_test(a, b).diff == pytest.approx(0.2)


def test_clear_gain_is_significant_and_noise_is_not() -> None:
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 1, 200)
    better = {"d": list(np.clip(base + 0.1 + rng.normal(0, 0.05, 200), 0, 1))}
    r = paired_test(better, {"d": list(base)})
    assert r.p_value < 0.001 and r.ci95[0] > 0
    noisy = {"d": list(base + rng.normal(0, 0.05, 200))}
    r2 = paired_test(noisy, {"d": list(base)})
    assert r2.p_value > 0.01 and r2.ci95[0] < 0 < r2.ci95[1]


def test_bad_inputs_are_refused_by_name() -> None:
    with pytest.raises(InvalidInput, match="different datasets"):
        paired_test({"a": [1.0]}, {"b": [1.0]})
    with pytest.raises(InvalidInput, match="pair up"):
        paired_test({"a": [1.0, 0.0]}, {"a": [1.0]})
    with pytest.raises(InvalidInput, match="no queries"):
        paired_test({"a": []}, {"a": []})
    with pytest.raises(InvalidInput, match="n_resamples"):
        paired_test({"a": [1.0]}, {"a": [0.0]}, n_resamples=10)

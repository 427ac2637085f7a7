"""Is a difference between two systems real? Paired tests over the test queries.

The benchmark's figure is a macro average: the mean over datasets of the mean nDCG@10 over each dataset's queries.
Both tests below work on that same statistic, pairing each query's two scores:

- a paired randomization (sign-flip) test, ``scipy.stats.permutation_test`` with ``permutation_type="samples"``:
  under the null the two systems are exchangeable on every query, so each query's pair may be swapped;
- a 95% confidence interval from a bootstrap that resamples queries within each dataset (stratified, so every
  resample keeps the macro average's weights; scipy's bootstrap cannot stratify, so this part is plain numpy).

Small collections (MED has 12 test queries, CACM 21) make one query worth several points on that dataset; these
numbers say how much of a gap such a split can hide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import permutation_test

from core.errors import InvalidInput


@dataclass(frozen=True)
class PairedResult:
    diff: float  # macro mean of a minus macro mean of b
    ci95: tuple[float, float]
    p_value: float  # two-sided
    wins: int  # queries where a scores higher
    losses: int
    ties: int

    def to_json(self, digits: int = 4) -> dict[str, object]:
        d = asdict(self)
        d["diff"] = round(self.diff, digits)
        d["ci95"] = [round(x, digits) for x in self.ci95]
        d["p_value"] = round(self.p_value, digits)
        return d


def _paired_arrays(
    a: Mapping[str, Sequence[float]], b: Mapping[str, Sequence[float]]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
    if set(a) != set(b):
        raise InvalidInput(f"the two systems cover different datasets: {sorted(a)} vs {sorted(b)}")
    if not a:
        raise InvalidInput("no datasets to compare")
    xs, ys, ws, groups = [], [], [], []
    offset = 0
    for d in sorted(a):
        x, y = np.asarray(a[d], dtype=np.float64), np.asarray(b[d], dtype=np.float64)
        if x.shape != y.shape or x.ndim != 1:
            raise InvalidInput(f"dataset {d!r}: {x.shape} scores against {y.shape}; the queries must pair up")
        if len(x) == 0:
            raise InvalidInput(f"dataset {d!r} has no queries")
        xs.append(x)
        ys.append(y)
        ws.append(np.full(len(x), 1.0 / (len(x) * len(a))))  # the macro average's weight of one query
        groups.append(np.arange(offset, offset + len(x)))
        offset += len(x)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(ws), groups


def paired_test(
    a: Mapping[str, Sequence[float]],
    b: Mapping[str, Sequence[float]],
    n_resamples: int = 10_000,
    seed: int = 0,
) -> PairedResult:
    """Compare system ``a`` with system ``b`` on per-query scores, dataset -> scores in the same query order."""
    if n_resamples < 100:
        raise InvalidInput(f"n_resamples must be at least 100, got {n_resamples}", field="n_resamples")
    x, y, w, groups = _paired_arrays(a, b)
    diff = float(w @ (x - y))

    def statistic(u: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.sum(w * (u - v), axis=axis)

    if np.all(x == y):
        p = 1.0
    else:
        res = permutation_test(
            (x, y),
            statistic,
            permutation_type="samples",
            vectorized=True,
            n_resamples=n_resamples,
            alternative="two-sided",
            random_state=seed,
        )
        p = float(res.pvalue)
    rng = np.random.default_rng(seed)
    d = x - y
    boot = np.zeros(n_resamples)
    for g in groups:
        picks = rng.integers(0, len(g), size=(n_resamples, len(g)))
        boot += d[g][picks].mean(axis=1) / len(groups)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return PairedResult(
        diff=diff,
        ci95=(float(lo), float(hi)),
        p_value=min(1.0, p),
        wins=int(np.sum(x > y)),
        losses=int(np.sum(x < y)),
        ties=int(np.sum(x == y)),
    )

"""Routing rules judged on held-out TRAINING queries, so choosing one never looks at a test split.

Algorithm 1 already scores every expert on every training query (:class:`router.pilots.PilotScores`), so the value of
any routing choice on a training query is known without another encoder pass. K-fold cross-validation builds the
pilot library and fits the baseline routers on K-1 folds of each domain's training queries, routes the held-out fold
and averages the nDCG@10 of the chosen experts, per domain. Repeating it over a few seeds steadies the small domains.

The experts themselves were trained on most of these queries, so an expert looks better on its own domain's training
queries than it will on new ones; every rule sees the same tables, so the comparison between rules stays fair, but
the levels run higher than on the test splits.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from core.errors import InvalidInput
from router.pilots import BASE, CORPUS_WEIGHT_GRID, MARGIN_GRID, PilotLibrary, PilotScores
from router.systems import DatasetTables, SystemSuite

# The systems that pick one encoder per query from what the training queries hold (no multi_task column, no runs).
VALIDATED = (
    "router_retriever",
    "router_retriever_nearest",
    "router_retriever_topk",
    "router_retriever_weighted",
    "router_retriever_domain",
    "router_retriever_corpus",
    "router_retriever_stacked",
    "dataset_router",
    "expert_classifier_router",
    "classification_head_router",
    "dataset_oracle",
)


def _subset(ps: PilotScores, keep: Mapping[str, np.ndarray]) -> PilotScores:
    out = PilotScores()
    for d, mask in keep.items():
        out.add_domain(d, [q for q, k in zip(ps.domains[d], mask, strict=True) if k], ps.embeddings[d][mask])
        for e, col in ps.scores[d].items():
            out.scores[d][e] = col[mask]
        if d in ps.corpus:  # corpus pilots hold no query, so every fold keeps them
            out.corpus[d], out.corpus_sizes[d] = ps.corpus[d], ps.corpus_sizes[d]
    return out


def cross_validate(
    pilot_scores: PilotScores,
    experts: Sequence[str],
    base_scores: Mapping[str, np.ndarray],
    systems: Sequence[str] = VALIDATED,
    folds: int = 5,
    seeds: Sequence[int] = (0, 1, 2),
    margin: float = 0.0,
    corpus_weight: float = 0.0,
) -> dict[str, dict[str, float]]:
    """Per system, the mean nDCG@10 of its choices on held-out training queries, per domain and on average.

    ``base_scores`` holds the base model's nDCG@10 per training query (where a rule falls back to the base model).
    The dataset of a domain is its expert when one is named like it, as in the benchmark. ``margin`` is the
    domain rule's fallback margin, ``corpus_weight`` the corpus rule's weight.
    """
    names = sorted(experts)
    values: dict[str, dict[str, list[float]]] = {s: {d: [] for d in sorted(pilot_scores.domains)} for s in systems}
    for held in _folds(pilot_scores, folds, seeds):
        _route_held_out(pilot_scores, held, names, base_scores, systems, margin, values, corpus_weight)
    return _summary(values)


def _folds(pilot_scores: PilotScores, folds: int, seeds: Sequence[int]) -> Iterator[dict[str, np.ndarray]]:
    """The held-out mask per domain of every fold of every seed: the one split every validation here uses."""
    if folds < 2:
        raise InvalidInput(f"cross-validation needs at least 2 folds, got {folds}", field="folds")
    domains = sorted(pilot_scores.domains)
    if not domains:
        raise InvalidInput("no training queries to validate routing on")
    for seed in seeds:
        rng = np.random.default_rng(seed)
        # A domain smaller than ``folds`` gets one fold per query (leave-one-out).
        fold_of = {d: rng.permutation(len(pilot_scores.domains[d])) % folds for d in domains}
        for f in range(folds):
            yield {d: fold_of[d] == f for d in domains}


def held_out_validate(
    pilot_scores: PilotScores,
    experts: Sequence[str],
    base_scores: Mapping[str, np.ndarray],
    held_out: Mapping[str, Sequence[str]],
    systems: Sequence[str] = VALIDATED,
    margin: float = 0.0,
    corpus_weight: float = 0.0,
) -> dict[str, dict[str, float]]:
    """Per system, the mean nDCG@10 of its choices on the given training queries, routed by pilots and routers
    fitted on the others; per domain and on average.

    With ``held_out`` the queries each domain's expert held out from training (its early-stopping and judging
    slices, :func:`held_out_queries`), no expert trained on any of them (a single-domain expert only sees its own
    domain), so unlike :func:`cross_validate` the experts' scores are not flattered on their own domain. A domain
    without held-out queries is left out of the average.
    """
    domains = sorted(pilot_scores.domains)
    unknown = sorted(set(held_out) - set(domains))
    if unknown:
        raise InvalidInput(f"held-out queries for domains without training queries: {unknown}", field="held_out")
    masks: dict[str, np.ndarray] = {}
    for d in domains:
        ids = set(held_out.get(d, ()))
        masks[d] = np.array([q in ids for q in pilot_scores.domains[d]], dtype=bool)
        missing = len(ids) - int(masks[d].sum())
        if missing:
            raise InvalidInput(
                f"{missing} held-out queries of {d!r} are not among its training queries", field="held_out"
            )
    if not any(m.any() for m in masks.values()):
        raise InvalidInput("no held-out queries to validate routing on", field="held_out")
    values: dict[str, dict[str, list[float]]] = {s: {d: [] for d in domains} for s in systems}
    _route_held_out(pilot_scores, masks, sorted(experts), base_scores, systems, margin, values, corpus_weight)
    return _summary(values)


def _route_held_out(
    pilot_scores: PilotScores,
    held: Mapping[str, np.ndarray],
    names: Sequence[str],
    base_scores: Mapping[str, np.ndarray],
    systems: Sequence[str],
    margin: float,
    values: dict[str, dict[str, list[float]]],
    corpus_weight: float = 0.0,
) -> None:
    """Fit the pilot library and the baseline routers without the ``held`` queries (a mask per domain), route
    those, and append each system's nDCG@10 on them to ``values[system][domain]``. The dataset of a domain is its
    expert when one is named like it, as in the benchmark."""
    domains = sorted(pilot_scores.domains)
    expert_of = {d: d for d in domains if d in names}
    fit, fit_domains = _fit_part(pilot_scores, held)
    suite = SystemSuite(
        fit,
        names,
        {d: e for d, e in expert_of.items() if d in fit_domains},
        margin=margin,
        corpus_weight=corpus_weight,
    )
    for d in domains:
        idx = np.flatnonzero(held[d])
        if len(idx) == 0:
            continue
        qids = [pilot_scores.domains[d][i] for i in idx]
        cols = {e: pilot_scores.scores[d][e][idx] for e in names}
        cols[BASE] = np.asarray(base_scores[d])[idx]
        table = DatasetTables(
            name=d,
            qids=qids,
            base_emb=pilot_scores.embeddings[d][idx],
            scores={e: dict(zip(qids, map(float, v), strict=True)) for e, v in cols.items()},
            runs={},
            qrels={},
        )
        for s in systems:
            choices = suite.choices(s, table)
            if choices is None:
                raise InvalidInput(f"{s} does not pick one encoder per query; it cannot be validated here")
            values[s][d] += [table.scores[c][q] for q, c in zip(qids, choices, strict=True)]


def _fit_part(pilot_scores: PilotScores, held: Mapping[str, np.ndarray]) -> tuple[PilotScores, list[str]]:
    """The training queries outside ``held`` (a mask per domain), without the domains that have none left."""
    domains = sorted(pilot_scores.domains)
    fit = _subset(pilot_scores, {d: ~held[d] for d in domains})
    fit_domains = [d for d in domains if len(fit.domains[d])]
    for d in domains:
        if d not in fit_domains:
            fit.remove_domain(d)
    return fit, fit_domains


def _summary(values: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for s in values:
        row = {d: round(float(np.mean(v)), 4) for d, v in values[s].items() if v}
        row["avg"] = round(float(np.mean(list(row.values()))), 4)
        out[s] = row
    return out


def choose_margin(
    pilot_scores: PilotScores,
    experts: Sequence[str],
    base_scores: Mapping[str, np.ndarray],
    grid: Sequence[float] = MARGIN_GRID,
    folds: int = 5,
    seeds: Sequence[int] = (0, 1, 2),
) -> tuple[float, dict[float, float]]:
    """The domain rule's fallback margin that serves held-out training queries best, and each margin's score.

    Judged on the queries that built the pilots, a margin looks needless (those queries sit close to their own
    domain's pilots); held out, an ambiguous query is a real one. Ties go to the smaller margin.
    """
    if not grid or any(m < 0 for m in grid):
        raise InvalidInput(f"the margin grid needs values >= 0, got {list(grid)}", field="grid")
    scores: dict[float, float] = {}
    for m in sorted(set(grid)):
        row = cross_validate(pilot_scores, experts, base_scores, ("router_retriever_domain",), folds, seeds, margin=m)[
            "router_retriever_domain"
        ]
        scores[m] = row["avg"]
    best = min(scores)
    for m, v in scores.items():
        if v > scores[best] + 1e-6:  # a real gain, not float noise
            best = m
    return best, scores


def domain_accuracy(
    pilot_scores: PilotScores,
    experts: Sequence[str],
    corpus_weight: float,
    folds: int = 5,
    seeds: Sequence[int] = (0, 1, 2),
    stacked: bool = False,
) -> dict[str, float]:
    """How often a held-out training query is placed in its own domain by the domain step of the corpus rule
    (``corpus_weight`` 0: the domain rule), or with ``stacked`` of the stacked rule (whose domain model is fitted
    on the other folds), per domain and macro-averaged; same folds as :func:`cross_validate`."""
    hits: dict[str, list[bool]] = {d: [] for d in sorted(pilot_scores.domains)}
    for held in _folds(pilot_scores, folds, seeds):
        fit, _ = _fit_part(pilot_scores, held)
        lib: PilotLibrary = fit.build(sorted(experts))
        for d, mask in held.items():
            if mask.any():
                hits[d] += [g == d for g in lib.guess_domains(pilot_scores.embeddings[d][mask], corpus_weight, stacked)]
    row = {d: round(float(np.mean(v)), 4) for d, v in hits.items() if v}
    row["avg"] = round(float(np.mean(list(row.values()))), 4)
    return row


def choose_corpus_weight(
    pilot_scores: PilotScores,
    experts: Sequence[str],
    grid: Sequence[float] = CORPUS_WEIGHT_GRID,
    folds: int = 5,
    seeds: Sequence[int] = (0, 1, 2),
) -> tuple[float, dict[float, dict[str, float]]]:
    """The corpus rule's weight on corpus pilots that places held-out training queries in their own domain most
    often (macro over domains), and each weight's accuracy per domain.

    The weight changes only which domain a query is placed in, so it is judged on that step directly: on every
    held-out query, where nDCG@10 would show a difference only on the queries whose experts rank differently.
    Ties go to the smaller weight; without corpus pilots the weight is 0.
    """
    if not grid or any(not 0.0 <= w <= 1.0 for w in grid):
        raise InvalidInput(f"the corpus weight grid needs values within [0, 1], got {list(grid)}", field="grid")
    if not pilot_scores.corpus:
        return 0.0, {}
    scores = {w: domain_accuracy(pilot_scores, experts, w, folds, seeds) for w in sorted(set(grid))}
    best = min(scores)
    for w, row in scores.items():
        if row["avg"] > scores[best]["avg"] + 1e-6:
            best = w
    return best, scores

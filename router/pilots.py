"""The pilot embedding library (the paper's Algorithm 1) and the routing rules over it.

Algorithm 1: every expert is scored on every training query (nDCG@10); the query's label is its best expert; within
each domain the queries are grouped by label and each group's centroid of BASE query embeddings becomes one pilot,
stored with its expert, domain and group size. Routing embeds a query with the base model, compares it with the pilots
and picks an expert by a rule (the paper's per-expert mean by default).

Adding or removing an expert trains nothing: its column of the score table is added or dropped, and only the labels and
centroids that change are recomputed (:meth:`PilotScores.build`).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import InvalidInput, NotFound

RULES = ("mean", "nearest", "topk", "weighted", "domain")
BASE = "base"  # the base model, no expert: where a query goes when a rule can choose no expert
MARGIN_GRID = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05)


def aggregate(
    sims: np.ndarray,
    owner: np.ndarray,
    domain_of: np.ndarray,
    sizes: np.ndarray,
    n_experts: int,
    rule: str = "mean",
    k: int = 3,
    margin: float = 0.0,
) -> np.ndarray:
    """Per-expert scores from query-to-pilot similarities; the one implementation of every rule.

    ``sims`` is (n_queries, n_pilots); ``owner``, ``domain_of`` and ``sizes`` give each pilot's expert index, domain
    index and group size. Returns (n_queries, n_experts), -inf for an expert the rule cannot choose.

    - ``mean``: the paper's rule, the mean similarity over the expert's pilots.
    - ``nearest``: the official test script's rule, the expert of the single nearest pilot.
    - ``topk``: the mean over the expert's pilots among the query's ``k`` nearest.
    - ``weighted``: the mean weighted by group size (a pilot speaks for the queries it stands for).
    - ``domain``: first the domain (its pilots' size-weighted mean similarity, i.e. the similarity to the centroid
      of all its training queries), then that domain's largest group's expert, the one Algorithm 1 labelled best on
      most of the domain's training queries. It routes by where a query comes from, which pilots tell reliably,
      and leaves the per-query choice of expert to Algorithm 1's labels. A query whose best domain leads the
      second by less than ``margin`` is ambiguous: every expert gets -inf and the query goes to the base model.
    """
    if rule not in RULES:
        raise InvalidInput(f"unknown routing rule {rule!r}; choose one of {RULES}", field="rule")
    sims = np.atleast_2d(np.asarray(sims, dtype=np.float32))
    owner = np.asarray(owner, dtype=int)
    sizes = np.asarray(sizes, dtype=np.float32)
    out = np.full((len(sims), n_experts), -np.inf, dtype=np.float32)
    if sims.shape[1] == 0:
        return out
    if rule == "domain":
        domain_of = np.asarray(domain_of, dtype=int)
        domains = np.unique(domain_of)
        per_domain = np.zeros((len(sims), len(domains)), dtype=np.float32)
        for j, d in enumerate(domains):
            members = domain_of == d
            w = sizes[members]
            per_domain[:, j] = sims[:, members] @ w / w.sum()
            leader = owner[members][w == w.max()].min()  # ties: the first expert by name
            out[:, leader] = np.maximum(out[:, leader], per_domain[:, j])
        if margin > 0 and len(domains) > 1:
            top2 = -np.sort(-per_domain, axis=1)[:, :2]
            out[top2[:, 0] - top2[:, 1] < margin] = -np.inf
        return out
    if rule == "topk":
        kk = min(k, sims.shape[1])
        top = np.argsort(-sims, axis=1)[:, :kk]
        keep = np.zeros_like(sims, dtype=bool)
        np.put_along_axis(keep, top, True, axis=1)
        sims = np.where(keep, sims, np.nan)
    for e in range(n_experts):
        mine = owner == e
        if not mine.any():
            continue
        cols = sims[:, mine]
        if rule == "weighted":
            w = sizes[mine]
            out[:, e] = cols @ w / w.sum()
        elif rule == "nearest":
            out[:, e] = cols.max(axis=1)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: the expert is not in the top k
                m = np.nanmean(cols, axis=1)
            out[:, e] = np.where(np.isnan(m), -np.inf, m)
    return out


@dataclass
class Pilot:
    expert: str
    domain: str
    size: int
    vector: np.ndarray


@dataclass
class PilotScores:
    """Per-domain training queries, their base embeddings and one nDCG@10 column per expert."""

    domains: dict[str, list[str]] = field(default_factory=dict)  # domain -> query ids
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # domain -> (n, dim) base embeddings
    scores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # domain -> expert -> (n,)

    @property
    def experts(self) -> list[str]:
        names: set[str] = set()
        for cols in self.scores.values():
            names.update(cols)
        return sorted(names)

    def add_domain(self, domain: str, query_ids: Sequence[str], base_embeddings: np.ndarray) -> None:
        if len(query_ids) != len(base_embeddings):
            raise InvalidInput(f"domain {domain!r}: {len(query_ids)} query ids but {len(base_embeddings)} embeddings")
        self.domains[domain] = list(query_ids)
        self.embeddings[domain] = np.asarray(base_embeddings, dtype=np.float32)
        self.scores.setdefault(domain, {})

    def set_scores(self, domain: str, expert: str, values: Sequence[float]) -> None:
        if domain not in self.domains:
            raise NotFound(f"no domain {domain!r} in the pilot scores")
        arr = np.asarray(values, dtype=np.float32)
        if arr.shape != (len(self.domains[domain]),):
            raise InvalidInput(f"domain {domain!r}: expected {len(self.domains[domain])} scores, got {arr.shape}")
        self.scores[domain][expert] = arr

    def remove_expert(self, expert: str) -> None:
        for cols in self.scores.values():
            cols.pop(expert, None)

    def remove_domain(self, domain: str) -> None:
        for table in (self.domains, self.embeddings, self.scores):
            table.pop(domain, None)

    def labels(self, domain: str, experts: Sequence[str], home: str | None = None) -> np.ndarray:
        """Best expert per query (index into ``experts``), -1 where no expert finds anything (nDCG 0 for all).

        Ties (frequent on small collections, where several experts rank the same documents) go to the domain's own
        expert ``home`` when it is among the tied, else to the first in ``experts`` order, which callers keep
        sorted, so labels are deterministic.
        """
        cols = self.scores[domain]
        missing = [e for e in experts if e not in cols]
        if missing:
            raise NotFound(f"domain {domain!r} has no scores for experts {missing}; score them first")
        table = np.stack([cols[e] for e in experts], axis=1)
        best = table.argmax(axis=1)
        if home is not None and home in experts:
            h = list(experts).index(home)
            best[table[:, h] == table.max(axis=1)] = h
        best[table.max(axis=1) <= 0.0] = -1
        return best

    def build(
        self,
        experts: Sequence[str] | None = None,
        domains: Sequence[str] | None = None,
        homes: Mapping[str, str] | None = None,
        like: PilotLibrary | None = None,
    ) -> PilotLibrary:
        """Algorithm 1 over the given experts and domains (default: all).

        ``homes`` maps a domain to its own expert for tie-breaking (default: the expert named like the domain).
        ``like`` is the library being replaced: its served rule and margin carry over (adding or removing an
        expert changes the pilots, not how they are read).
        """
        names = sorted(experts) if experts is not None else self.experts
        if not names:
            raise InvalidInput("the pilot library needs at least one expert")
        pilots: list[Pilot] = []
        for domain in sorted(domains if domains is not None else self.domains):
            labels = self.labels(domain, names, (homes or {}).get(domain, domain))
            emb = self.embeddings[domain]
            for i, name in enumerate(names):
                members = emb[labels == i]
                if len(members) == 0:
                    continue
                pilots.append(Pilot(name, domain, len(members), members.mean(axis=0)))
        lib = PilotLibrary(pilots, names)
        if like is not None:
            lib.rule, lib.margin = like.rule, like.margin
        return lib

    # ---- persistence -----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {"domains": self.domains, "experts": {}}
        for d in self.domains:
            arrays[f"emb::{d}"] = self.embeddings[d]
            meta["experts"][d] = sorted(self.scores[d])
            for e, v in self.scores[d].items():
                arrays[f"score::{d}::{e}"] = v
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        arrays["meta"] = np.array(json.dumps(meta))
        tmp = p.with_name(f".{p.name}.tmp.npz")
        np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, p)  # readers in other threads or processes see the old file or the new one, never half

    @classmethod
    def load(cls, path: str | Path) -> PilotScores:
        with np.load(Path(path)) as z:
            meta = json.loads(str(z["meta"]))
            out = cls()
            for d, qids in meta["domains"].items():
                out.add_domain(d, qids, z[f"emb::{d}"])
                for e in meta["experts"][d]:
                    out.scores[d][e] = z[f"score::{d}::{e}"]
        return out


@dataclass
class RouteDecision:
    expert: str
    scores: dict[str, float]


class PilotLibrary:
    """Pilots as one matrix; routes base query embeddings to experts."""

    def __init__(self, pilots: Sequence[Pilot], experts: Sequence[str] | None = None, rule: str = "mean") -> None:
        if rule not in RULES:
            raise InvalidInput(f"unknown routing rule {rule!r}; choose one of {RULES}", field="rule")
        self.rule = rule  # the rule serving uses: the paper's mean unless the benchmark chose another (quality.py)
        self.margin = 0.0  # the domain rule's fallback to the base model (router.validation.choose_margin)
        self.pilots = list(pilots)
        self.experts = sorted(experts) if experts is not None else sorted({p.expert for p in self.pilots})
        owners = {p.expert for p in self.pilots}
        # An expert that won no training query owns no pilot and can never be chosen; keep it listed but unroutable.
        self.routable = [e for e in self.experts if e in owners]
        if not self.routable:
            raise InvalidInput("the pilot library has no pilots; score the experts on training queries first")
        self.matrix = np.stack([p.vector for p in self.pilots]).astype(np.float32)
        norms = np.linalg.norm(self.matrix, axis=1, keepdims=True)
        self.matrix /= np.clip(norms, 1e-12, None)
        self.owner = np.array([self.routable.index(p.expert) for p in self.pilots])
        self.sizes = np.array([p.size for p in self.pilots], dtype=np.float32)

    def __len__(self) -> int:
        return len(self.pilots)

    def expert_scores(self, query_embeddings: np.ndarray, rule: str = "mean", k: int = 3) -> np.ndarray:
        """(n_queries, n_routable) scores per expert under ``rule``; higher is better."""
        q = np.atleast_2d(np.asarray(query_embeddings, dtype=np.float32))
        sims = q @ self.matrix.T  # cosine: both sides are unit vectors
        domains = sorted({p.domain for p in self.pilots})
        domain_of = np.array([domains.index(p.domain) for p in self.pilots])
        return aggregate(sims, self.owner, domain_of, self.sizes, len(self.routable), rule, k, self.margin)

    def route(self, query_embeddings: np.ndarray, rule: str = "mean", k: int = 3) -> list[RouteDecision]:
        scores = self.expert_scores(query_embeddings, rule, k)
        best = scores.argmax(axis=1)
        return [
            RouteDecision(
                self.routable[b] if np.isfinite(row[b]) else BASE,  # no expert the rule can choose: the base model
                {e: float(s) for e, s in zip(self.routable, row, strict=True)},
            )
            for b, row in zip(best, scores, strict=True)
        ]

    # ---- persistence -----------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "experts": self.experts,
            "rule": self.rule,
            "margin": self.margin,
            "pilots": [
                {
                    "expert": p.expert,
                    "domain": p.domain,
                    "size": p.size,
                    "vector": [round(float(x), 7) for x in p.vector],
                }
                for p in self.pilots
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PilotLibrary:
        pilots = [
            Pilot(p["expert"], p["domain"], int(p["size"]), np.asarray(p["vector"], np.float32)) for p in data["pilots"]
        ]
        lib = cls(pilots, data.get("experts"), data.get("rule", "mean"))
        lib.margin = float(data.get("margin", 0.0))
        return lib

    def save(self, path: str | Path) -> None:
        p = Path(path)
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_text(json.dumps(self.to_json()) + "\n")
        os.replace(tmp, p)

    @classmethod
    def load(cls, path: str | Path) -> PilotLibrary:
        p = Path(path)
        if not p.is_file():
            raise NotFound(f"{p}: no pilot library; build it with `rr pilots build`")
        return cls.from_json(json.loads(p.read_text()))

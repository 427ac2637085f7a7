"""The pilot embedding library (the paper's Algorithm 1) and the routing rules over it.

Algorithm 1: every expert is scored on every training query (nDCG@10); the query's label is its best expert; within
each domain the queries are grouped by label and each group's centroid of BASE query embeddings becomes one pilot,
stored with its expert, domain and group size. Routing embeds a query with the base model, compares it with the pilots
and picks an expert by a rule (the paper's per-expert mean by default).

Adding or removing an expert trains nothing: its column of the score table is added or dropped, and only the labels and
centroids that change are recomputed (:meth:`PilotScores.build`).

Beyond the paper, a domain may also carry *corpus pilots*: k-means centroids of the BASE embeddings of its documents
(:meth:`PilotScores.add_corpus`). They hold no label and speak for no expert; the ``corpus`` rule reads them as a second
witness of where a query comes from, which matters most for a domain with few training queries (MED has 18, so its
query pilots cover little of it, while its 1,033 documents cover all of it).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import DataFormatError, InvalidInput, NotFound

RULES = ("mean", "nearest", "topk", "weighted", "domain", "corpus", "stacked")


def check_rule(rule: str) -> str:
    """A routing rule's name, or an :class:`InvalidInput` naming the rules there are."""
    if rule not in RULES:
        raise InvalidInput(f"unknown routing rule {rule!r}; choose one of {RULES}", field="rule")
    return rule


BASE = "base"  # the base model, no expert: where a query goes when a rule can choose no expert
MARGIN_GRID = (0.0, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05)
CORPUS_WEIGHT_GRID = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7)
CORPUS_PILOTS = 64  # k-means centroids per domain's corpus: enough to cover it, small enough to ship (router.pilots)
QUERY, CORPUS = "query", "corpus"  # the two kinds of pilot
# The stacked rule's regularisation (inverse L2 strength of its logistic regression), chosen on held-out training
# queries (README, "The stacked rule"); the regression is class-balanced, so a small domain is not outvoted.
STACK_C = 10.0


def domain_scores(
    sims: np.ndarray,
    owner: np.ndarray,
    domain_of: np.ndarray,
    sizes: np.ndarray,
    corpus: np.ndarray | None = None,
    corpus_weight: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How much each query looks like each domain: (n_queries, n_domains) scores, each domain's index and its
    leader (the expert of its largest Algorithm-1 group; ties: the first expert by index).

    The query evidence is the domain's query pilots' size-weighted mean similarity (the similarity to the centroid of
    all its training queries). With ``corpus_weight`` w > 0, the score is (1 - w) * that + w * the similarity to the
    domain's nearest corpus pilot; a domain without corpus pilots is scored on its query evidence alone. Only domains
    with query pilots are scored (a leader is needed to route to)."""
    sims = np.atleast_2d(np.asarray(sims, dtype=np.float32))
    owner = np.asarray(owner, dtype=int)
    domain_of = np.asarray(domain_of, dtype=int)
    sizes = np.asarray(sizes, dtype=np.float32)
    is_corpus = np.zeros(len(owner), dtype=bool) if corpus is None else np.asarray(corpus, dtype=bool)
    domains = np.unique(domain_of[~is_corpus])
    per_domain = np.zeros((len(sims), len(domains)), dtype=np.float32)
    leaders = np.zeros(len(domains), dtype=int)
    for j, d in enumerate(domains):
        members = (domain_of == d) & ~is_corpus
        w = sizes[members]
        evidence = sims[:, members] @ w / w.sum()
        leaders[j] = owner[members][w == w.max()].min()
        docs = (domain_of == d) & is_corpus
        if corpus_weight > 0:
            near = sims[:, docs].max(axis=1) if docs.any() else evidence
            evidence = (1.0 - corpus_weight) * evidence + corpus_weight * near
        per_domain[:, j] = evidence
    return per_domain, domains, leaders


def domain_evidence(
    sims: np.ndarray, owner: np.ndarray, domain_of: np.ndarray, sizes: np.ndarray, corpus: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Both pieces of evidence of every domain with query pilots, as the stacked rule reads them: the query evidence
    and the corpus evidence (:func:`domain_scores` at weight 0 and 1), each (n_queries, n_domains), then each
    domain's index and leader."""
    ev_q, idx, leaders = domain_scores(sims, owner, domain_of, sizes, corpus, 0.0)
    ev_c, _, _ = domain_scores(sims, owner, domain_of, sizes, corpus, 1.0)
    return ev_q, ev_c, idx, leaders


def aggregate(
    sims: np.ndarray,
    owner: np.ndarray,
    domain_of: np.ndarray,
    sizes: np.ndarray,
    n_experts: int,
    rule: str = "mean",
    k: int = 3,
    margin: float = 0.0,
    corpus: np.ndarray | None = None,
    corpus_weight: float = 0.0,
    stacker: DomainStacker | None = None,
    domain_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Per-expert scores from query-to-pilot similarities; the one implementation of every rule.

    ``sims`` is (n_queries, n_pilots); ``owner``, ``domain_of`` and ``sizes`` give each pilot's expert index, domain
    index and group size; ``corpus`` marks the corpus pilots, which only the ``corpus`` rule reads. Returns
    (n_queries, n_experts), -inf for an expert the rule cannot choose.

    - ``mean``: the paper's rule, the mean similarity over the expert's pilots.
    - ``nearest``: the official test script's rule, the expert of the single nearest pilot.
    - ``topk``: the mean over the expert's pilots among the query's ``k`` nearest.
    - ``weighted``: the mean weighted by group size (a pilot speaks for the queries it stands for).
    - ``domain``: first the domain (its pilots' size-weighted mean similarity, i.e. the similarity to the centroid
      of all its training queries), then that domain's largest group's expert, the one Algorithm 1 labelled best on
      most of the domain's training queries. It routes by where a query comes from, which pilots tell reliably,
      and leaves the per-query choice of expert to Algorithm 1's labels. A query whose best domain leads the
      second by less than ``margin`` is ambiguous: every expert gets -inf and the query goes to the base model.
    - ``corpus``: the domain rule, with the domain told by its query pilots and its corpus pilots together, weighted
      by ``corpus_weight`` (:func:`domain_scores`; chosen on held-out queries, ``router.validation``).
    - ``stacked``: the domain rule, with the domain told by ``stacker`` (:class:`DomainStacker`), a logistic
      regression over both pieces of evidence of every domain, fitted on the training queries; ``domain_names``
      names the domains that ``domain_of`` indexes. An expert's score is its domain's log-probability. The margin
      does not apply (it is chosen for the domain rule's similarities, not for probabilities).
    """
    check_rule(rule)
    if not 0.0 <= corpus_weight <= 1.0:
        raise InvalidInput(f"corpus_weight must be within [0, 1], got {corpus_weight}", field="corpus_weight")
    sims = np.atleast_2d(np.asarray(sims, dtype=np.float32))
    owner = np.asarray(owner, dtype=int)
    sizes = np.asarray(sizes, dtype=np.float32)
    domain_of = np.asarray(domain_of, dtype=int)
    is_corpus = np.zeros(sims.shape[1], dtype=bool) if corpus is None else np.asarray(corpus, dtype=bool)
    out = np.full((len(sims), n_experts), -np.inf, dtype=np.float32)
    if rule == "stacked":
        if not (~is_corpus).any():
            return out
        ev_q, ev_c, idx, leaders = domain_evidence(sims, owner, domain_of, sizes, is_corpus)
        if len(idx) == 1:  # one domain: nothing to tell apart, its leader takes every query (probability 1)
            out[:, leaders[0]] = 0.0
            return out
        if stacker is None or domain_names is None:
            raise InvalidInput(
                "the stacked rule needs the pilot library's domain model; rebuild the library from its training "
                "queries (pilot_scores.npz, `rr bench quality`)",
                field="rule",
            )
        logp = stacker.log_probabilities(ev_q, ev_c, [domain_names[int(i)] for i in idx])
        for j, leader in enumerate(leaders):
            out[:, leader] = np.maximum(out[:, leader], logp[:, j])
        return out
    if rule in ("domain", "corpus"):
        if not (~is_corpus).any():
            return out
        weight = corpus_weight if rule == "corpus" else 0.0
        per_domain, _, leaders = domain_scores(sims, owner, domain_of, sizes, is_corpus, weight)
        for j, leader in enumerate(leaders):
            out[:, leader] = np.maximum(out[:, leader], per_domain[:, j])
        if margin > 0 and per_domain.shape[1] > 1:
            top2 = -np.sort(-per_domain, axis=1)[:, :2]
            out[top2[:, 0] - top2[:, 1] < margin] = -np.inf
        return out
    # Every other rule reads the Algorithm-1 pilots alone.
    sims, owner, sizes = sims[:, ~is_corpus], owner[~is_corpus], sizes[~is_corpus]
    if sims.shape[1] == 0:
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
class DomainStacker:
    """The stacked rule's domain step: a multinomial logistic regression that reads, for every domain, the query
    evidence (similarity to the centroid of its training queries) and the corpus evidence (similarity to its
    nearest corpus pilot) and gives the probability that a query comes from each domain.

    The corpus rule adds the two with one weight for every domain; the regression weighs them per domain, so a
    domain whose corpus looks like another's (SciFact's and NFCorpus's abstracts) can lean on its queries, and one
    with few queries (MED) on its documents. It has 2 x D x D + D numbers, is fitted on the training queries in
    seconds (:func:`fit_stacker`) and travels in pilots.json."""

    domains: list[str]
    coef: np.ndarray  # (D, 2D): per class, weights on [query evidence of every domain, corpus evidence of every domain]
    intercept: np.ndarray  # (D,)

    def log_probabilities(self, query_ev: np.ndarray, corpus_ev: np.ndarray, present: Sequence[str]) -> np.ndarray:
        """(n, len(present)) log-probabilities; the evidence columns and the result follow ``present``, which must
        hold exactly the domains the model was fitted on."""
        if sorted(present) != sorted(self.domains):
            raise InvalidInput(
                f"the stacked rule's domain model covers {sorted(self.domains)} but the pilots cover "
                f"{sorted(present)}; rebuild the pilot library",
                field="rule",
            )
        order = [list(present).index(d) for d in self.domains]
        z = _features(query_ev, corpus_ev, order) @ self.coef.T + self.intercept
        z -= z.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        out = np.empty_like(logp)
        out[:, order] = logp
        return out.astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        return {
            "domains": self.domains,
            "coef": [[round(float(v), 7) for v in row] for row in self.coef],
            "intercept": [round(float(v), 7) for v in self.intercept],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DomainStacker:
        domains = [str(d) for d in data["domains"]]
        coef = np.asarray(data["coef"], dtype=np.float64)
        intercept = np.asarray(data["intercept"], dtype=np.float64)
        if coef.shape != (len(domains), 2 * len(domains)) or intercept.shape != (len(domains),):
            raise InvalidInput(
                f"the stacked rule's domain model has {len(domains)} domains but weights of shape {coef.shape} "
                f"and {intercept.shape}",
                field="stacker",
            )
        return cls(domains, coef, intercept)


def _features(query_ev: np.ndarray, corpus_ev: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """The regression's input: every domain's query evidence, then every domain's corpus evidence, in the model's
    domain order (``order`` gives each model domain's column in the evidence)."""
    return np.concatenate([np.asarray(query_ev)[:, order], np.asarray(corpus_ev)[:, order]], axis=1).astype(np.float64)


def fit_stacker(
    library: PilotLibrary, embeddings: Mapping[str, np.ndarray], c: float = STACK_C
) -> DomainStacker | None:
    """Fit the stacked rule's domain model on the training queries' BASE embeddings (per domain), with the
    library's pilots as the evidence; None where fewer than two domains have query pilots (nothing to tell
    apart). Deterministic: the same pilots and queries give the same weights."""
    from sklearn.linear_model import LogisticRegression

    query_domains = sorted({library.domains[int(j)] for j in np.unique(library.domain_of[~library.corpus])})
    if len(query_domains) < 2:
        return None
    missing = [d for d in query_domains if d not in embeddings or not len(embeddings[d])]
    if missing:
        raise InvalidInput(f"no training queries for domains {missing} to fit the stacked rule on", field="domains")
    feats, labels = [], []
    for d in query_domains:
        sims = np.asarray(embeddings[d], dtype=np.float32) @ library.matrix.T
        ev_q, ev_c, idx, _ = domain_evidence(sims, library.owner, library.domain_of, library.sizes, library.corpus)
        present = [library.domains[int(i)] for i in idx]
        feats.append(_features(ev_q, ev_c, [present.index(x) for x in query_domains]))
        labels += [query_domains.index(d)] * len(sims)
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=5000)
    model.fit(np.concatenate(feats), np.asarray(labels))
    coef, intercept = np.asarray(model.coef_, np.float64), np.asarray(model.intercept_, np.float64)
    if len(query_domains) == 2:  # scikit-learn fits one logit for two classes: the first class's is 0
        coef, intercept = np.concatenate([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    return DomainStacker(query_domains, coef, intercept)


@dataclass
class Pilot:
    """One pilot: an Algorithm-1 group centroid (kind ``query``, ``size`` queries, labelled with its best expert) or
    a corpus centroid (kind ``corpus``, ``size`` documents; ``expert`` is its domain's leader, so removing that
    expert removes them too)."""

    expert: str
    domain: str
    size: int
    vector: np.ndarray
    kind: str = QUERY


def corpus_centroids(
    doc_embeddings: np.ndarray, n_pilots: int = CORPUS_PILOTS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means summary of a corpus's base document embeddings: (k, dim) unit centroids and the number of
    documents each stands for. A corpus of at most ``n_pilots`` documents is kept whole."""
    from sklearn.cluster import KMeans

    x = np.asarray(doc_embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise InvalidInput(f"corpus pilots need a non-empty (n, dim) matrix, got shape {x.shape}", field="corpus")
    if n_pilots < 1:
        raise InvalidInput(f"corpus pilots per domain must be at least 1, got {n_pilots}", field="n_pilots")
    x = x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)
    if len(x) <= n_pilots:
        return x, np.ones(len(x), dtype=np.int64)
    km = KMeans(n_clusters=n_pilots, n_init=3, random_state=seed).fit(x)
    centres = km.cluster_centers_.astype(np.float32)
    centres /= np.clip(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12, None)
    counts = np.bincount(km.labels_, minlength=n_pilots)
    keep = counts > 0
    return centres[keep], counts[keep].astype(np.int64)


@dataclass
class PilotScores:
    """Per-domain training queries, their base embeddings and one nDCG@10 column per expert."""

    domains: dict[str, list[str]] = field(default_factory=dict)  # domain -> query ids
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)  # domain -> (n, dim) base embeddings
    scores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # domain -> expert -> (n,)
    corpus: dict[str, np.ndarray] = field(default_factory=dict)  # domain -> (k, dim) corpus pilots (unit vectors)
    corpus_sizes: dict[str, np.ndarray] = field(default_factory=dict)  # domain -> (k,) documents per corpus pilot

    @property
    def experts(self) -> list[str]:
        names: set[str] = set()
        for cols in self.scores.values():
            names.update(cols)
        return sorted(names)

    @property
    def complete_experts(self) -> list[str]:
        """The experts scored on every domain: the only ones Algorithm 1 can build pilots for (an expert registered
        without scores has a column only in a domain added after it, where every registered expert is scored)."""
        return [e for e in self.experts if all(e in self.scores.get(d, {}) for d in self.domains)]

    def check_training_queries(self, domain: str, have: Container[str], data: str) -> None:
        """Refuse (400, ``data``) a train split of a known domain lacking some of the queries its columns hold:
        every expert is scored on the same queries."""
        absent = [q for q in self.domains[domain] if q not in have]
        if absent:
            raise InvalidInput(
                f"data {data!r}: the train split of {domain!r} lacks {len(absent)} of the {len(self.domains[domain])} "
                f"training queries the pilot library was built on (first: {absent[0]!r}); every expert is scored on "
                "the same queries",
                field="data",
            )

    def add_domain(self, domain: str, query_ids: Sequence[str], base_embeddings: np.ndarray) -> None:
        if len(query_ids) != len(base_embeddings):
            raise InvalidInput(f"domain {domain!r}: {len(query_ids)} query ids but {len(base_embeddings)} embeddings")
        self.domains[domain] = list(query_ids)
        self.embeddings[domain] = np.asarray(base_embeddings, dtype=np.float32)
        self.scores.setdefault(domain, {})

    def add_corpus(self, domain: str, doc_embeddings: np.ndarray, n_pilots: int = CORPUS_PILOTS, seed: int = 0) -> None:
        """Summarise the domain's corpus (BASE document embeddings) into corpus pilots. Documents carry no label,
        so this uses nothing a test split could leak; it is deterministic for a given ``seed``."""
        if domain not in self.domains:
            raise NotFound(f"no domain {domain!r} in the pilot scores; add its training queries first")
        self.corpus[domain], self.corpus_sizes[domain] = corpus_centroids(doc_embeddings, n_pilots, seed)

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
        for table in (self.domains, self.embeddings, self.scores, self.corpus, self.corpus_sizes):
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
        ``like`` is the library being replaced: its served rule, margin and corpus weight carry over (adding or
        removing an expert changes the pilots, not how they are read). A domain's corpus pilots go to its leader,
        the expert of its largest group; a domain where no expert won a query gets none.
        """
        names = sorted(experts) if experts is not None else self.experts
        if not names:
            raise InvalidInput("the pilot library needs at least one expert")
        pilots: list[Pilot] = []
        for domain in sorted(domains if domains is not None else self.domains):
            labels = self.labels(domain, names, (homes or {}).get(domain, domain))
            emb = self.embeddings[domain]
            groups = [
                Pilot(name, domain, len(members), members.mean(axis=0))
                for i, name in enumerate(names)
                if len(members := emb[labels == i])
            ]
            pilots += groups
            if domain in self.corpus and groups:
                # The domain rule's leader (router.pilots.domain_scores): the largest group, ties to the first name.
                leader = min(groups, key=lambda p: (-p.size, p.expert)).expert
                for vec, size in zip(self.corpus[domain], self.corpus_sizes[domain], strict=True):
                    pilots.append(Pilot(leader, domain, int(size), vec, CORPUS))
        lib = PilotLibrary(pilots, names)
        lib.training_queries = {p.domain: self.embeddings[p.domain] for p in pilots if p.kind == QUERY}
        if like is not None:
            lib.rule, lib.margin, lib.corpus_weight = like.rule, like.margin, like.corpus_weight
        return lib

    # ---- persistence -----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        arrays: dict[str, np.ndarray] = {}
        meta: dict[str, Any] = {"domains": self.domains, "experts": {}, "corpus": sorted(self.corpus)}
        for d in self.domains:
            arrays[f"emb::{d}"] = self.embeddings[d]
            meta["experts"][d] = sorted(self.scores[d])
            for e, v in self.scores[d].items():
                arrays[f"score::{d}::{e}"] = v
        for d in self.corpus:
            arrays[f"corpus::{d}"] = self.corpus[d]
            arrays[f"corpus_size::{d}"] = self.corpus_sizes[d]
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        arrays["meta"] = np.array(json.dumps(meta))
        tmp = p.with_name(f".{p.name}.tmp.npz")
        np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, p)  # readers in other threads or processes see the old file or the new one, never half

    @classmethod
    def load(cls, path: str | Path) -> PilotScores:
        """The scores file; one that is not such a file (damaged, truncated, hand-made) is a
        :class:`DataFormatError` naming it (nothing is read into the library from it)."""
        import zipfile

        if not Path(path).is_file():
            raise NotFound(f"{path}: no pilot scores; build them with `rr bench quality`")
        try:
            with np.load(Path(path)) as z:
                meta = json.loads(str(z["meta"]))
                out = cls()
                for d, qids in meta["domains"].items():
                    out.add_domain(d, qids, z[f"emb::{d}"])
                    for e in meta["experts"][d]:
                        out.scores[d][e] = z[f"score::{d}::{e}"]
                for d in meta.get("corpus", []):  # files written before corpus pilots have none
                    out.corpus[d], out.corpus_sizes[d] = z[f"corpus::{d}"], z[f"corpus_size::{d}"]
        except (OSError, EOFError, zipfile.BadZipFile, KeyError, TypeError, ValueError, AttributeError) as e:
            why = f"not a pilot scores file ({type(e).__name__}: {e}); `rr bench quality` writes it"
            raise DataFormatError(str(path), None, None, why) from None
        return out


@dataclass
class RouteDecision:
    expert: str
    scores: dict[str, float]


class PilotLibrary:
    """Pilots as one matrix; routes base query embeddings to experts."""

    def __init__(self, pilots: Sequence[Pilot], experts: Sequence[str] | None = None, rule: str = "mean") -> None:
        self.rule = check_rule(rule)  # what serving uses: the paper's mean unless the benchmark chose another
        self.margin = 0.0  # the domain rule's fallback to the base model (router.validation.choose_margin)
        self.corpus_weight = 0.0  # the corpus rule's weight on corpus pilots (router.validation.choose_corpus_weight)
        self.stacker: DomainStacker | None = None  # the stacked rule's domain model (fit_stacker), fitted when needed
        self.training_queries: dict[str, np.ndarray] = {}  # base embeddings per domain that the stacker is fitted on
        self.pilots = list(pilots)
        self.experts = sorted(experts) if experts is not None else sorted({p.expert for p in self.pilots})
        kinds = {p.kind for p in self.pilots} - {QUERY, CORPUS}
        if kinds:
            raise InvalidInput(
                f"unknown pilot kind(s) {sorted(kinds)}; a pilot is {QUERY!r} or {CORPUS!r}", field="kind"
            )
        owners = {p.expert for p in self.pilots if p.kind == QUERY}
        # An expert that won no training query owns no pilot and can never be chosen; keep it listed but unroutable.
        self.routable = [e for e in self.experts if e in owners]
        if not self.routable:
            raise InvalidInput("the pilot library has no pilots; score the experts on training queries first")
        self.matrix = np.stack([p.vector for p in self.pilots]).astype(np.float32)
        norms = np.linalg.norm(self.matrix, axis=1, keepdims=True)
        self.matrix /= np.clip(norms, 1e-12, None)
        strays = sorted({p.expert for p in self.pilots} - set(self.routable))
        if strays:
            raise InvalidInput(
                f"pilots name experts that cannot be routed to: {strays} (every pilot's expert must be listed, and a "
                "corpus pilot's expert must own a query pilot); rebuild the library",
                field="pilots",
            )
        self.owner = np.array([self.routable.index(p.expert) for p in self.pilots])
        self.sizes = np.array([p.size for p in self.pilots], dtype=np.float32)
        self.corpus = np.array([p.kind == CORPUS for p in self.pilots], dtype=bool)
        self.domains = sorted({p.domain for p in self.pilots})
        self.domain_of = np.array([self.domains.index(p.domain) for p in self.pilots])

    def __len__(self) -> int:
        return len(self.pilots)

    def domain_model(self) -> DomainStacker | None:
        """The stacked rule's domain model: loaded with the library, or fitted on its training queries on first
        use; None where the library has neither (a library saved without it, or a single domain)."""
        if self.stacker is None and self.training_queries:
            self.stacker = fit_stacker(self, self.training_queries)
        return self.stacker

    def expert_scores(self, query_embeddings: np.ndarray, rule: str = "mean", k: int = 3) -> np.ndarray:
        """(n_queries, n_routable) scores per expert under ``rule``; higher is better."""
        q = np.atleast_2d(np.asarray(query_embeddings, dtype=np.float32))
        sims = q @ self.matrix.T  # cosine: both sides are unit vectors
        return aggregate(
            sims,
            self.owner,
            self.domain_of,
            self.sizes,
            len(self.routable),
            rule,
            k,
            self.margin,
            self.corpus,
            self.corpus_weight,
            self.domain_model() if rule == "stacked" else None,
            self.domains,
        )

    def guess_domains(
        self, query_embeddings: np.ndarray, corpus_weight: float | None = None, stacked: bool = False
    ) -> list[str]:
        """The domain each query most looks like, as the domain and corpus rules see it (``corpus_weight`` 0: the
        domain rule; default: the library's weight), or with ``stacked`` as the stacked rule's domain model does."""
        q = np.atleast_2d(np.asarray(query_embeddings, dtype=np.float32))
        sims = q @ self.matrix.T
        if stacked:
            model = self.domain_model()
            if model is None:
                raise InvalidInput("this pilot library has no domain model for the stacked rule", field="rule")
            ev_q, ev_c, idx, _ = domain_evidence(sims, self.owner, self.domain_of, self.sizes, self.corpus)
            names = [self.domains[int(i)] for i in idx]
            return [names[j] for j in model.log_probabilities(ev_q, ev_c, names).argmax(axis=1)]
        weight = self.corpus_weight if corpus_weight is None else corpus_weight
        per_domain, idx, _ = domain_scores(sims, self.owner, self.domain_of, self.sizes, self.corpus, weight)
        return [self.domains[int(idx[j])] for j in per_domain.argmax(axis=1)]

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
            "corpus_weight": self.corpus_weight,
            **({"stacker": model.to_json()} if (model := self.domain_model()) is not None else {}),
            "pilots": [
                {
                    "expert": p.expert,
                    "domain": p.domain,
                    "size": p.size,
                    **({"kind": p.kind} if p.kind != QUERY else {}),
                    "vector": [round(float(x), 7) for x in p.vector],
                }
                for p in self.pilots
            ],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PilotLibrary:
        pilots = [
            Pilot(p["expert"], p["domain"], int(p["size"]), np.asarray(p["vector"], np.float32), p.get("kind", QUERY))
            for p in data["pilots"]
        ]
        lib = cls(pilots, data.get("experts"), data.get("rule", "mean"))
        lib.margin = float(data.get("margin", 0.0))
        lib.corpus_weight = float(data.get("corpus_weight", 0.0))
        if "stacker" in data:  # libraries saved before the stacked rule have none
            lib.stacker = DomainStacker.from_json(data["stacker"])
        elif lib.rule == "stacked" and len({p.domain for p in pilots if p.kind == QUERY}) > 1:
            raise InvalidInput(
                "the library's rule is 'stacked' but it holds no domain model ('stacker'); rebuild it from its "
                "training queries (pilot_scores.npz, `rr bench quality`) or choose another rule",
                field="stacker",
            )
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
            raise NotFound(f"{p}: no pilot library; build it with `rr bench quality` (it trains what is missing)")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise DataFormatError(str(p), None, None, f"not valid UTF-8 ({e.reason})") from None
        except json.JSONDecodeError as e:
            raise DataFormatError(str(p), e.lineno, None, f"not valid JSON ({e.msg})") from None
        if not isinstance(data, dict):
            raise DataFormatError(str(p), None, None, "a pilot library is a JSON object")
        try:
            return cls.from_json(data)
        except InvalidInput as e:
            raise InvalidInput(f"{p}: {e}", field=e.field) from None
        except (KeyError, TypeError, ValueError) as e:
            raise DataFormatError(str(p), None, None, f"not a pilot library ({type(e).__name__}: {e})") from None

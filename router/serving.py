"""The router at serving time: experts loaded from the registry, the pilot library in its own store collection.

A query takes two encoder passes, as in the paper: the base pass finds the expert (a search over the pilot collection,
averaged per expert), the expert pass makes the vector that searches that expert's named vector. Documents are encoded
by every *document encoder*: the base model, plus each expert trained on the document side.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import Conflict, InvalidInput, NotFound
from router.encoders import BASE, TextEncoder
from router.experts import MANIFEST, Expert, ExpertRegistry
from router.pilots import CORPUS, QUERY, Pilot, PilotLibrary, PilotScores, aggregate
from store.base import SearchRequest, VectorStore

log = logging.getLogger(__name__)

PILOT_COLLECTION = "_rr_pilots"
PILOTS_FILE = "pilots.json"
SCORES_FILE = "pilot_scores.npz"
PILOT_KEYS = ("expert", "domain", "kind")  # the pilot payload keys routing filters on, indexed
# The files of an expert directory whose change means another expert: its manifest and its adapter (config and
# weights in either format; the encoder's fingerprint of the adapter, which keys its cached vectors, hashes these).
STAMP_FILES = (MANIFEST, "adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")

Stamp = tuple[object, ...]


def _stamp(path: Path) -> Stamp | None:
    """A cheap stamp of an expert directory (a few stats, no reads): the directory's and each file's inode, size,
    mtime and ctime. Replacing an expert (a copy renamed in, or files rewritten in place) changes it: copies keep
    their source's mtime, but a new or rewritten file always gets a new ctime. None: the directory is gone."""
    try:
        d = os.stat(path)
    except OSError:
        return None
    out: list[object] = [(d.st_ino, d.st_ctime_ns)]
    for name in STAMP_FILES:
        try:
            f = os.stat(path / name)
        except OSError:
            out.append(None)
            continue
        out.append((f.st_ino, f.st_size, f.st_mtime_ns, f.st_ctime_ns))
    return tuple(out)


@dataclass
class Route:
    expert: str
    scores: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)


class Retriever:
    """Encoder + experts + pilots; thread-safe; knows nothing of collections or tenants."""

    def __init__(self, encoder: TextEncoder, registry: ExpertRegistry, store: VectorStore | None = None) -> None:
        self.encoder = encoder
        self.registry = registry
        self.store = store  # a store.VectorStore holding the pilot collection
        self._lock = threading.RLock()
        self.manifests: dict[str, Expert] = {}
        # Per expert seen on disk (loaded, or refused by the encoder): its directory and the stamp of its files
        # when it was loaded. refresh() reloads an expert whose stamp changed: one replaced under the same name.
        self._stamps: dict[str, tuple[Path, Stamp | None]] = {}
        self._root_mtime = registry.root.stat().st_mtime_ns if registry.root.is_dir() else 0  # before listing
        for expert in registry.all():
            self._load(expert)
        self.library: PilotLibrary | None = None
        self._pilots_mtime = 0.0
        self._load_library()
        if self.store is not None:
            self.sync_pilot_collection()

    def _load_library(self) -> None:
        pilots = self.registry.root / PILOTS_FILE
        if pilots.is_file():
            self.library = PilotLibrary.load(pilots)
            self._pilots_mtime = pilots.stat().st_mtime

    def refresh(self) -> bool:
        """Pick up experts and pilots another process registered, replaced or removed (the registry is on a shared
        volume).

        Called on every search, so the common case is a few stats: the registry folder's mtime changes when an
        expert directory is renamed in or removed, pilots.json is replaced atomically, and each expert's files have
        a stamp (:func:`_stamp`) that changes when the expert is replaced under the same name (``rr experts train
        --replace``, ``ExpertRegistry.add(..., replace=True)``, ``scripts/sweep_experts.py decide --apply``, or
        files rewritten in place). A replaced expert is loaded again: the encoder fingerprints its new adapter
        files, so no vector the old one cached is served for it. Returns whether anything changed.
        """
        with self._lock:
            pilots = self.registry.root / PILOTS_FILE
            mtime = pilots.stat().st_mtime if pilots.is_file() else 0.0
            root_mtime = self.registry.root.stat().st_mtime_ns if self.registry.root.is_dir() else 0
            touched = {name for name, (path, stamp) in self._stamps.items() if _stamp(path) != stamp}
            if root_mtime == self._root_mtime and mtime == self._pilots_mtime and not touched:
                return False
            self._root_mtime = root_mtime
            on_disk = {e.name: e for e in self.registry.all()}
            gone = set(self._stamps) - set(on_disk)
            new = set(on_disk) - set(self._stamps)
            replaced = {
                n
                for n in set(on_disk) & set(self._stamps)
                if n in touched or on_disk[n].path != self._stamps[n][0]  # rewritten, or now from another folder
            }
            if not (gone or new or replaced) and mtime == self._pilots_mtime:
                return False
            for name in gone:
                self._drop(name)
                del self._stamps[name]
            for name in sorted(new | replaced):
                self._reload(on_disk[name])
            self._load_library()
            return True

    def _load(self, expert: Expert) -> None:
        stamp = _stamp(expert.path)  # before loading: a change while it loads shows at the next refresh
        self._stamps[expert.name] = (expert.path, stamp)
        self.encoder.add_expert(expert.name, expert.path, expert.manifest.base_fingerprint)
        self.manifests[expert.name] = expert

    def _drop(self, name: str) -> None:
        """Stop serving ``name`` (its stamp stays: refresh decides when to look at it again)."""
        self.manifests.pop(name, None)
        if name in self.encoder.experts:
            self.encoder.remove_expert(name)

    def _reload(self, expert: Expert) -> None:
        """(Re)load an expert found on disk by refresh. One the encoder refuses (another base model, a broken
        adapter) is not served, not even its previous version, and is tried again when its files change; the
        other experts and the pilots still load."""
        self._drop(expert.name)  # the old adapter goes first: never its weights under the new manifest
        try:
            self._load(expert)
        except Exception:
            self._drop(expert.name)
            log.warning("expert %r at %s could not be loaded; not serving it", expert.name, expert.path, exc_info=True)

    # ---- experts ------------------------------------------------------------------------------------------
    @property
    def experts(self) -> list[str]:
        return sorted(self.manifests)

    @property
    def document_encoders(self) -> list[str]:
        """Named vectors every collection carries: 'base', plus each expert that encodes documents."""
        return [BASE, *(n for n, e in sorted(self.manifests.items()) if e.manifest.encodes_documents)]

    def vector_for(self, expert: str) -> str:
        """The named vector a query routed to ``expert`` searches."""
        if expert == BASE:
            return BASE
        if expert not in self.manifests:
            raise NotFound(f"unknown expert {expert!r} (have: {', '.join(self.experts) or 'none'})")
        return expert if self.manifests[expert].manifest.encodes_documents else BASE

    def register(self, source: str | Path, pilot_scores: PilotScores | None = None) -> Expert:
        """Add an expert and rebuild the pilots from its score column (no gradient training)."""
        with self._lock:
            expert = self.registry.add(source)
            try:
                self._load(expert)
            except Exception as e:
                self._stamps.pop(expert.name, None)
                self.registry.remove(expert.name)
                if isinstance(e, (InvalidInput, NotFound, Conflict)):
                    raise
                # A corrupt or foreign adapter file (safetensors, peft, torch errors): the request's fault.
                raise InvalidInput(
                    f"path {str(source)!r}: the expert could not be loaded ({type(e).__name__}: {e})", field="path"
                ) from e
            try:
                self.rebuild_pilots(pilot_scores)
            except Exception:
                self.unregister(expert.name)
                raise
            return expert

    def unregister(self, name: str) -> None:
        with self._lock:
            if name not in self.manifests:
                raise NotFound(f"unknown expert {name!r} (have: {', '.join(self.experts) or 'none'})")
            scores_path = self.registry.root / SCORES_FILE
            # Read before anything changes: a scores file that does not load leaves the expert as it was.
            ps = PilotScores.load(scores_path) if scores_path.is_file() else None
            del self.manifests[name]
            self._stamps.pop(name, None)
            self.encoder.remove_expert(name)
            self.registry.remove(name)
            if ps is not None:
                ps.remove_expert(name)
                ps.save(scores_path)
            self.rebuild_pilots()

    def merge_scores(self, computed: PilotScores) -> list[str]:
        """Write the columns (and new domains) of ``computed`` into the pilot scores as they are now, then rebuild
        the pilots: what another scoring wrote meanwhile is kept. Columns of experts no longer registered are left
        out; returns the experts written. A domain whose training queries changed meanwhile is a Conflict."""
        with self._lock:
            self.refresh()
            path = self.registry.root / SCORES_FILE
            latest = PilotScores.load(path) if path.is_file() else PilotScores()
            written: set[str] = set()
            for domain, qids in computed.domains.items():
                if domain not in latest.domains:
                    latest.add_domain(domain, qids, computed.embeddings[domain])
                    if domain in computed.corpus:
                        latest.corpus[domain] = computed.corpus[domain]
                        latest.corpus_sizes[domain] = computed.corpus_sizes[domain]
                elif latest.domains[domain] != qids:
                    raise Conflict(f"the training queries of domain {domain!r} changed while it was scored")
                for name, column in computed.scores.get(domain, {}).items():
                    if name in self.manifests:
                        latest.set_scores(domain, name, column.tolist())
                        written.add(name)
            self._rebuild_pilots(latest)
            return sorted(written)

    def rebuild_pilots(self, scores: PilotScores | None = None) -> None:
        with self._lock:
            self._rebuild_pilots(scores)

    def _rebuild_pilots(self, scores: PilotScores | None) -> None:
        scores_path = self.registry.root / SCORES_FILE
        if scores is None and scores_path.is_file():
            scores = PilotScores.load(scores_path)
        if scores is None:
            return
        complete = set(scores.complete_experts)
        names = [n for n in self.experts if n in complete]
        homes = {self.manifests[n].manifest.domain: n for n in names}
        # Built before anything is written: a build that fails leaves the scores and pilots on disk as they were.
        library = scores.build(names, homes=homes, like=self.library) if names else None
        scores.save(scores_path)
        self.library = library
        if self.library is not None:
            self.library.save(self.registry.root / PILOTS_FILE)
            self._pilots_mtime = (self.registry.root / PILOTS_FILE).stat().st_mtime
        self.sync_pilot_collection()

    def sync_pilot_collection(self) -> None:
        """Mirror the pilot library into its store collection: one point per pilot (id expert:domain for an
        Algorithm-1 pilot, corpus:domain:i for a domain's i-th corpus pilot).

        Never drops the collection: concurrent routing keeps working. New pilots are written first, stale ones
        deleted after; routing filters on the current experts, so a stale pilot of a removed expert is never used.
        """
        from store.base import PointIn, iter_points

        store = self.store
        if store is None:
            return
        with self._lock:
            if not store.collection_exists(PILOT_COLLECTION):
                store.create_collection(PILOT_COLLECTION, {BASE: self.encoder.dim})
            for key in PILOT_KEYS:  # routing filters on them; a collection made by an older version gets them here
                store.index_payload(PILOT_COLLECTION, key)
            pilots = self.library.pilots if self.library is not None else []
            want = {
                pid: PointIn(
                    pid, {BASE: p.vector}, {"expert": p.expert, "domain": p.domain, "size": p.size, "kind": p.kind}
                )
                for pid, p in _pilot_ids(pilots)
            }
            stored = {p.doc_id for p in iter_points(store, PILOT_COLLECTION)}
            if want:
                store.upsert(PILOT_COLLECTION, list(want.values()))
            stale = sorted(stored - set(want))
            if stale:
                store.delete(PILOT_COLLECTION, stale)

    # ---- encoding and routing -------------------------------------------------------------------------------
    def encode_documents(self, texts: Sequence[str], encoders: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        names = list(encoders) if encoders is not None else self.document_encoders
        out: dict[str, np.ndarray] = {}
        for name in names:
            out[name] = self.encoder.encode(texts, None if name == BASE else name, "document")
        return out

    def encode_query(self, query: str, expert: str) -> np.ndarray:
        if not query.strip():
            raise InvalidInput("query must not be empty", field="query")
        return self.encoder.encode([query], None if expert == BASE else expert, "query")[0]

    def route(self, query: str, allowed: Sequence[str] | None = None) -> Route:
        """Routing as a query on the pilot collection: similarity to every pilot of the allowed experts, aggregated
        per expert by the library's rule (:func:`router.pilots.aggregate`; the rule is stored in pilots.json),
        highest wins. The corpus rule reads only each domain's nearest corpus pilot, so it is fetched alone, in the
        same engine call (:func:`_pilot_requests`)."""
        t0 = time.perf_counter()
        base_vec = self.encode_query(query, BASE)
        t1 = time.perf_counter()
        candidates = [e for e in (allowed if allowed is not None else self.experts) if e in self.manifests]
        if self.store is None or self.library is None or not candidates:
            return Route(BASE, {}, {"base_pass_ms": (t1 - t0) * 1000, "pilots_ms": 0.0})
        hits = [
            h
            for found in self.store.search_batch(
                PILOT_COLLECTION, BASE, _pilot_requests(self.library, base_vec, candidates)
            )
            for h in found
        ]
        experts = sorted({h.payload["expert"] for h in hits})
        domains = sorted({h.payload.get("domain", "") for h in hits})
        stacked = self.library.rule == "stacked"
        agg = aggregate(
            np.array([[h.score for h in hits]], dtype=np.float32),
            np.array([experts.index(h.payload["expert"]) for h in hits]),
            np.array([domains.index(h.payload.get("domain", "")) for h in hits]),
            np.array([int(h.payload.get("size", 1)) for h in hits], dtype=np.float32),
            len(experts),
            self.library.rule,
            margin=self.library.margin,
            corpus=np.array([h.payload.get("kind", QUERY) == CORPUS for h in hits], dtype=bool),
            corpus_weight=self.library.corpus_weight,
            stacker=self.library.domain_model() if stacked else None,
            domain_names=domains,
        )[0]
        # The stacked rule reads every domain's evidence (its model was fitted on all of them), so its pilots are
        # fetched for every expert and the experts not allowed are dropped here.
        scores = {e: float(v) for e, v in zip(experts, agg, strict=True) if np.isfinite(v) and e in candidates}
        t2 = time.perf_counter()
        timings = {"base_pass_ms": (t1 - t0) * 1000, "pilots_ms": (t2 - t1) * 1000}
        if not scores:
            return Route(BASE, {}, timings)
        best = max(sorted(scores), key=lambda e: scores[e])  # ties: first by name, as offline
        return Route(best, scores, timings)


def _pilot_requests(library: PilotLibrary, vector: np.ndarray, candidates: Sequence[str]) -> list[SearchRequest]:
    """The searches that give :func:`router.pilots.aggregate` all it reads under the library's rule: every
    Algorithm-1 pilot of the candidate experts and, for the corpus rule, each domain's single nearest corpus pilot
    (the rule takes the max over them, so the other corpus pilots cannot change a score). The stacked rule reads
    the same, for every expert of the library: its domain model weighs every domain's evidence."""
    n_query = int((~library.corpus).sum())  # the library's own arrays: no pass over its pilots per query
    experts = list(library.routable) if library.rule == "stacked" else list(candidates)
    requests = [SearchRequest(vector, max(1, n_query), {"expert": experts, "kind": QUERY})]
    if library.rule == "stacked" or (library.rule == "corpus" and library.corpus_weight > 0):
        for j in np.unique(library.domain_of[library.corpus]):
            d = library.domains[int(j)]
            requests.append(SearchRequest(vector, 1, {"expert": experts, "kind": CORPUS, "domain": d}))
    return requests


def _pilot_ids(pilots: Sequence[Pilot]) -> list[tuple[str, Pilot]]:
    """Stable point ids: an Algorithm-1 pilot is one per expert and domain; corpus pilots are numbered per domain."""
    out: list[tuple[str, Pilot]] = []
    seen: dict[str, int] = {}
    for p in pilots:
        if p.kind == CORPUS:
            i = seen.get(p.domain, 0)
            seen[p.domain] = i + 1
            out.append((f"corpus:{p.domain}:{i}", p))
        else:
            out.append((f"{p.expert}:{p.domain}", p))
    return out

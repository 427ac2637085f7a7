"""Scoring encoders on BEIR collections, with every vector cached: the engine behind `rr eval` and `rr bench`.

A *mode* says which sides the experts encode: ``query`` (the paper's main setting: documents are encoded once by the
frozen base) or ``query+document`` (every expert has its own document vectors). For a mode, the workbench produces
per-query nDCG@10 for any encoder on any dataset and split; routed systems then only choose, per query, whose score
counts, so every system is scored on identical rankings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core.errors import InvalidInput
from core.settings import Settings
from ingest.beir import BeirDataset
from router.cache import EmbeddingCache
from router.encoders import BASE, TextEncoder
from router.evaluation import Run, ndcg_at_10, search_matrix
from router.experts import SIDES, ExpertRegistry, Manifest

if TYPE_CHECKING:
    from router.training.trainer import TrainConfig, TrainResult

log = logging.getLogger(__name__)

MODE_DIRS = {"query": "query", "query+document": "query-document"}
MULTI_TASK = "multi_task"


def check_mode(mode: str) -> str:
    if mode not in SIDES:
        raise InvalidInput(f"mode must be one of {SIDES}, got {mode!r}", field="mode")
    return mode


def registry_for(settings: Settings, mode: str) -> ExpertRegistry:
    """Experts of a mode live in ``experts/<mode dir>``; the shipped default is ``experts/query``."""
    return ExpertRegistry(Path(settings.experts_dir) / MODE_DIRS[check_mode(mode)])


def baseline_dir(settings: Settings, mode: str) -> Path:
    return Path(settings.experts_dir) / "baselines" / f"{MULTI_TASK}-{MODE_DIRS[check_mode(mode)]}"


def baseline_data(path: Path) -> list[str] | None:
    """The collections a multi-task baseline at ``path`` was trained on, sorted (None: there is none)."""
    if not (path / "manifest.json").is_file():
        return None
    return sorted(Manifest.load(path).training.get("data") or [])


def train_multi_task(
    settings: Settings,
    encoder: TextEncoder,
    datasets: Sequence[BeirDataset],
    cfg: TrainConfig,
    doc_matrices: dict[str, np.ndarray] | None = None,
    progress: Callable[[str, float, float], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    keep_on_interrupt: bool = False,
    out: Path | None = None,
) -> TrainResult:
    """The multi-task baseline of ``cfg.sides``: one LoRA on the union of every domain's training data, written to
    ``out`` (default :func:`baseline_dir`), replacing what is there only once training has succeeded.
    ``progress``, ``on_step`` and ``keep_on_interrupt`` are :func:`router.training.trainer.train_expert`'s."""
    import shutil

    from router.training.data import domain_data
    from router.training.trainer import train_expert

    if not datasets:
        raise InvalidInput("the multi-task baseline needs at least one collection with a train split", field="data")
    out = out or baseline_dir(settings, cfg.sides)
    out.parent.mkdir(parents=True, exist_ok=True)
    docs = doc_matrices or {
        ds.name: encoder.encode([d.full_text for d in ds.corpus], None, "document") for ds in datasets
    }
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    res = train_expert(
        settings.base_model,
        encoder.base_fingerprint,
        [domain_data(ds) for ds in datasets],
        tmp,
        name=MULTI_TASK,
        domain="all",
        cfg=cfg,
        doc_matrices=docs,
        progress=progress,
        on_step=on_step,
        keep_on_interrupt=keep_on_interrupt,
    )
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)  # the previous baseline stays on disk until the new one is in place
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    res.path = out
    return res


def make_encoder(settings: Settings) -> TextEncoder:
    return TextEncoder(
        settings.base_model,
        query_max_length=settings.query_max_length,
        doc_max_length=settings.doc_max_length,
        batch_size=settings.batch_size,
        bf16=settings.bf16,
        cache=EmbeddingCache(Path(settings.cache_dir) / "embeddings"),
        threads=settings.threads,
        device=settings.device,
    )


@dataclass
class Scored:
    per_query: dict[str, float]
    run: Run


@dataclass
class Workbench:
    encoder: TextEncoder
    mode: str
    progress: Callable[[str, int], Callable[[int], None]] | None = None
    _docs: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_mode(self.mode)

    def _encode(self, label: str, texts: Sequence[str], expert: str | None, side: str) -> np.ndarray:
        cb = self.progress(label, len(texts)) if self.progress else None
        return self.encoder.encode(texts, expert, side, progress=cb)  # type: ignore[arg-type]

    def doc_encoder(self, expert: str | None) -> str | None:
        """Which encoder produced the document vectors an expert searches in this mode."""
        return expert if self.mode == "query+document" and expert not in (None, BASE) else None

    def doc_matrix(self, ds: BeirDataset, expert: str | None) -> np.ndarray:
        enc = self.doc_encoder(expert)
        key = (enc or BASE, ds.name)
        if key not in self._docs:
            texts = [d.full_text for d in ds.corpus]
            self._docs[key] = self._encode(f"{ds.name} docs [{enc or BASE}]", texts, enc, "document")
        return self._docs[key]

    def query_matrix(self, ds: BeirDataset, split: str, expert: str | None) -> tuple[list[str], np.ndarray]:
        queries = ds.split_queries(split)
        qids = list(queries)
        vecs = self._encode(
            f"{ds.name} {split} queries [{expert or BASE}]", [queries[q] for q in qids], expert, "query"
        )
        return qids, vecs

    def score(self, ds: BeirDataset, split: str, expert: str | None) -> Scored:
        qids, q = self.query_matrix(ds, split, expert)
        run = search_matrix(q, self.doc_matrix(ds, expert), [d.id for d in ds.corpus], qids)
        return Scored(ndcg_at_10(run, ds.qrels[split]), run)

    def drop_docs(self, expert: str) -> None:
        """Forget an expert's document vectors (memory), e.g. after scoring it everywhere."""
        for key in [k for k in self._docs if k[0] == expert]:
            del self._docs[key]

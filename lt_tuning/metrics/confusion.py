"""Where a classifier's errors go, read off a confusion matrix (rows: true class, columns: predicted)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def tail_to_head_share(confusion: Tensor, head: Sequence[int], tail: Sequence[int]) -> float | None:
    """Of the tail classes' misclassified examples, the share predicted as a head class: the
    head bias of the study in one number (None when no tail example is misclassified)."""
    rows = confusion[list(tail)].clone()
    rows[torch.arange(len(tail)), torch.as_tensor(list(tail), dtype=torch.long)] = 0  # the correct ones
    errors = int(rows.sum())
    return int(rows[:, list(head)].sum()) / errors if errors else None


def top_confusions(confusion: Tensor, k: int = 10) -> list[tuple[int, int, int]]:
    """The ``k`` most frequent errors as ``(true, predicted, count)``, most frequent first (ties:
    by true, then predicted class index); only counts above 0."""
    off_diagonal = confusion.clone()
    off_diagonal.fill_diagonal_(0)
    pairs = [(int(t), int(p), int(off_diagonal[t, p])) for t, p in off_diagonal.nonzero().tolist()]
    return sorted(pairs, key=lambda pair: (-pair[2], pair[0], pair[1]))[:k]

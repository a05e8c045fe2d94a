"""Head/tail class split of a long-tailed label distribution, and the per-group mean of a score."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def check_ratio(ratio: float, name: str = "ratio") -> None:
    """Raise unless ``ratio`` (the argument ``name``) is a cumulative share in ``(0, 1]``."""
    if not 0 < ratio <= 1:
        raise ValueError(f"`{name}` must be in (0, 1], got {ratio}.")


def head_tail_split(
    counts: Sequence[int] | Tensor, ratio: float, ignore_absent: bool = False
) -> tuple[list[int], list[int]]:
    """Split classes into head and tail by cumulative share of examples.

    Classes are visited by count, most frequent first (ties: smaller index first), and each
    class's share of all examples is added to a running total. A class is head if the total
    after adding it is ``< ratio``, tail otherwise. This is the rule of the study's reference
    code (GeneZC/Glee ``metrics.split_f1``), including its float accumulation of shares, so
    boundary cases resolve the same way.

    Args:
        counts: number of examples of each class, indexed by class.
        ratio: cumulative share in ``(0, 1]`` that the head classes stay below.
        ignore_absent: if ``True``, classes with count 0 are in neither list (the reference
            only sees classes present in the labels); otherwise they are tail.

    Returns:
        ``(head, tail)`` class indices, each in descending-frequency order.
    """
    check_ratio(ratio)
    counts = torch.as_tensor(counts)
    if counts.ndim != 1:
        raise ValueError(f"`counts` must be 1-D, got shape {tuple(counts.shape)}.")
    values: list[int] = counts.tolist()
    if any(c < 0 for c in values):
        raise ValueError("`counts` must be non-negative.")
    total = sum(values)
    if total == 0:
        raise ValueError("`counts` sum to 0: cannot split classes without any example.")

    head: list[int] = []
    tail: list[int] = []
    running = 0.0
    # `sorted` is stable, also with `reverse=True`: ties keep ascending class index.
    for c in sorted(range(len(values)), key=values.__getitem__, reverse=True):
        if values[c] == 0:
            if not ignore_absent:
                tail.append(c)
            continue
        running += values[c] / total
        (head if running < ratio else tail).append(c)
    return head, tail


def head_tail_f1(per_class_f1: Tensor, head: Sequence[int], tail: Sequence[int]) -> dict[str, Tensor]:
    """Mean of ``per_class_f1`` over the ``head`` and over the ``tail`` classes (0.0 for an empty group)."""
    zero = per_class_f1.new_zeros(())
    return {
        "head_f1": per_class_f1[list(head)].mean() if len(head) else zero,
        "tail_f1": per_class_f1[list(tail)].mean() if len(tail) else zero,
    }

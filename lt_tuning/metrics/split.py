"""Head/tail class split of a long-tailed label distribution."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _check_ratio(ratio: float) -> None:
    if not 0 < ratio <= 1:
        raise ValueError(f"`ratio` must be in (0, 1], got {ratio}.")


def head_tail_split(
    counts: Sequence[int] | torch.Tensor, ratio: float, ignore_absent: bool = False
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
    _check_ratio(ratio)
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

"""Head/tail class split of a long-tailed label distribution, and the per-group mean of a score.

Plain Python at import (no torch), so that figures and reports of finished runs load light.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
    values: list[int] = counts.tolist() if hasattr(counts, "tolist") else list(counts)
    if any(not isinstance(value, (int, float)) for value in values):
        raise ValueError(f"`counts` must be 1-D, one count per class, got {values!r}.")
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
    """Mean of ``per_class_f1`` over the ``head`` and over the ``tail`` classes; an empty group
    has no F1 and its key is left out (0.0 would read as a group the model always gets wrong)."""
    groups = {"head_f1": list(head), "tail_f1": list(tail)}
    return {name: per_class_f1[classes].mean() for name, classes in groups.items() if classes}


def empty_head_warning(counts: Sequence[int], ratio: float, label_names: Sequence[str] | None = None) -> str | None:
    """Why the head of :func:`head_tail_split` is empty, or None when it is not: the most
    frequent class alone holds at least ``ratio`` of the examples (named by ``label_names`` where given)."""
    total = sum(counts)
    if not total:
        return None
    top = max(range(len(counts)), key=lambda c: (counts[c], -c))
    share = counts[top] / total
    if share < ratio:
        return None
    name = f"class {top} ({label_names[top]})" if label_names is not None else f"class {top}"
    return (f"{name} alone holds {share:.1%} of the examples, not less than the head/tail ratio {ratio:g}: "
            "the head is empty, so head F1 is absent and every class is tail. Raise head_tail_ratio above "
            f"{share:.3f} for a head.")

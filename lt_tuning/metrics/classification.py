"""Multiclass metrics for long-tailed classification, built on per-class confusion counts.

All metrics keep the same ``tp``/``fp``/``fn`` count states, summed across processes, so
F1 values are computed from global counts rather than averaged over processes or batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from lt_tuning.metrics.split import _check_ratio, head_tail_split


def _per_class_f1(tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
    """F1 = 2tp / (2tp + fp + fn) per class, 0 where the denominator is 0."""
    # Where the denominator is 0, tp is 0 too, so clamping it to 1 yields exactly 0.
    return 2 * tp / (2 * tp + fp + fn).clamp(min=1)


class _ClassCounts(Metric):
    """Base class accumulating per-class true positives, false positives and false negatives.

    ``update`` takes ``preds`` as class indices ``[N]`` or scores ``[N, C]`` (logits or
    probabilities, reduced by argmax over the last dim) and ``target`` as class indices ``[N]``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    tp: Tensor
    fp: Tensor
    fn: Tensor

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"`num_classes` must be a positive int, got {num_classes!r}.")
        self.num_classes = num_classes
        for name in ("tp", "fp", "fn"):
            self.add_state(name, default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor) -> None:
        """Add the confusion counts of a batch."""
        if preds.ndim == 2:
            if preds.shape[1] != self.num_classes:
                raise ValueError(
                    f"`preds` scores must have shape [N, {self.num_classes}], got {tuple(preds.shape)}."
                )
            preds = preds.argmax(dim=-1)
        if preds.ndim != 1 or target.ndim != 1 or preds.shape != target.shape:
            raise ValueError(
                "Expected `preds` of shape [N] or [N, C] and `target` of shape [N], got "
                f"{tuple(preds.shape)} and {tuple(target.shape)}."
            )
        for name, labels in (("preds", preds), ("target", target)):
            if labels.is_floating_point():
                raise ValueError(f"`{name}` class indices must be an integer tensor, got {labels.dtype}.")
            if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
                raise ValueError(f"`{name}` class indices must be in [0, {self.num_classes}).")

        tp = torch.bincount(target[preds == target], minlength=self.num_classes)
        self.tp += tp
        self.fp += torch.bincount(preds, minlength=self.num_classes) - tp
        self.fn += torch.bincount(target, minlength=self.num_classes) - tp


class Accuracy(_ClassCounts):
    """Fraction of correctly classified examples; 0.0 before any example."""

    def compute(self) -> Tensor:
        """Return sum(tp) / N as a scalar float tensor."""
        correct = self.tp.sum()
        return correct / (correct + self.fn.sum()).clamp(min=1)


class PerClassF1(_ClassCounts):
    """F1 of each class, ``2tp / (2tp + fp + fn)``.

    A class with no true and no predicted example counts as F1 = 0, as sklearn's
    ``f1_score(..., labels=range(C), average=None)`` gives with its default ``zero_division``
    and as the reference code's head/tail F1 does.
    """

    def compute(self) -> Tensor:
        """Return a float tensor of shape ``[num_classes]``."""
        return _per_class_f1(self.tp, self.fp, self.fn)


class MacroF1(_ClassCounts):
    """Unweighted mean of per-class F1.

    By default the mean is over all ``num_classes`` classes, and absent classes (no true and no
    predicted example) count as 0. With ``ignore_absent=True`` it is over the classes with at
    least one true or predicted example only, which equals sklearn's
    ``f1_score(y, p, average="macro")`` without ``labels``: what the reference code's overall
    macro F1 computed. The two differ whenever an evaluated split lacks classes, e.g. MSRA test,
    where only 22 of 26 classes occur.
    """

    def __init__(self, num_classes: int, ignore_absent: bool = False, **kwargs: Any) -> None:
        super().__init__(num_classes, **kwargs)
        self.ignore_absent = ignore_absent

    def compute(self) -> Tensor:
        """Return the macro F1 as a scalar float tensor (0.0 if no class is counted)."""
        f1 = _per_class_f1(self.tp, self.fp, self.fn)
        if not self.ignore_absent:
            return f1.mean()
        present = (self.tp + self.fp + self.fn) > 0
        return f1[present].sum() / present.sum().clamp(min=1)


class HeadTailF1(_ClassCounts):
    """Mean per-class F1 over the head classes and over the tail classes.

    The split follows :func:`~lt_tuning.metrics.head_tail_split` with ``ratio``. If
    ``class_counts`` (the training split's class frequencies, the principled choice) is given,
    the split is computed from them once, at construction. Otherwise it is computed at
    ``compute`` time from the evaluated data's own support (``tp + fn`` over all processes),
    ignoring classes absent from the targets, exactly as the reference code does.

    Absent classes in a group count as F1 = 0 (see :class:`PerClassF1`). An empty group, and
    both groups before any example, give 0.0. ``split`` holds the fixed ``(head, tail)`` class
    lists, or ``None`` when the split comes from the evaluated data.
    """

    def __init__(
        self,
        num_classes: int,
        ratio: float = 0.65,
        class_counts: Sequence[int] | Tensor | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes, **kwargs)
        _check_ratio(ratio)
        self.ratio = ratio
        self.split: tuple[list[int], list[int]] | None = None
        if class_counts is not None:
            if len(class_counts) != num_classes:
                raise ValueError(f"`class_counts` has {len(class_counts)} entries, expected {num_classes}.")
            self.split = head_tail_split(class_counts, ratio)

    def _head_tail(self) -> tuple[list[int], list[int]]:
        if self.split is not None:
            return self.split
        support = self.tp + self.fn
        if not support.any():
            return [], []
        return head_tail_split(support, self.ratio, ignore_absent=True)

    def compute(self) -> dict[str, Tensor]:
        """Return ``{"head_f1": tensor, "tail_f1": tensor}`` with scalar float tensors."""
        f1 = _per_class_f1(self.tp, self.fp, self.fn)
        head, tail = self._head_tail()
        return {
            "head_f1": f1[head].mean() if head else f1.new_zeros(()),
            "tail_f1": f1[tail].mean() if tail else f1.new_zeros(()),
        }


class HeadF1(HeadTailF1):
    """Mean per-class F1 over the head classes; see :class:`HeadTailF1`."""

    def compute(self) -> Tensor:  # type: ignore[override]
        """Return the head F1 as a scalar float tensor."""
        return super().compute()["head_f1"]


class TailF1(HeadTailF1):
    """Mean per-class F1 over the tail classes; see :class:`HeadTailF1`."""

    def compute(self) -> Tensor:  # type: ignore[override]
        """Return the tail F1 as a scalar float tensor."""
        return super().compute()["tail_f1"]

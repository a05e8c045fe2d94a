"""Many-, medium- and few-shot classes by training counts, and the mean F1 of each group.

The long-tail literature's buckets (Liu et al., "Large-Scale Long-Tailed Recognition in an Open
World", CVPR 2019): many-shot classes have more than 100 training examples, medium-shot 20 to
100, few-shot fewer than 20. Unlike the study's head/tail rule (a share of all examples), the
buckets are absolute counts, so they compare across datasets and tell *which* rare classes fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor
from torchmetrics.classification import MulticlassF1Score

SHOTS = ("many", "medium", "few")
"""The shot buckets, most training examples first (Liu et al. 2019)."""
SHOT_THRESHOLDS = (100, 20)
"""Many-shot: more than 100 training examples; medium: 20 to 100; few: fewer than 20."""


def shot_buckets(train_counts: Sequence[int], thresholds: Sequence[int] = SHOT_THRESHOLDS) -> dict[str, list[int]]:
    """``{"many": [...], "medium": [...], "few": [...]}``: class indices with more than
    ``thresholds[0]`` training examples, from ``thresholds[1]`` to ``thresholds[0]``, and fewer
    than ``thresholds[1]`` (a class with none is few-shot)."""
    many, few = (int(value) for value in thresholds)
    if not 0 <= few <= many:
        raise ValueError(f"shot thresholds must be (many, few) with 0 <= few <= many, got {tuple(thresholds)}.")
    buckets: dict[str, list[int]] = {shot: [] for shot in SHOTS}
    for c, count in enumerate(train_counts):
        buckets["many" if count > many else "few" if count < few else "medium"].append(c)
    return buckets


class ShotF1(MulticlassF1Score):
    """Mean per-class F1 of the many-, medium- and few-shot classes (:func:`shot_buckets` of
    ``train_counts``), on the per-class counts every F1 of :func:`long_tailed_metrics` shares.

    ``over`` averages as :class:`~lt_tuning.metrics.MacroF1` does: ``"present"`` over the
    bucket's classes that occur in the evaluated targets or predictions, ``"all"`` over all of
    them (an absent one counting 0). A bucket with no class to average over has no F1: its
    key is left out of :meth:`compute`'s result (not 0.0, which would read as a total failure).
    ``buckets`` holds the classes of each bucket.
    """

    def __init__(self, num_classes: int, train_counts: Sequence[int], thresholds: Sequence[int] = SHOT_THRESHOLDS,
                 over: str = "present", **kwargs: Any) -> None:
        super().__init__(num_classes, average=None, **kwargs)
        if len(train_counts) != num_classes:
            raise ValueError(f"`train_counts` has {len(train_counts)} entries, expected {num_classes}.")
        self.buckets = shot_buckets(train_counts, thresholds)
        self.over = over

    def compute(self) -> dict[str, Tensor]:
        """``{"many_f1": ..., "medium_f1": ..., "few_f1": ...}``, scalar tensors; empty buckets left out."""
        tp, fp, _, fn = self._final_state()
        per_class = super().compute()
        seen = (tp + fp + fn) > 0
        result = {}
        for shot, classes in self.buckets.items():
            averaged = [c for c in classes if self.over == "all" or seen[c]]
            if averaged:
                result[f"{shot}_f1"] = per_class[averaged].mean()
        return result

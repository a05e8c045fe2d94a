"""Expected calibration error, overall and over the examples of a group of classes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassCalibrationError
from torchmetrics.utilities.data import dim_zero_cat

ECE_BINS = 15
"""Confidence bins of the expected calibration error (torchmetrics' default)."""


class ClassGroupCalibrationError(MulticlassCalibrationError):
    """torchmetrics' expected calibration error (``n_bins`` equal-width confidence bins, L1)
    over the examples whose *true* class is in ``classes`` (None: all examples).

    ``compute`` gives NaN when no such example was seen, so that the caller can leave it out.
    """

    def __init__(self, num_classes: int, classes: Sequence[int] | None = None, n_bins: int = ECE_BINS,
                 **kwargs: Any) -> None:
        super().__init__(num_classes, n_bins=n_bins, **kwargs)
        self.classes = None if classes is None else torch.as_tensor(list(classes), dtype=torch.long)

    def update(self, preds: Tensor, target: Tensor) -> None:
        if self.classes is not None:
            chosen = torch.isin(target, self.classes.to(target.device))
            preds, target = preds[chosen], target[chosen]
        if target.numel():
            super().update(preds, target)

    def compute(self) -> Tensor:
        # a list of batches in one process; one tensor once synced across processes
        seen = self.confidences if isinstance(self.confidences, Tensor) else \
            dim_zero_cat(self.confidences) if self.confidences else torch.empty(0)
        if seen.numel() == 0:
            return torch.tensor(float("nan"))
        return super().compute()


def calibration_metrics(num_classes: int, groups: Mapping[str, Sequence[int]] | None = None,
                        prefix: str = "ece") -> MetricCollection:
    """``{prefix}`` over all examples and ``{group}_{prefix}`` over each group's examples (e.g.
    the many/medium/few-shot buckets), of probabilities ``[N, C]`` and targets ``[N]``.

    No compute groups: the metrics see different examples, however alike their first batch.
    """
    metrics = {prefix: ClassGroupCalibrationError(num_classes)}
    metrics.update({f"{name}_{prefix}": ClassGroupCalibrationError(num_classes, classes)
                    for name, classes in (groups or {}).items()})
    return MetricCollection(metrics, compute_groups=False)

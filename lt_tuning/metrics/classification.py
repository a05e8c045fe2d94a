"""The metrics of long-tailed classification, on torchmetrics' per-class stat scores.

torchmetrics counts true/false positives and negatives per class (``average=None`` states,
summed across processes, so F1 comes from global counts, never from averaged batches or
ranks). lt-tuning adds only the study's macro F1 option and the head/tail and many/medium/few
reductions. Every F1 of :func:`long_tailed_metrics` keeps the same per-class states, so its
``MetricCollection`` holds them once (one compute group); the confusion matrix is the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score
from torchmetrics.utilities import rank_zero_warn

from lt_tuning.metrics.shots import SHOT_THRESHOLDS, ShotF1
from lt_tuning.metrics.split import check_ratio, empty_head_warning, head_tail_f1, head_tail_split

MacroOver = Literal["present", "all"]
"""The classes macro F1 averages over: those present in the labels or predictions (the study's,
scikit-learn's), or all (an absent class counts 0)."""


class MacroF1(MulticlassF1Score):
    """Unweighted mean of per-class F1.

    ``over="present"`` (default, the study's definition) averages over the classes that occur
    in the targets or the predictions, as scikit-learn's ``f1_score(y, p, average="macro")``
    does: torchmetrics' macro average already leaves out classes with ``tp + fp + fn = 0``.
    ``over="all"`` averages over all ``num_classes``, an absent class counting 0; the two
    differ when an evaluated split lacks classes (MSRA test has 22 of its 26).
    """

    def __init__(self, num_classes: int, over: MacroOver = "present", **kwargs: Any) -> None:
        if over not in ("present", "all"):
            raise ValueError(f"`over` must be 'present' or 'all', got {over!r}.")
        super().__init__(num_classes, average="macro" if over == "present" else None, **kwargs)
        self.over = over

    def compute(self) -> Tensor:
        """The macro F1 as a scalar float tensor."""
        f1 = super().compute()
        return f1 if self.over == "present" else f1.mean()


class HeadTailF1(MulticlassF1Score):
    """Mean per-class F1 over the head classes and over the tail classes.

    The split follows :func:`~lt_tuning.metrics.head_tail_split` with ``ratio``. Without
    ``class_counts`` it comes, at ``compute`` time, from the evaluated data's own support
    (``tp + fn`` over all processes; classes absent from the targets are in neither group),
    as the study's code does. With ``class_counts`` (e.g. the training split's, the principled
    choice) it is fixed at construction and absent classes count F1 = 0 in their group.
    ``split`` holds that fixed ``(head, tail)``, or ``None``; ``last_split`` and ``last_counts``
    the split and the per-class counts of the latest ``compute`` (either rule), to report them.
    When one class alone holds ``ratio`` of the examples or more, the head is empty: ``compute``
    warns, naming the class and its share, and leaves ``head_f1`` out.
    """

    def __init__(self, num_classes: int, ratio: float = 0.65, class_counts: Sequence[int] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(num_classes, average=None, **kwargs)
        check_ratio(ratio)
        self.ratio = ratio
        self.split: tuple[list[int], list[int]] | None = None
        self.counts = None if class_counts is None else [int(count) for count in class_counts]
        if self.counts is not None:
            if len(self.counts) != num_classes:
                raise ValueError(f"`class_counts` has {len(self.counts)} entries, expected {num_classes}.")
            self.split = head_tail_split(self.counts, ratio)
        self.last_split: tuple[list[int], list[int]] | None = None
        self.last_counts: list[int] | None = None
        self.label_names: list[str] | None = None  # names the class of an empty-head warning (a module sets it)

    def compute(self) -> dict[str, Tensor]:
        """``{"head_f1": tensor, "tail_f1": tensor}``, scalar float tensors; an empty group's key left out."""
        split, counts = self.split, self.counts
        if split is None:
            tp, _, _, fn = self._final_state()
            counts = (tp + fn).tolist()
            split = head_tail_split(counts, self.ratio, ignore_absent=True) if any(counts) else ([], [])
        self.last_split, self.last_counts = split, counts
        reason = empty_head_warning(counts, self.ratio, self.label_names) if not split[0] else None
        if reason:
            rank_zero_warn(f"Head/tail split: {reason}")
        return head_tail_f1(super().compute(), *split)


def long_tailed_metrics(num_classes: int, ratio: float = 0.65, class_counts: Sequence[int] | None = None,
                        f1_over: MacroOver = "present", train_counts: Sequence[int] | None = None,
                        shot_thresholds: Sequence[int] = SHOT_THRESHOLDS) -> MetricCollection:
    """``acc``, ``f1`` (:class:`MacroF1`), ``per_class_f1``, ``head_f1``/``tail_f1`` and, given
    the training counts, ``many_f1``/``medium_f1``/``few_f1`` (:class:`~lt_tuning.metrics.ShotF1`),
    all on one set of per-class counts (a single compute group); and ``confusion``, the
    confusion matrix (rows: true class), where the errors go."""
    metrics = {
        # Support-weighted per-class recall is sum(tp) / N, plain accuracy; "micro" would keep
        # a state of its own instead of sharing the per-class counts.
        "acc": MulticlassAccuracy(num_classes, average="weighted"),
        "f1": MacroF1(num_classes, over=f1_over),
        "per_class_f1": MulticlassF1Score(num_classes, average=None),
        "head_tail": HeadTailF1(num_classes, ratio=ratio, class_counts=class_counts),
        "confusion": MulticlassConfusionMatrix(num_classes),
    }
    if train_counts is not None:
        metrics["shots"] = ShotF1(num_classes, train_counts, shot_thresholds, over=f1_over)
    return MetricCollection(metrics)

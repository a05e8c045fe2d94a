"""Metrics for long-tailed classification: the study's macro F1 and head/tail F1 on torchmetrics."""

from lt_tuning.metrics.classification import HeadTailF1, MacroF1, MacroOver, long_tailed_metrics
from lt_tuning.metrics.split import head_tail_f1, head_tail_split

__all__ = ["HeadTailF1", "MacroF1", "MacroOver", "head_tail_f1", "head_tail_split", "long_tailed_metrics"]

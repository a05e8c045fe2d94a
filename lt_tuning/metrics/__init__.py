"""Metrics for long-tailed classification: accuracy, macro/per-class F1, head/tail F1."""

from __future__ import annotations

from lt_tuning.metrics.classification import Accuracy, HeadF1, HeadTailF1, MacroF1, PerClassF1, TailF1
from lt_tuning.metrics.split import head_tail_split

__all__ = ["Accuracy", "HeadF1", "HeadTailF1", "MacroF1", "PerClassF1", "TailF1", "head_tail_split"]

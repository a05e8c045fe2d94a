"""Metrics for long-tailed classification: the study's macro F1 and head/tail F1, many/medium/few-shot
F1, where the errors go and calibration, on torchmetrics.

The names load on first use (PEP 562): the head/tail split and the shot buckets, plain Python,
serve figures and reports without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lt_tuning._lazy import lazy_names

_EXPORTS = {
    "ECE_BINS": "calibration", "ClassGroupCalibrationError": "calibration", "calibration_metrics": "calibration",
    "HeadTailF1": "classification", "MacroF1": "classification", "MacroOver": "classification",
    "long_tailed_metrics": "classification",
    "tail_to_head_share": "confusion", "top_confusions": "confusion",
    "SHOTS": "shots", "SHOT_THRESHOLDS": "shots", "ShotF1": "shots", "shot_buckets": "shots",
    "empty_head_warning": "split", "head_tail_f1": "split", "head_tail_split": "split",
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_names(__name__, _EXPORTS)


if TYPE_CHECKING:
    from lt_tuning.metrics.calibration import ECE_BINS, ClassGroupCalibrationError, calibration_metrics
    from lt_tuning.metrics.classification import HeadTailF1, MacroF1, MacroOver, long_tailed_metrics
    from lt_tuning.metrics.confusion import tail_to_head_share, top_confusions
    from lt_tuning.metrics.shots import SHOT_THRESHOLDS, SHOTS, ShotF1, shot_buckets
    from lt_tuning.metrics.split import empty_head_warning, head_tail_f1, head_tail_split

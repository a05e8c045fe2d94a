"""Lightning callbacks of lt-tuning, by family: evaluation outputs, training control, pretraining."""

from lt_tuning.callbacks.outputs import PlotWriter, PredictionWriter, TestMetricsWriter
from lt_tuning.callbacks.pretraining import MaskedLMExport
from lt_tuning.callbacks.training import EpochPatienceEarlyStopping, StepSeed, ValidateLastStep

__all__ = ["EpochPatienceEarlyStopping", "MaskedLMExport", "PlotWriter", "PredictionWriter", "StepSeed",
           "TestMetricsWriter", "ValidateLastStep"]

"""lt-tuning: make pretrained language models good long-tailed learners."""

from lt_tuning.data import (
    CMIDDataModule,
    CTCDataModule,
    IFLYTEKDataModule,
    LongTailedDataModule,
    MSRADataModule,
    R52DataModule,
    TextClassificationDataModule,
)
from lt_tuning.models import ClsTuningModule, PromptTuningModule

__version__ = "0.1.0"

__all__ = [
    "CMIDDataModule",
    "CTCDataModule",
    "ClsTuningModule",
    "IFLYTEKDataModule",
    "LongTailedDataModule",
    "MSRADataModule",
    "PromptTuningModule",
    "R52DataModule",
    "TextClassificationDataModule",
]

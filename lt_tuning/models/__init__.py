"""LightningModules of the study: CLS-tuning and prompt-tuning, and their losses."""

from lt_tuning.models.base import LongTailedClassifier
from lt_tuning.models.cls_tuning import ClsTuningModule
from lt_tuning.models.masked_lm import MaskedLMPretrainingModule
from lt_tuning.models.losses import classification_loss, focal_loss, focal_loss_reference
from lt_tuning.models.prompt_tuning import PromptTuningModule

__all__ = [
    "ClsTuningModule",
    "LongTailedClassifier",
    "MaskedLMPretrainingModule",
    "PromptTuningModule",
    "classification_loss",
    "focal_loss",
    "focal_loss_reference",
]

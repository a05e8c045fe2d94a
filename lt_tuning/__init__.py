"""lt-tuning: make pretrained language models good long-tailed learners."""

from lt_tuning.callbacks import MaskedLMExport, PlotWriter, TestMetricsWriter
from lt_tuning.data import (
    CMIDDataModule,
    CTCDataModule,
    IFLYTEKDataModule,
    LongTailedDataModule,
    MaskedLMCorpusDataModule,
    MSRADataModule,
    R52DataModule,
    TextClassificationDataModule,
)
from lt_tuning.early_stopping import EpochPatienceEarlyStopping
from lt_tuning.inference import TextClassifier, export_classifier, load_classifier
from lt_tuning.models import ClsTuningModule, MaskedLMPretrainingModule, PromptTuningModule
from lt_tuning.plots import (
    class_distribution_figure,
    per_class_f1_figure,
    save_figure,
    weight_norms_figure,
)
from lt_tuning.recipe import fit_and_test, recipe_trainer
from lt_tuning.verbalizer import Verbalizer

__version__ = "0.1.0"

__all__ = [
    "CMIDDataModule",
    "CTCDataModule",
    "ClsTuningModule",
    "EpochPatienceEarlyStopping",
    "IFLYTEKDataModule",
    "LongTailedDataModule",
    "MSRADataModule",
    "MaskedLMCorpusDataModule",
    "MaskedLMExport",
    "MaskedLMPretrainingModule",
    "PlotWriter",
    "PromptTuningModule",
    "R52DataModule",
    "TestMetricsWriter",
    "TextClassificationDataModule",
    "TextClassifier",
    "Verbalizer",
    "class_distribution_figure",
    "export_classifier",
    "fit_and_test",
    "load_classifier",
    "per_class_f1_figure",
    "recipe_trainer",
    "save_figure",
    "weight_norms_figure",
]

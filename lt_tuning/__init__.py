"""lt-tuning: make pretrained language models good long-tailed learners.

The public names load on first use (PEP 562), so that ``import lt_tuning`` and the ``lt-tuning``
command import torch, Lightning and transformers only where a name needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lt_tuning._lazy import lazy_names

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "MaskedLMExport": "lt_tuning.callbacks",
    "PlotWriter": "lt_tuning.callbacks",
    "TestMetricsWriter": "lt_tuning.callbacks",
    "CMIDDataModule": "lt_tuning.data",
    "CTCDataModule": "lt_tuning.data",
    "IFLYTEKDataModule": "lt_tuning.data",
    "LongTailedDataModule": "lt_tuning.data",
    "MaskedLMCorpusDataModule": "lt_tuning.data",
    "MSRADataModule": "lt_tuning.data",
    "R52DataModule": "lt_tuning.data",
    "TextClassificationDataModule": "lt_tuning.data",
    "EpochPatienceEarlyStopping": "lt_tuning.callbacks",
    "TextClassifier": "lt_tuning.classifier",
    "load_classifier": "lt_tuning.classifier",
    "export_classifier": "lt_tuning.inference",
    "ClsTuningModule": "lt_tuning.models",
    "MaskedLMPretrainingModule": "lt_tuning.models",
    "PromptTuningModule": "lt_tuning.models",
    "class_distribution_figure": "lt_tuning.plots",
    "confusion_matrix_figure": "lt_tuning.plots",
    "per_class_f1_figure": "lt_tuning.plots",
    "save_figure": "lt_tuning.plots",
    "weight_norms_figure": "lt_tuning.plots",
    "fit_and_test": "lt_tuning.recipe",
    "ClassifierSettings": "lt_tuning.settings",
    "recipe_trainer": "lt_tuning.recipe",
    "TuneSettings": "lt_tuning.tuning",
    "tune": "lt_tuning.tuning",
    "Verbalizer": "lt_tuning.verbalizer",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_names(__name__, _EXPORTS)


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from lt_tuning.callbacks import EpochPatienceEarlyStopping, MaskedLMExport, PlotWriter, TestMetricsWriter
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
    from lt_tuning.classifier import TextClassifier, load_classifier
    from lt_tuning.inference import export_classifier
    from lt_tuning.models import ClsTuningModule, MaskedLMPretrainingModule, PromptTuningModule
    from lt_tuning.plots import (
        class_distribution_figure,
        confusion_matrix_figure,
        per_class_f1_figure,
        save_figure,
        weight_norms_figure,
    )
    from lt_tuning.recipe import fit_and_test, recipe_trainer
    from lt_tuning.settings import ClassifierSettings
    from lt_tuning.tuning import TuneSettings, tune
    from lt_tuning.verbalizer import Verbalizer

"""Long-tailed datasets as LightningDataModules, and prompt templates.

The names load on first use (PEP 562), as in :mod:`lt_tuning`: a module of this package that
needs no Lightning (:mod:`~lt_tuning.data.reading`, :mod:`~lt_tuning.data.prompt`,
:mod:`~lt_tuning.data.encoding`) imports none when used alone, e.g. by an ONNX classifier.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lt_tuning._lazy import lazy_names

# public name -> the module of this package that defines it
_EXPORTS = {
    "MaskedLMCorpusDataModule": "corpus",
    "LongTailedDataModule": "datamodule",
    "Template": "prompt",
    "add_pseudo_tokens": "prompt",
    "DataFileError": "reading",
    "read_labelled_file": "reading",
    "BlockSampler": "sampler",
    "DistributedLengthGroupedSampler": "sampler",
    "LengthGroupedBatchSampler": "sampler",
    "RELEASE_URL": "sources",
    "download_task": "sources",
    "resolve_task_dir": "sources",
    "train_wordpiece_tokenizer": "vocab",
    "CMIDDataModule": "tasks",
    "CTCDataModule": "tasks",
    "IFLYTEKDataModule": "tasks",
    "MSRADataModule": "tasks",
    "R52DataModule": "tasks",
    "ReleasedTaskDataModule": "tasks",
    "TaskSpec": "tasks",
    "TextClassificationDataModule": "tasks",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_names(__name__, _EXPORTS)


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, eagerly
    from lt_tuning.data.corpus import MaskedLMCorpusDataModule
    from lt_tuning.data.datamodule import LongTailedDataModule
    from lt_tuning.data.prompt import Template, add_pseudo_tokens
    from lt_tuning.data.reading import DataFileError, read_labelled_file
    from lt_tuning.data.sampler import BlockSampler, DistributedLengthGroupedSampler, LengthGroupedBatchSampler
    from lt_tuning.data.sources import RELEASE_URL, download_task, resolve_task_dir
    from lt_tuning.data.tasks import (
        CMIDDataModule,
        CTCDataModule,
        IFLYTEKDataModule,
        MSRADataModule,
        R52DataModule,
        ReleasedTaskDataModule,
        TaskSpec,
        TextClassificationDataModule,
    )
    from lt_tuning.data.vocab import train_wordpiece_tokenizer

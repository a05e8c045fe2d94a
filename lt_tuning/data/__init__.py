"""Long-tailed datasets as LightningDataModules, and prompt templates."""

from lt_tuning.data.corpus import MaskedLMCorpusDataModule
from lt_tuning.data.datamodule import LongTailedDataModule
from lt_tuning.data.prompt import Template, add_pseudo_tokens
from lt_tuning.data.reading import DataFileError, read_labelled_file
from lt_tuning.data.sampler import BlockSampler, DistributedLengthGroupedSampler, LengthGroupedBatchSampler
from lt_tuning.data.sources import RELEASE_URL, download_task, resolve_task_dir
from lt_tuning.data.vocab import train_wordpiece_tokenizer
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

__all__ = [
    "CMIDDataModule",
    "CTCDataModule",
    "BlockSampler",
    "DataFileError",
    "DistributedLengthGroupedSampler",
    "IFLYTEKDataModule",
    "LengthGroupedBatchSampler",
    "LongTailedDataModule",
    "MaskedLMCorpusDataModule",
    "MSRADataModule",
    "R52DataModule",
    "RELEASE_URL",
    "ReleasedTaskDataModule",
    "TaskSpec",
    "Template",
    "TextClassificationDataModule",
    "add_pseudo_tokens",
    "download_task",
    "read_labelled_file",
    "resolve_task_dir",
    "train_wordpiece_tokenizer",
]

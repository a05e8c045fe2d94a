"""One DataModule per long-tailed dataset of the study, and one for the user's own data.

The study's defaults (text fields, template, max_length, head/tail ratio, backbone) live in
one :class:`TaskSpec` per dataset; an argument left at None takes the task's default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import FunctionType
from typing import Any, ClassVar

import datasets

from lt_tuning.data.datamodule import LongTailedDataModule
from lt_tuning.data.reading import columns_from_rows
from lt_tuning.data.sources import resolve_task_dir


@dataclass(frozen=True)
class TaskSpec:
    """The study's settings for one dataset (``shared/reference/PAPER.md``)."""

    name: str
    text_fields: tuple[str, ...]
    template: str
    max_length: int
    head_tail_ratio: float
    backbone: str


class ReleasedTaskDataModule(LongTailedDataModule):
    """A dataset of the study, as the authors released it (TSV splits, label2idx, verbalizer).

    Files are found by :func:`lt_tuning.data.sources.resolve_task_dir`: ``data_dir``, then
    ``$LT_TUNING_DATA/<task>``, then the user cache, else a download of the release.
    Arguments left at None take the task's defaults (see the subclass docstring).
    """

    spec: ClassVar[TaskSpec]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Give each task's ``__init__`` the task's defaults, so that ``--print_config`` and
        ``--data.help`` show the values a run uses rather than None."""
        super().__init_subclass__(**kwargs)
        if "spec" in cls.__dict__:
            base, spec = ReleasedTaskDataModule.__init__, cls.spec
            task = {"model_name_or_path": spec.backbone, "template": spec.template, "max_length": spec.max_length,
                    "head_tail_ratio": spec.head_tail_ratio}
            names = base.__code__.co_varnames[1 : base.__code__.co_argcount]  # the parameters after self
            defaults = tuple(task.get(name, default) for name, default in zip(names, base.__defaults__))
            init = FunctionType(base.__code__, base.__globals__, base.__name__, defaults, base.__closure__)
            init.__kwdefaults__, init.__annotations__ = base.__kwdefaults__, base.__annotations__
            init.__module__, init.__qualname__ = base.__module__, f"{cls.__qualname__}.__init__"
            cls.__init__ = init

    def __init__(
        self,
        data_dir: str | None = None,
        model_name_or_path: str | None = None,
        template: str | None = None,
        max_length: int | None = None,
        head_tail_ratio: float | None = None,
        download_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        spec = self.spec
        super().__init__(
            model_name_or_path=spec.backbone if model_name_or_path is None else model_name_or_path,
            text_fields=spec.text_fields,
            template=spec.template if template is None else template,
            max_length=spec.max_length if max_length is None else max_length,
            head_tail_ratio=spec.head_tail_ratio if head_tail_ratio is None else head_tail_ratio,
            **kwargs,
        )
        self.data_dir = data_dir
        self.download_url = download_url

    @cached_property
    def task_dir(self) -> Path:
        """The task's folder: ``data_dir``, ``$LT_TUNING_DATA``, the cache, else a download into the cache."""
        return resolve_task_dir(self.spec.name, self.data_dir, self.download_url)

    def prepare_data(self) -> None:
        """Find (or download, once, on rank 0) the task's files."""
        self.task_dir

    def split_path(self, split: str) -> Path:
        return self.task_dir / f"{split}.tsv"

    def default_labels(self) -> Path:
        return self.task_dir / "label2idx.json"

    def default_verbalizer_path(self) -> Path:
        return self.task_dir / "verbalizer.json"


class CMIDDataModule(ReleasedTaskDataModule):
    """CMID: Chinese medical question intent, 36 classes; max_length 64, head/tail ratio 0.65."""

    spec = TaskSpec("cmid", ("text",), "{cls}{text_a}？这个问题的意图是{mask}。{sep}", 64, 0.65, "bert-base-chinese")


class IFLYTEKDataModule(ReleasedTaskDataModule):
    """IFLYTEK: app description -> category, 119 classes; max_length 512, ratio 0.65."""

    spec = TaskSpec("iflytek", ("text",), "{cls}{text_a}。这句话描述的物品属于{mask}。{sep}", 512, 0.65, "bert-base-chinese")


class CTCDataModule(ReleasedTaskDataModule):
    """CTC: clinical trial criterion type, 44 classes; max_length 64, ratio 0.8."""

    spec = TaskSpec("ctc", ("text",), "{cls}{text_a}。这个标准的类别是{mask}。{sep}", 64, 0.8, "bert-base-chinese")


class MSRADataModule(ReleasedTaskDataModule):
    """MSRA entity typing: (sentence, entity) -> type, 26 classes; max_length 128, ratio 0.55."""

    spec = TaskSpec(
        "msra", ("text", "entity"), "{cls}{text_a}。这句话中的{text_b}是{mask}。{sep}", 128, 0.55, "bert-base-chinese"
    )


class R52DataModule(ReleasedTaskDataModule):
    """R52: Reuters news topic (English), 52 classes; max_length 256, ratio 0.55."""

    spec = TaskSpec("r52", ("text",), "{cls}{text_a} This is {mask} news . {sep}", 256, 0.55, "bert-base-uncased")


#: The study's datasets by name.
TASKS: dict[str, TaskSpec] = {
    module.spec.name: module.spec
    for module in (CMIDDataModule, IFLYTEKDataModule, CTCDataModule, MSRADataModule, R52DataModule)
}


#: The names a ``datasets`` dataset may give each of our splits, tried in order.
DATASET_SPLIT_NAMES = {"train": ("train",), "dev": ("validation", "dev"), "test": ("test",)}


class TextClassificationDataModule(LongTailedDataModule):
    """The user's own long-tailed data: files (TSV, CSV, JSON lines) or a ``datasets`` dataset.

    Args:
        train_file: path of the training split (header row for TSV/CSV).
        dev_file: path of the dev split. Without a dev split, fit trains with no validation
            and the final weights are tested.
        test_file: path of the test split.
        dataset_name: instead of files, a ``datasets`` dataset: from Python a ``DatasetDict``;
            by name, a folder written by ``save_to_disk`` or a name for ``datasets.load_dataset``
            (a hub dataset, or a builder such as ``"csv"`` with ``dataset_kwargs={"data_files": ...}``).
        dataset_kwargs: extra arguments of ``load_dataset``.
        split_names: our split (train, dev, test) -> the dataset's split name; by default
            ``train``, ``validation`` or ``dev``, ``test``.
        labels: label names in index order, or a label2idx.json path; default: the names of
            the dataset's label column if it is a ``ClassLabel``.
        **kwargs: as :class:`LongTailedDataModule` (among them ``verbalizer``: label (name or
            index) -> word, or a JSON path, needed for prompt format).
    """

    def __init__(
        self,
        model_name_or_path: str,
        labels: Sequence[str | int] | str | None = None,
        train_file: str | None = None,
        dev_file: str | None = None,
        test_file: str | None = None,
        dataset_name: str | datasets.DatasetDict | None = None,
        dataset_kwargs: dict[str, Any] | None = None,
        split_names: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name_or_path=model_name_or_path, labels=labels, **kwargs)
        self.files = {"train": train_file, "dev": dev_file, "test": test_file}
        if dataset_name is None and not any(self.files.values()):
            raise ValueError("Give train_file/dev_file/test_file, or a dataset_name (a DatasetDict, a save_to_disk "
                             "folder or a name for datasets.load_dataset).")
        self.dataset_name = dataset_name
        self.dataset_kwargs = dict(dataset_kwargs or {})
        self.split_names = dict(split_names or {})

    @cached_property
    def _source_dataset(self) -> Mapping[str, datasets.Dataset]:
        """The ``datasets`` splits by the dataset's own split names (``dataset_name`` loaded)."""
        source = self.dataset_name
        if isinstance(source, str):
            saved = Path(source, "dataset_dict.json").is_file() or Path(source, "state.json").is_file()
            source = datasets.load_from_disk(source) if saved else datasets.load_dataset(source, **self.dataset_kwargs)
        if not isinstance(source, Mapping):
            raise TypeError(f"{self._dataset_label}: a {type(source).__name__} without splits; give a DatasetDict "
                            "such as DatasetDict(train=..., validation=..., test=...).")
        return source

    @property
    def _dataset_label(self) -> str:
        return self.dataset_name if isinstance(self.dataset_name, str) else "dataset"

    def _split_candidates(self, split: str) -> tuple[str, ...]:
        return (self.split_names[split],) if split in self.split_names else DATASET_SPLIT_NAMES[split]

    def _dataset_split(self, split: str) -> str | None:
        """The dataset's name of ``split``; None when it has no such split."""
        return next((name for name in self._split_candidates(split) if name in self._source_dataset), None)

    def has_split(self, split: str) -> bool:
        if self.dataset_name is None:
            return self.files[split] is not None
        return self._dataset_split(split) is not None

    def split_source(self, split: str) -> str:
        if self.dataset_name is None:
            return super().split_source(split)
        return f"{split} split ({self._dataset_label}[{self._dataset_split(split)}])"

    def default_labels(self) -> list[str] | None:
        """The names of the dataset's ``ClassLabel`` label column, if it has one."""
        if self.dataset_name is None:
            return None
        features = (rows.features.get(self.label_field) for rows in self._source_dataset.values())
        return next((feature.names for feature in features if isinstance(feature, datasets.ClassLabel)), None)

    def split_path(self, split: str) -> Path:
        if self.files[split] is None:
            raise FileNotFoundError(f"No {split}_file configured for the {split} split.")
        return Path(self.files[split])

    def read_split(self, split: str) -> dict[str, list]:
        if self.dataset_name is None:
            return super().read_split(split)
        name = self._dataset_split(split)
        if name is None:
            raise FileNotFoundError(
                f"{self._dataset_label} has no {split} split: no split named "
                f"{' or '.join(map(repr, self._split_candidates(split)))} among {list(self._source_dataset)}. "
                f"Name it in split_names (split_names={{'{split}': <its name>}})."
            )
        rows = self._source_dataset[name]
        feature = rows.features.get(self.label_field)
        if isinstance(feature, datasets.ClassLabel):  # stored as ints: back to the names we match on
            rows = ({**row, self.label_field: feature.int2str(row[self.label_field])} for row in rows)
        source = f"{self._dataset_label}[{name}]"
        return columns_from_rows(enumerate(rows, start=1), source, self.text_fields, self.label_field, self.label2idx)

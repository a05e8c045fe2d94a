"""The LightningDataModule shared by every long-tailed dataset.

It composes the label space (:mod:`.labels`), the encodings in CLS or prompt format
(:mod:`.encoding`), the class statistics (:mod:`.statistics`) and the loaders (:mod:`.loaders`),
and keeps the training loader's place for resuming.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import datasets
import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import DataLoader
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from lt_tuning.data.encoding import InputFormat, encode_columns, load_tokenizer
from lt_tuning.data.labels import load_label_names, load_label_words
from lt_tuning.data.loaders import ResumableDataLoader, eval_loader, shuffle_seed, train_loader, world
from lt_tuning.data.prompt import Template
from lt_tuning.data.reading import read_labelled_file
from lt_tuning.data.sources import cache_root
from lt_tuning.data.statistics import count_classes, warn_absent_classes
from lt_tuning.metrics.split import check_ratio, head_tail_split
from lt_tuning.verbalizer import Verbalizer

SPLITS = ("train", "dev", "test")


class LongTailedDataModule(pl.LightningDataModule):
    """Labelled text splits -> tokenized, dynamically padded batches, plus head/tail statistics.

    Subclasses say where each split's rows come from (:meth:`split_path`); this class does the
    rest. Args:
        model_name_or_path: tokenizer to load with ``AutoTokenizer`` (hub name or local folder).
        text_fields: one or two column names (``text_a``, ``text_b``).
        label_field: column holding the label: its name, or its index 0..K-1 in ``labels``;
            None: the data has no labels (``predict`` on new text).
        labels: label names in index order, or a path to a ``label2idx.json``.
        verbalizer: label (name or index) -> word or phrase, or a path to such a JSON, for prompt format.
        template: prompt template with ``{mask}`` and ``{text_a}`` (and ``{text_b}``).
        max_length: longest encoded sequence; only text is truncated, never the template.
        head_tail_ratio: running share of examples below which a class is head.
        head_tail_from: ``"eval"`` (default) splits head/tail by each evaluated split's own
            frequencies, as the study did, so numbers compare with its tables; ``"train"`` by
            the training frequencies, the principled choice (a class is head or tail once).
        input_format: ``"cls"`` or ``"prompt"``, the encoding the model needs. The model declares
            it (its ``input_format``) and the lt-tuning CLI passes it on; in Python give the
            module's. None: not yet known (``setup`` says to set it).
        group_by_length: training batches of similar lengths (random across groups, see
            :class:`~lt_tuning.data.sampler.LengthGroupedBatchSampler`); less padding.
        limit_examples: keep only the first N rows of every split (quick runs, tests).
        predict_split: the split that ``predict`` runs on.
        cache_dir: where tokenized splits are cached (default ``<cache root>/tokenized``).
    """

    def __init__(
        self,
        model_name_or_path: str,
        text_fields: Sequence[str] = ("text",),
        label_field: str | None = "label",
        labels: Sequence[str | int] | str | None = None,
        verbalizer: Mapping[str | int, str] | str | None = None,
        template: str = "{cls}{text_a}{sep}",
        max_length: int = 128,
        head_tail_ratio: float = 0.65,
        head_tail_from: Literal["train", "eval"] = "eval",
        input_format: InputFormat | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        group_by_length: bool = False,
        num_workers: int = 0,
        limit_examples: int | None = None,
        predict_split: Literal["train", "dev", "test"] = "test",
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if len(text_fields) not in (1, 2):
            raise ValueError(f"text_fields must name one or two columns, got {list(text_fields)}.")
        check_ratio(head_tail_ratio, "head_tail_ratio")
        self.model_name_or_path = model_name_or_path
        self.text_fields = list(text_fields)
        self.label_field = label_field
        self.labels = labels
        self._verbalizer = verbalizer
        self.template = template
        self.max_length = max_length
        self.head_tail_ratio = head_tail_ratio
        self.head_tail_from = head_tail_from
        self.input_format = input_format
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.group_by_length = group_by_length
        self.num_workers = num_workers
        self.limit_examples = limit_examples
        self.predict_split = predict_split
        self.cache_dir = Path(cache_dir) if cache_dir else cache_root() / "tokenized"
        self.datasets: dict[str, datasets.Dataset] = {}
        self.examples: dict[str, dict[str, list]] = {}
        self._train_loader: ResumableDataLoader | None = None
        self._train_loader_state: dict[str, Any] | None = None

    # --- where rows come from (subclasses) ---------------------------------------------

    def split_path(self, split: str) -> Path:
        """Path of ``split``'s file; subclasses must say where their data lives."""
        raise NotImplementedError

    def default_labels(self) -> Sequence[str] | Path | None:
        """The label names, or where to find ``label2idx.json``, when ``labels`` is not given."""
        return None

    def default_verbalizer_path(self) -> Path | None:
        """Where to find ``verbalizer.json`` when ``verbalizer`` is not given."""
        return None

    def has_split(self, split: str) -> bool:
        """Whether the data has ``split`` at all. A released task has all three (a missing file is an
        error, naming it, when the split is read); without a dev split, fit trains with no validation."""
        return True

    def split_source(self, split: str) -> str:
        """Where ``split``'s rows come from, for messages: ``"dev split (path/dev.tsv)"``."""
        try:
            return f"{split} split ({self.split_path(split)})"
        except FileNotFoundError:  # no file configured for this split
            return f"{split} split"

    def read_split(self, split: str) -> dict[str, list]:
        """Raw validated columns ``text_a`` (``text_b``) ``label`` of ``split``."""
        path = self.split_path(split)
        if not path.is_file():
            raise FileNotFoundError(
                f"The {split} split file is missing: {path}. Put the file there or point the DataModule at the "
                "folder or file that holds it."
            )
        return read_labelled_file(path, self.text_fields, self.label_field, self.label2idx)

    # --- label space, tokenizer, template, verbalizer ----------------------------------

    @cached_property
    def label_names(self) -> list[str]:
        """Label names in index order."""
        return load_label_names(self.labels if self.labels is not None else self.default_labels())

    @property
    def label2idx(self) -> dict[str, int]:
        """Label name -> class index, in ``label_names`` order."""
        return {label: index for index, label in enumerate(self.label_names)}

    @property
    def num_classes(self) -> int:
        """The number of classes, ``len(label_names)``."""
        return len(self.label_names)

    @cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The fast tokenizer, with the template's pseudo tokens added."""
        return load_tokenizer(self.model_name_or_path, self.template)

    @property
    def vocab_size(self) -> int:
        """The tokenizer's size, pseudo tokens included: the rows the model's embeddings need."""
        return len(self.tokenizer)

    @cached_property
    def prompt_template(self) -> Template:
        """:attr:`template` parsed into pieces of token ids around the text fields."""
        return Template.parse(self.template, self.tokenizer, len(self.text_fields))

    @property
    def _verbalizer_source(self) -> Mapping[str | int, str] | str | Path | None:
        return self._verbalizer if self._verbalizer is not None else self.default_verbalizer_path()

    @cached_property
    def label_words(self) -> dict[str, str] | None:
        """Label name -> verbalizer word as configured; None when none is (CLS-tuning needs none)."""
        return load_label_words(self._verbalizer_source, self.label_names)

    @cached_property
    def verbalizer(self) -> Verbalizer | None:
        """The label words tokenized for prompt-tuning (the CLI links it to the module); None
        when no label words are configured."""
        if self.label_words is None:
            return None
        source = self._verbalizer_source
        return Verbalizer.from_words(
            self.label_words, self.label_names, self.tokenizer, self.prompt_template.space_before_mask,
            source=str(source) if isinstance(source, (str, Path)) else "verbalizer",
        )

    # --- class statistics --------------------------------------------------------------

    def class_counts(self, split: str = "train") -> list[int]:
        """Number of examples of each class in ``split``."""
        return count_classes(self._examples(split)["label"], self.num_classes)

    def head_tail_classes(self, split: str = "train") -> tuple[list[int], list[int]]:
        """Head and tail class indices by the study's rule, from ``split``'s frequencies."""
        return head_tail_split(self.class_counts(split), self.head_tail_ratio, ignore_absent=split != "train")

    @property
    def metric_class_counts(self) -> list[int] | None:
        """Counts that fix the head/tail split of the metrics; None: split on each evaluated set."""
        if self.head_tail_from == "eval":
            return None
        try:
            return self.class_counts("train")
        except FileNotFoundError as err:  # only evaluation can do without train: fit trains on it
            raise FileNotFoundError(
                f"{err} Head/tail classes come from its class frequencies (head_tail_from='train'). Without a "
                "train split, validate, test and predict can run with head_tail_from='eval' (head/tail from "
                "each evaluated split); fit cannot."
            ) from None

    @property
    def train_class_counts(self) -> list[int] | None:
        """Training examples per class (the class priors of the long-tail remedies); None
        when there is no train split or no labels (prediction), so that a module needing priors says so."""
        if self.label_field is None:
            return None
        try:
            return self.class_counts("train")
        except FileNotFoundError:
            return None

    # --- encoding ----------------------------------------------------------------------

    def _examples(self, split: str) -> dict[str, list]:
        if split not in self.examples:
            columns = self.read_split(split)
            if self.limit_examples is not None:
                columns = {key: values[: self.limit_examples] for key, values in columns.items()}
            self.examples[split] = columns
        return self.examples[split]

    def encode(self, split: str, input_format: InputFormat) -> datasets.Dataset:
        """Tokenized ``split`` in ``input_format``; cached on disk across runs."""
        columns = self._examples(split)  # first: a missing or bad file is reported as such
        return encode_columns(columns, self.tokenizer, self.prompt_template if input_format == "prompt" else None,
                              self.max_length, self.cache_dir / f"{split}-{input_format}")

    # --- LightningDataModule hooks -----------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Encode the splits ``stage`` needs (fit: train+dev, validate: dev, test: test).

        Before fit, every other split that has a file is read too, so that a bad row in
        test.tsv fails now rather than after training; classes without a training example,
        and classes without a dev example (which model selection cannot see), are reported, and
        so is fitting without a dev split (no validation: the final weights are tested).
        """
        fmt = self.input_format
        if fmt not in ("cls", "prompt"):
            raise ValueError(
                f"input_format is {fmt!r}: set the DataModule's input_format to the module's "
                "(module.input_format, 'cls' or 'prompt'); the lt-tuning CLI does it for you."
            )
        fit_splits = ("train", "dev") if self.has_split("dev") else ("train",)
        needed = {"fit": fit_splits, "validate": ("dev",), "test": ("test",), "predict": (self.predict_split,)}
        for split in needed.get(stage, SPLITS) if stage else SPLITS:
            self.datasets[split] = self.encode(split, fmt)  # a disk-cache hit after the first time
        if stage == "fit":
            for split in SPLITS:
                if split not in self.datasets and self._has_file(split):
                    self._examples(split)
            self._warn_absent_classes("train", "training example", "They are still evaluated (per-class F1, macro F1, "
                                      "and as tail classes); add training examples for them or expect F1 0.")
            if "dev" in fit_splits:
                self._warn_absent_classes("dev", "dev example", "Model selection on dev (best checkpoint, early "
                                          "stopping) cannot see them; add dev examples for them.")
            else:
                rank_zero_warn("No dev split: fit trains with no validation (no best checkpoint, no early stopping) "
                               "and the final weights are tested. Give a dev split (dev_file, or a dataset's "
                               "'validation' or 'dev' split) to select the best checkpoint.")

    def _has_file(self, split: str) -> bool:
        try:
            return self.split_path(split).is_file()
        except FileNotFoundError:  # no file configured for this split
            return False

    def _warn_absent_classes(self, split: str, what: str, consequence: str) -> None:
        warn_absent_classes(self.split_source(split), self.label_names, self.class_counts(split), what, consequence)

    def collator(self) -> DataCollatorWithPadding:
        """Pads each batch to its longest row; ``label`` arrives as ``labels``."""
        return DataCollatorWithPadding(self.tokenizer)

    def _loader_kwargs(self) -> dict[str, Any]:
        return {"num_workers": self.num_workers, "collate_fn": self.collator(), "persistent_workers": self.num_workers > 0}

    def _eval_loader(self, split: str) -> DataLoader:
        return eval_loader(self.datasets[split], self.eval_batch_size, *world(self.trainer), **self._loader_kwargs())

    def train_dataloader(self) -> DataLoader:
        self._train_loader = train_loader(
            self.datasets["train"], self.batch_size, self.group_by_length, shuffle_seed(self.trainer),
            *world(self.trainer), **self._loader_kwargs()
        )
        if self._train_loader_state is not None:
            self._train_loader.load_position(self._train_loader_state)
            self._train_loader_state = None
        return self._train_loader

    def teardown(self, stage: str) -> None:
        if stage == "fit":
            self._train_loader = None  # a later fit (and its resume state) gets a loader of its own

    @property
    def label_spec(self) -> dict[str, Any]:
        """Label names, text fields and label field: what a prediction file's columns are named
        after (:func:`~lt_tuning.inference.prediction_columns`)."""
        return {"labels": self.label_names, "text_fields": self.text_fields, "label_field": self.label_field}

    @property
    def inference_spec(self) -> dict[str, Any]:
        """What classifying new text needs besides the weights: the :attr:`label_spec`, label
        words, template, ``max_length``, input format and the tokenizer's files."""
        with tempfile.TemporaryDirectory() as folder:
            self.tokenizer.save_pretrained(folder)
            files = {path.name: path.read_bytes() for path in Path(folder).iterdir()}
        return {**self.label_spec, "label_words": self.label_words, "template": self.template,
                "max_length": self.max_length, "input_format": self.input_format, "tokenizer_files": files}

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint: the :attr:`inference_spec` (a checkpoint then classifies raw
        text on its own, see :func:`lt_tuning.load_classifier`) and the training loader's place in
        its epoch. The latter is not left to Lightning's stateful-loader support, which drops it on
        resume when ``trainer.estimated_stepping_batches`` was read before, as for our LR schedule
        (Lightning #20550)."""
        state = {"inference": self.inference_spec}
        if self._train_loader is not None:
            state["train_loader"] = self._train_loader.position()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the training loader (the current one, or else the next one made) where it stopped."""
        position = state_dict.get("train_loader")
        if position is not None and self._train_loader is not None:  # strategies that restore after setup
            self._train_loader.load_position(position)
        else:
            self._train_loader_state = position

    def val_dataloader(self) -> DataLoader | list:
        """The dev loader; none (Lightning then skips validation) when there is no dev split."""
        return self._eval_loader("dev") if "dev" in self.datasets else []

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader(self.predict_split)


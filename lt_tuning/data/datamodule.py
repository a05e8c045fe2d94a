"""The LightningDataModule shared by every long-tailed dataset.

One DataModule yields both encodings of an example: CLS format (``[CLS] a [SEP] (b [SEP])``,
built by the tokenizer itself) and prompt format (a :class:`~lt_tuning.data.prompt.Template`
with one [MASK]). Text is tokenized by a fast tokenizer in batched ``datasets.map`` calls whose
results are cached on disk, keyed by the file contents and every setting that changes them.
It also knows the class frequencies that define head and tail classes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import datasets
import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, BatchEncoding, PreTrainedTokenizerBase

from lt_tuning.data.collate import PadCollator
from lt_tuning.data.loaders import ResumableDataLoader, UnpaddedDistributedSampler
from lt_tuning.data.prompt import Template, add_pseudo_tokens, truncate_longest_first
from lt_tuning.data.reading import DataFileError, load_json_mapping, read_labelled_file
from lt_tuning.data.sampler import LengthGroupedBatchSampler
from lt_tuning.data.sources import cache_root
from lt_tuning.metrics.split import head_tail_split
from lt_tuning.verbalizer import Verbalizer

InputFormat = Literal["cls", "prompt"]
SPLITS = ("train", "dev", "test")
_CACHE_VERSION = "2"  # 2: CLS pairs truncated by the study's tie rule


class LongTailedDataModule(pl.LightningDataModule):
    """Labelled text splits -> tokenized, dynamically padded batches, plus head/tail statistics.

    Subclasses say where each split's rows come from (:meth:`split_path`); this class does the
    rest. Args:
        model_name_or_path: tokenizer to load with ``AutoTokenizer`` (hub name or local folder).
        text_fields: one or two column names (``text_a``, ``text_b``).
        label_field: column holding the label name.
        labels: label names in index order, or a path to a ``label2idx.json``.
        verbalizer: label -> word or phrase (or a path to such a JSON) for prompt format.
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
        label_field: str = "label",
        labels: Sequence[str] | str | None = None,
        verbalizer: Mapping[str, str] | str | None = None,
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
        if not 0.0 < head_tail_ratio <= 1.0:
            raise ValueError(f"head_tail_ratio must be in (0, 1], got {head_tail_ratio}.")
        self.model_name_or_path = model_name_or_path
        self.text_fields = list(text_fields)
        self.label_field = label_field
        self._labels = labels
        self._verbalizer = verbalizer
        self.template_text = template
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

    def default_labels_path(self) -> Path | None:
        """Where to find ``label2idx.json`` when ``labels`` is not given."""
        return None

    def default_verbalizer_path(self) -> Path | None:
        """Where to find ``verbalizer.json`` when ``verbalizer`` is not given."""
        return None

    def split_fingerprint(self, split: str) -> str:
        """Identity of ``split``'s contents, for the tokenization cache key."""
        return hashlib.sha256(self.split_path(split).read_bytes()).hexdigest()

    def read_split(self, split: str) -> dict[str, list]:
        """Raw validated columns ``text_a`` (``text_b``) ``label`` of ``split``."""
        path = self.split_path(split)
        if not path.is_file():
            raise FileNotFoundError(
                f"The {split} split file is missing: {path}. Put the file there or point the DataModule at the "
                "folder or file that holds it."
            )
        return read_labelled_file(path, self.text_fields, self.label_field, self.label2idx)

    # --- labels, tokenizer, template, verbalizer ---------------------------------------

    @cached_property
    def label_names(self) -> list[str]:
        """Label names in index order."""
        labels = self._labels if self._labels is not None else self.default_labels_path()
        if labels is None:
            raise ValueError("No label list: pass `labels` (a list of names or a label2idx.json path).")
        if isinstance(labels, (str, Path)):
            mapping = load_json_mapping(labels)
            indices = sorted(mapping.values())
            if indices != list(range(len(mapping))):
                raise DataFileError(f"{labels}: label indices must be 0..{len(mapping) - 1} with no gaps.")
            return sorted(mapping, key=mapping.__getitem__)
        if len(set(labels)) != len(labels):
            raise ValueError(f"`labels` has duplicates: {list(labels)}.")
        return [str(label) for label in labels]

    @property
    def label2idx(self) -> dict[str, int]:
        return {label: index for index, label in enumerate(self.label_names)}

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The fast tokenizer, with the template's pseudo tokens added."""
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.model_name_or_path, use_fast=True)
        except OSError as err:
            raise OSError(
                f"Cannot load a tokenizer from {self.model_name_or_path!r}: give an existing local folder "
                "or a model name on the Hugging Face hub (needs internet)."
            ) from err
        if not tokenizer.is_fast:
            raise ValueError(f"{self.model_name_or_path!r} has no fast tokenizer; lt-tuning needs one for speed.")
        add_pseudo_tokens(tokenizer, self.template_text)
        return tokenizer

    @cached_property
    def template(self) -> Template:
        return Template.parse(self.template_text, self.tokenizer, len(self.text_fields))

    @property
    def _verbalizer_source(self) -> Mapping[str, str] | str | Path | None:
        return self._verbalizer if self._verbalizer is not None else self.default_verbalizer_path()

    @cached_property
    def label_words(self) -> dict[str, str] | None:
        """Label -> verbalizer word as configured; None when none is (CLS-tuning needs none)."""
        source = self._verbalizer_source
        if source is None:
            return None
        return dict(load_json_mapping(source)) if isinstance(source, (str, Path)) else dict(source)

    @cached_property
    def verbalizer(self) -> Verbalizer | None:
        """The label words tokenized for prompt-tuning (the CLI links it to the module); None
        when no label words are configured."""
        if self.label_words is None:
            return None
        source = self._verbalizer_source
        return Verbalizer.from_words(
            self.label_words, self.label_names, self.tokenizer, self.template.space_before_mask,
            source=str(source) if isinstance(source, (str, Path)) else "verbalizer",
        )

    # --- class statistics --------------------------------------------------------------

    def class_counts(self, split: str = "train") -> list[int]:
        """Number of examples of each class in ``split``."""
        labels = self._examples(split)["label"]
        return np.bincount(np.asarray(labels, dtype=np.int64), minlength=self.num_classes).tolist()

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
        when there is no train split, so that a module needing priors says so."""
        try:
            return self.class_counts("train")
        except FileNotFoundError:
            return None

    @property
    def vocab_size(self) -> int:
        """The tokenizer's size, pseudo tokens included: the rows the model's embeddings need."""
        return len(self.tokenizer)

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
        columns = self._examples(split)
        key = self._cache_key(split, input_format)
        cache_file = self.cache_dir / f"{split}-{input_format}-{key}.arrow"
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        dataset = datasets.Dataset.from_dict({**columns, "index": list(range(len(columns["label"])))})
        return dataset.map(
            self._encode_batch,
            batched=True,
            fn_kwargs={"input_format": input_format},
            remove_columns=[name for name in ("text_a", "text_b") if name in columns],
            cache_file_name=str(cache_file),
            new_fingerprint=key,
            desc=f"Tokenizing {split} ({input_format})",
        )

    def _encode_batch(self, batch: dict[str, list], input_format: InputFormat) -> dict[str, list]:
        tokenizer = self.tokenizer
        text_b = batch.get("text_b")
        if input_format == "cls":
            if text_b is None:
                return dict(tokenizer(batch["text_a"], truncation=True, max_length=self.max_length,
                                      return_attention_mask=False))
            encoded = tokenizer(batch["text_a"], text_b, return_attention_mask=False)
            budget = self.max_length - tokenizer.num_special_tokens_to_add(pair=True)
            rows = [_truncate_pair(encoded, i, budget) for i in range(len(text_b))]
            return {name: [row[name] for row in rows] for name in encoded}
        template = self.template
        template.text_budget(self.max_length, len(self.text_fields))  # fail early, before the loop
        ids_a = tokenizer(batch["text_a"], add_special_tokens=False)["input_ids"]
        ids_b = tokenizer(text_b, add_special_tokens=False)["input_ids"] if text_b is not None else [None] * len(ids_a)
        input_ids = [template.encode(a, b, self.max_length) for a, b in zip(ids_a, ids_b)]
        mask_id = tokenizer.mask_token_id
        return {"input_ids": input_ids, "mask_pos": [ids.index(mask_id) for ids in input_ids]}

    def _cache_key(self, split: str, input_format: InputFormat) -> str:
        digest = hashlib.sha256()
        digest.update(self.split_fingerprint(split).encode())
        digest.update(self.tokenizer.backend_tokenizer.to_str().encode())
        settings = [
            _CACHE_VERSION, input_format, self.max_length, self.text_fields, self.label_names,
            self.template_text if input_format == "prompt" else None, self.limit_examples,
        ]
        digest.update(json.dumps(settings, ensure_ascii=False).encode())
        return digest.hexdigest()[:16]

    # --- LightningDataModule hooks -----------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        """Encode the splits ``stage`` needs (fit: train+dev, validate: dev, test: test).

        Before fit, every other split that has a file is read too, so that a bad row in
        test.tsv fails now rather than after training; classes without a training example,
        and classes without a dev example (which model selection cannot see), are reported.
        """
        fmt = self.input_format
        if fmt not in ("cls", "prompt"):
            raise ValueError(
                f"input_format is {fmt!r}: set the DataModule's input_format to the module's "
                "(module.input_format, 'cls' or 'prompt'); the lt-tuning CLI does it for you."
            )
        needed = {"fit": ("train", "dev"), "validate": ("dev",), "test": ("test",), "predict": (self.predict_split,)}
        for split in needed.get(stage, SPLITS) if stage else SPLITS:
            self.datasets[split] = self.encode(split, fmt)  # a disk-cache hit after the first time
        if stage == "fit":
            for split in SPLITS:
                if split not in self.datasets and self._has_file(split):
                    self._examples(split)
            self._warn_absent_classes("train", "training example", "They are still evaluated (per-class F1, macro F1, "
                                      "and as tail classes); add training examples for them or expect F1 0.")
            self._warn_absent_classes("dev", "dev example", "Model selection on dev (best checkpoint, early "
                                      "stopping) cannot see them; add dev examples for them.")

    def _has_file(self, split: str) -> bool:
        try:
            return self.split_path(split).is_file()
        except FileNotFoundError:  # no file configured for this split
            return False

    def _warn_absent_classes(self, split: str, what: str, consequence: str) -> None:
        """Name the classes that ``split`` has no example of, and what that means."""
        absent = [name for name, count in zip(self.label_names, self.class_counts(split)) if count == 0]
        if absent:
            where = self.split_path(split) if self._has_file(split) else f"the {split} split"
            rank_zero_warn(f"{where}: {len(absent)} class(es) have no {what}: {absent}. {consequence}")

    def collator(self) -> PadCollator:
        return PadCollator(
            self.tokenizer.pad_token_id, with_token_type_ids="token_type_ids" in self.tokenizer.model_input_names
        )

    def shuffle_seed(self) -> int:
        """The seed of the training order, drawn when a training loader is made, never at
        construction: a DataModule built before or after seeding trains on the same order.

        It is the first draw from ``seed_everything``'s seed ($PL_GLOBAL_SEED), which is what the
        CLI's DataModules drew when they were built right after seeding (their runs keep their
        order); a random one when nothing was seeded.
        """
        seed = os.environ.get("PL_GLOBAL_SEED")
        generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        return int(torch.randint(0, 2**62, (), generator=generator).item())

    def _loader(self, split: str, train: bool) -> DataLoader:
        """Training: a loader that resumes mid-epoch; evaluation: in order, each example once per run."""
        dataset = self.datasets[split]
        common = {
            "num_workers": self.num_workers, "collate_fn": self.collator(), "persistent_workers": self.num_workers > 0,
        }
        if train:
            seed = self.shuffle_seed()
            if self.group_by_length:
                lengths = [len(ids) for ids in dataset["input_ids"]]
                batching = {"batch_sampler": LengthGroupedBatchSampler(lengths, self.batch_size, seed=seed)}
            else:
                batching = {"batch_size": self.batch_size, "shuffle": True}
            return ResumableDataLoader(dataset, generator=torch.Generator().manual_seed(seed), **batching, **common)
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:  # else Lightning's sampler repeats examples
            sampler = UnpaddedDistributedSampler(dataset, trainer.world_size, trainer.global_rank)
            return DataLoader(dataset, batch_size=self.eval_batch_size, sampler=sampler, **common)
        return DataLoader(dataset, batch_size=self.eval_batch_size, **common)

    def train_dataloader(self) -> DataLoader:
        self._train_loader = self._loader("train", train=True)
        if self._train_loader_state is not None:
            self._train_loader.load_position(self._train_loader_state)
            self._train_loader_state = None
        return self._train_loader

    def teardown(self, stage: str) -> None:
        if stage == "fit":
            self._train_loader = None  # a later fit (and its resume state) gets a loader of its own

    def state_dict(self) -> dict[str, Any]:
        """The training loader's place in its epoch, saved in every checkpoint.

        The DataModule keeps it, not Lightning's stateful-loader support, which drops a loader's
        state on resume when ``trainer.estimated_stepping_batches`` was read before (as our
        modules do for the LR schedule; Lightning issue #20550).
        """
        return {"train_loader": self._train_loader.position()} if self._train_loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the training loader (the current one, or else the next one made) where it stopped."""
        position = state_dict.get("train_loader")
        if position is not None and self._train_loader is not None:  # strategies that restore after setup
            self._train_loader.load_position(position)
        else:
            self._train_loader_state = position

    def val_dataloader(self) -> DataLoader:
        return self._loader("dev", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_split, train=False)


def _truncate_pair(encoded: BatchEncoding, index: int, budget: int) -> dict[str, list[int]]:
    """Row ``index`` of an untruncated pair encoding with at most ``budget`` text tokens.

    Cut by the prompt format's longest-first rule, as the study's builder does: on a tie
    text_a keeps the extra token (the tokenizer's own ``longest_first`` gives it to text_b).
    """
    sequence_ids = encoded.sequence_ids(index)
    positions_a = [i for i, s in enumerate(sequence_ids) if s == 0]
    positions_b = [i for i, s in enumerate(sequence_ids) if s == 1]
    kept_a, kept_b = truncate_longest_first(positions_a, positions_b, budget)
    keep = sorted([i for i, s in enumerate(sequence_ids) if s is None] + kept_a + kept_b)
    return {name: [values[index][i] for i in keep] for name, values in encoded.items()}

"""A text corpus for masked-LM pretraining: the train splits of the long-tailed datasets, and text files.

The DataModule puts the corpus' pieces together: its files (:mod:`~lt_tuning.data.corpus_files`),
the held-out texts (:mod:`~lt_tuning.data.heldout`), the WordPiece vocabulary
(:mod:`~lt_tuning.data.vocab`) and the chunked Arrow passes that tokenize and pack the texts
(:mod:`~lt_tuning.data.packing`). Texts are packed into ``[CLS] ... [SEP]`` blocks of ``max_length``
tokens (texts separated by [SEP]), so no compute goes to padding. A seeded random share of the texts
is held out, masked once with a fixed seed, and used to measure masked-token accuracy per language.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow.compute as pc
import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, DataCollatorForLanguageModeling, PreTrainedTokenizerBase

from lt_tuning.data import heldout, packing
from lt_tuning.data.corpus_files import ARROW_BATCH, corpus_files, corpus_texts, file_digests
from lt_tuning.data.heldout import language
from lt_tuning.data.loaders import eval_loader, shuffle_seed, world
from lt_tuning.data.prompt import template_words
from lt_tuning.data.reading import load_json_mapping
from lt_tuning.data.sampler import BlockSampler
from lt_tuning.data.sources import cache_root, resolve_task_dir
from lt_tuning.data.tasks import TASKS
from lt_tuning.data.vocab import train_wordpiece_tokenizer


class MaskedLMCorpusDataModule(pl.LightningDataModule):
    """Training text -> packed, dynamically masked (80/10/10 at ``mlm_probability``) batches.

    On several processes (``--trainer.devices N``) the corpus is read, tokenized and packed once
    (:meth:`prepare_data`), each process trains on its own share of the blocks and validates on
    its share of the held-out batches.

    Args:
        tasks: datasets of the study whose *train* split is read (never dev or test); their
            templates' words and verbalizer words are added to the vocabulary's training text,
            so that no prompt becomes [UNK].
        data_root: folder holding ``<task>/train.tsv``; None finds each task by
            :func:`~lt_tuning.data.sources.resolve_task_dir` (``$LT_TUNING_DATA``, the cache, or a download).
        text_files: UTF-8 text files, one text a line (blank lines skipped), of any size; a
            folder stands for every ``*.txt`` file under it, in sorted order.
        skip_missing: skip (with a warning) a task whose train split is absent, instead of failing.
        tokenizer: an existing tokenizer (hub name or folder); None trains a WordPiece
            vocabulary of ``vocab_size`` on the training texts (cached by corpus and settings).
        max_length: tokens per packed block, [CLS] and [SEP] included.
        mlm_probability: share of tokens chosen for prediction (80% [MASK], 10% random, 10% kept).
        heldout_fraction: share of texts kept out of training for masked-token accuracy.
        heldout_max_texts: hold out at most this many texts (None: no cap). Their masked
            batches stay in memory and every validation runs over them; 10,000 texts measure an
            accuracy to a fraction of a point.
        num_proc: processes for the passes over the corpus (tokenizing, packing, counting);
            None: one per CPU core. The blocks are the same for any number.
        seed: fixes the held-out texts and their masking.
        cache_dir: the Arrow files and vocabularies (about 3.3x the text's size on disk);
            None: ``<lt-tuning cache>/corpus``.
    """

    def __init__(
        self,
        tasks: Sequence[str] = (),
        data_root: str | None = None,
        text_files: Sequence[str] = (),
        skip_missing: bool = False,
        tokenizer: str | None = None,
        vocab_size: int = 8000,
        max_length: int = 128,
        mlm_probability: float = 0.15,
        heldout_fraction: float = 0.02,
        heldout_max_texts: int | None = 10_000,
        batch_size: int = 64,
        num_workers: int = 0,
        num_proc: int | None = None,
        seed: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        unknown = sorted(set(tasks) - set(TASKS))
        if unknown:
            raise ValueError(f"Unknown task(s) {unknown}; known: {sorted(TASKS)}.")
        if not tasks and not text_files:
            raise ValueError("Give `tasks` (datasets whose train split to read) and/or `text_files`.")
        if not 0.0 < heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}.")
        self.tasks = list(tasks)
        self.data_root = data_root
        self.text_files = [str(path) for path in text_files]
        self.skip_missing = skip_missing
        self.tokenizer_name = tokenizer
        self.vocab_size_target = vocab_size
        self.max_length = max_length
        self.mlm_probability = mlm_probability
        self.heldout_fraction = heldout_fraction
        self.heldout_max_texts = heldout_max_texts
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.num_proc = num_proc or len(os.sched_getaffinity(0))
        self.seed = seed
        self.cache_dir = Path(cache_dir) if cache_dir else cache_root() / "corpus"
        self.datasets: dict[str, datasets.Dataset] = {}
        # Each opening of a memory-mapped Arrow file maps 64 KB around each record batch: open once.
        self._opened: dict[str, datasets.Dataset] = {}

    # --- the corpus --------------------------------------------------------------------

    def _task_dir(self, task: str) -> Path:
        return Path(self.data_root) / task if self.data_root else resolve_task_dir(task)

    @cached_property
    def files(self) -> list[tuple[Path, list[str] | None]]:
        """The files read, in order: each task's train split (with its text columns), then the
        text files (with None)."""
        task_dirs = [self._task_dir(task) for task in self.tasks]
        return corpus_files(self.tasks, task_dirs, self.text_files, self.skip_missing)

    @cached_property
    def _digests(self) -> list[tuple[str, str]]:
        """(file, sha256) of each file: what the caches are keyed by."""
        return file_digests(self.files)

    def _key(self, *settings) -> str:
        """A cache key: the files' contents and ``settings``."""
        return hashlib.sha256(json.dumps([self._digests, *settings]).encode()).hexdigest()[:16]

    @cached_property
    def texts(self) -> datasets.Dataset:
        """Every text of the corpus in order, as Arrow on disk (memory-mapped): ``text``, and
        ``source``, the index of its file in :attr:`files`."""
        fingerprint = self._key("texts", [fields for _, fields in self.files])
        return corpus_texts(self.files, self.cache_dir / "texts", fingerprint)

    @cached_property
    def sources(self) -> list[dict[str, str | int]]:
        """The files read, with their sha256 and number of texts (written beside the model)."""
        counts = pc.value_counts(self.texts.data.column("source"))
        texts = dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))
        return [{"file": file, "sha256": sha256, "texts": texts.get(index, 0)}
                for index, (file, sha256) in enumerate(self._digests)]

    @property
    def _split_settings(self) -> list:
        return [self.seed, self.heldout_fraction, self.heldout_max_texts]

    @cached_property
    def heldout_rows(self) -> np.ndarray:
        """Rows of :attr:`texts` held out, in order (:func:`~lt_tuning.data.heldout.heldout_rows`)."""
        return heldout.heldout_rows(len(self.texts), self.seed, self.heldout_fraction, self.heldout_max_texts)

    @cached_property
    def heldout_texts(self) -> dict[str, list[str]]:
        """The held-out texts by language (``zh``, ``en``: those present), in corpus order."""
        # One pass on up to num_proc processes: a look-up of each row would map 64 KB around it.
        key = self._key("heldout", *self._split_settings)
        rows = self._map_chunks(
            self.texts.with_format("arrow"), "heldout", key, heldout.take_heldout, {"rows": self.heldout_rows},
            with_indices=True, batched=True, batch_size=ARROW_BATCH, desc="Holding out",
        )
        splits: dict[str, list[str]] = {}
        for text in rows.with_format(None)["text"]:
            splits.setdefault(language(text), []).append(text)
        return splits

    @cached_property
    def train_texts(self) -> datasets.Dataset:
        """The texts not held out: a view of :attr:`texts` (its row numbers cached on disk)."""
        key = self._key("train", *self._split_settings)
        return self.texts.filter(
            heldout.not_heldout, with_indices=True, batched=True, batch_size=ARROW_BATCH,
            writer_batch_size=ARROW_BATCH, input_columns=[], fn_kwargs={"rows": self.heldout_rows}, new_fingerprint=key, desc="Training texts",
            cache_file_name=str(self.cache_dir / f"train-rows-{key}.arrow"),
        )

    @property
    def languages(self) -> list[str]:
        """Languages of the held-out texts (``zh``, ``en``)."""
        return list(self.heldout_texts)

    def _prompt_words(self) -> list[str]:
        """Template words and verbalizer words of the tasks: the vocabulary must cover them."""
        words = []
        for task in self.tasks:
            words.append(template_words(TASKS[task].template))
            verbalizer = self._task_dir(task) / "verbalizer.json"
            if verbalizer.is_file():
                words.extend(load_json_mapping(verbalizer).values())
        return words

    # --- tokenizer ---------------------------------------------------------------------

    @cached_property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The given tokenizer, or a WordPiece vocabulary trained on the training texts."""
        if self.tokenizer_name is not None:
            return AutoTokenizer.from_pretrained(self.tokenizer_name, use_fast=True)
        key = self._key("wordpiece", *self._split_settings, self.vocab_size_target, self._prompt_words())
        folder = self.cache_dir / f"wordpiece-{key}"
        if (folder / "tokenizer.json").is_file():
            return AutoTokenizer.from_pretrained(folder)
        batches = (batch["text"] for batch in self.train_texts.select_columns(["text"]).iter(batch_size=1000))
        # Each prompt word is repeated so that it clears the trainer's min_frequency.
        texts = itertools.chain(batches, [self._prompt_words() * 2])
        return train_wordpiece_tokenizer(texts, folder, vocab_size=self.vocab_size_target)

    @cached_property
    def _tokenizer_digest(self) -> str:
        return hashlib.sha256(self.tokenizer.backend_tokenizer.to_str().encode()).hexdigest()

    @property
    def vocab_size(self) -> int:
        """Rows the model's embedding needs (the CLI links it to the model)."""
        return len(self.tokenizer)

    @property
    def pad_token_id(self) -> int:
        """The tokenizer's padding token id."""
        return self.tokenizer.pad_token_id

    # --- encoding ----------------------------------------------------------------------

    def _map_chunks(self, dataset: datasets.Dataset, name: str, key: str, function, fn_kwargs: dict[str, Any],
                    texts_per_row: int = 1, **kwargs) -> datasets.Dataset:
        """:func:`~lt_tuning.data.packing.map_chunks` in this corpus' cache, on its processes."""
        return packing.map_chunks(dataset, self.cache_dir, name, key, function, fn_kwargs, self.num_proc,
                                  texts_per_row, **kwargs)

    def tokenized(self, split: str) -> datasets.Dataset:
        """``split``'s texts as token ids, a row a text (``input_ids``; ``zh``: a Chinese text),
        cached on disk."""
        name = f"{split}-ids"
        if name not in self._opened:
            texts = self.train_texts if split == "train" else datasets.Dataset.from_dict(
                {"text": self.heldout_texts[split.removeprefix("heldout_")]})
            key = self._key(split, *self._split_settings, self._tokenizer_digest)
            self._opened[name] = self._map_chunks(
                texts, name, key, packing.tokenize, {"tokenizer": self.tokenizer}, batched=True,
                batch_size=packing.BATCH, writer_batch_size=packing.BATCH, features=packing.TOKENIZED,
                remove_columns=texts.column_names, desc=f"Tokenizing {split}",
            )
        return self._opened[name]

    def _per_group(self, split: str, name: str, function, batch_size: int, features: datasets.Features,
                   **fn_kwargs) -> datasets.Dataset:
        """``function(batch of group numbers, tokens=..., **fn_kwargs)`` over the groups of
        :data:`~lt_tuning.data.packing.GROUP` consecutive texts of ``split``'s :meth:`tokenized` texts, each group whole
        in one call whatever the number of processes, a chunk of ``CHUNK`` texts at a time on
        up to ``num_proc`` processes (so that none reads more than its share of a chunk); cached
        on disk."""
        name = f"{split}-{name}"
        if name not in self._opened:
            tokens = self.tokenized(split)
            groups = datasets.Dataset.from_dict({"group": list(range(math.ceil(len(tokens) / packing.GROUP)))})
            key = self._key(split, *self._split_settings, self._tokenizer_digest, name, fn_kwargs)
            self._opened[name] = self._map_chunks(
                groups, name, key, function, {"tokens": tokens, **fn_kwargs}, texts_per_row=packing.GROUP,
                batched=True, batch_size=batch_size, writer_batch_size=packing.BATCH, features=features,
                remove_columns=["group"], desc=name,
            )
        return self._opened[name]

    def encode(self, split: str) -> datasets.Dataset:
        """Packed blocks of ``split`` (``train``, ``heldout_zh``, ``heldout_en``), cached on disk:
        each group of 1,000 consecutive texts is one token stream, cut into blocks."""
        tokenizer = self.tokenizer
        return self._per_group(split, "blocks", packing.pack, packing.BATCH // packing.GROUP, packing.BLOCKS,
                               cls=tokenizer.cls_token_id,
                               sep=tokenizer.sep_token_id, max_length=self.max_length)

    def collator(self, seed: int | None = None) -> DataCollatorForLanguageModeling:
        """Masks ``mlm_probability`` of each block's tokens (80/10/10), drawn from ``seed`` where given."""
        return DataCollatorForLanguageModeling(self.tokenizer, mlm_probability=self.mlm_probability, seed=seed)

    def masked_heldout(self, language: str) -> list[dict[str, torch.Tensor]]:
        """The held-out blocks of ``language``, masked once with ``seed``: the same sample at every evaluation."""
        blocks = self.encode(f"heldout_{language}")
        collate = self.collator(seed=self.seed)
        return [collate([blocks[i] for i in range(start, min(start + self.batch_size, len(blocks)))])
                for start in range(0, len(blocks), self.batch_size)]

    @cached_property
    def _train_token_counts(self) -> dict[str, np.ndarray]:
        """How often each token id occurs in the training texts, by language (special tokens left out)."""
        counts = self._per_group("train", "counts", packing.count_tokens, 10 * packing.BATCH // packing.GROUP,
                                 packing.COUNTS, vocab_size=len(self.tokenizer))
        return {language: np.sum(counts[language], axis=0) for language in ("zh", "en")}

    def unigram_baseline_accuracy(self, language: str, batches: Sequence[dict[str, torch.Tensor]]) -> float:
        """Masked-token accuracy of always guessing the most frequent training token of ``language``."""
        return heldout.unigram_baseline_accuracy(self._train_token_counts[language], batches)

    # --- LightningDataModule hooks -----------------------------------------------------

    def prepare_data(self) -> None:
        """Read, tokenize and pack what the run needs into the cache, in one process per
        machine: on several processes the others wait, then load it in :meth:`setup`."""
        if self.trainer is None or self.trainer.state.fn == TrainerFn.FITTING:
            self.encode("train")
        for name in self.languages:
            self.encode(f"heldout_{name}")

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.datasets["train"] = self.encode("train")
        self.heldout_batches = {name: self.masked_heldout(name) for name in self.languages}

    def train_dataloader(self) -> DataLoader:
        world_size, rank = world(self.trainer)
        blocks = self.datasets["train"]
        sampler = BlockSampler(blocks, world_size, rank, seed=shuffle_seed(self.trainer))
        return DataLoader(
            blocks, batch_size=self.batch_size, sampler=sampler,
            collate_fn=self.collator(), num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        """All held-out batches, both languages (already batched and masked); on several
        processes each gets its share, every batch once."""
        batches = [batch for group in self.heldout_batches.values() for batch in group]
        world_size, rank = world(self.trainer)
        if len(batches) < world_size:  # a process without a batch would wait for the others forever
            raise ValueError(f"{len(batches)} held-out batch(es) for {world_size} processes: raise heldout_fraction "
                             "or lower batch_size, so that each process validates on one at least.")
        return eval_loader(batches, None, world_size, rank)

"""A text corpus for masked-LM pretraining: the train splits of the long-tailed datasets, and text files.

No part of the corpus has to fit in memory: ``datasets`` reads it a line at a time into Arrow
files on disk, then tokenizes and packs it into cached Arrow files, all memory-mapped, each pass
a chunk of a million texts at a time on up to ``num_proc`` processes, so that no process reads
more than its share of a chunk; a second run over the same files and settings loads the cache.
Texts are packed into ``[CLS] ... [SEP]`` blocks of ``max_length`` tokens (texts separated by
[SEP]), so no compute goes to padding. A seeded random share of the texts is held out, masked
once with a fixed seed, and used to measure masked-token accuracy per language (Chinese and
English texts apart, since their tokens are characters and words) next to that language's
unigram baseline (always guess its most frequent training token).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytorch_lightning as pl
import torch
from datasets.exceptions import DatasetGenerationError
from pytorch_lightning.trainer.states import TrainerFn
from torch.utils.data import DataLoader, DistributedSampler
from transformers import AutoTokenizer, DataCollatorForLanguageModeling, PreTrainedTokenizerBase

from lt_tuning.data.loaders import eval_loader, shuffle_seed, world
from lt_tuning.data.prompt import template_words
from lt_tuning.data.reading import DataFileError, load_json_mapping, read_labelled_file
from lt_tuning.data.sources import cache_root, resolve_task_dir
from lt_tuning.data.tasks import TASKS
from lt_tuning.data.vocab import train_wordpiece_tokenizer

#: CJK Unified Ideographs (and extension A): a text holding one of them counts as Chinese.
_CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff]")

TEXTS = datasets.Features({"text": datasets.Value("string"), "source": datasets.Value("int32")})
TOKENIZED = datasets.Features({"input_ids": datasets.List(datasets.Value("int32")), "zh": datasets.Value("bool")})
BLOCKS = datasets.Features({"input_ids": datasets.List(datasets.Value("int32"))})
COUNTS = datasets.Features({language: datasets.List(datasets.Value("int64")) for language in ("zh", "en")})
#: Texts packed as one token stream (as when the corpus was packed 1,000 texts a ``datasets.map`` batch).
GROUP = 1000
#: Texts per batch of a pass in Python, and per record batch of what it writes: opening a
#: memory-mapped Arrow file maps (and counts as resident) 64 KB around each record batch.
BATCH = 10_000
#: Rows per batch of a pass that stays in Arrow (no Python objects), and per record batch.
ARROW_BATCH = 50_000
#: Texts per ``datasets.map`` call of a pass over the corpus. Each call starts its own processes,
#: and a process keeps the pages of the memory-mapped files it has read resident until it ends:
#: a chunk at a time, no process reads more than a chunk's share, whatever the corpus size.
CHUNK = 1_000_000


def language(text: str) -> str:
    """``"zh"`` if ``text`` holds a CJK ideograph, else ``"en"``: held-out accuracy is reported per language."""
    return "zh" if _CJK.search(text) else "en"


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
        found: list[tuple[Path, list[str] | None]] = []
        for task in self.tasks:
            path = self._task_dir(task) / "train.tsv"
            if not path.is_file():
                if not self.skip_missing:
                    raise FileNotFoundError(f"{path}: the {task} train split is missing (or set skip_missing=true).")
                warnings.warn(f"{path} is missing: the {task} train split is left out of the corpus.", stacklevel=2)
                continue
            found.append((path, list(TASKS[task].text_fields)))
        for name in self.text_files:
            path = Path(name)
            if path.is_dir():
                texts = sorted(file for file in path.rglob("*.txt") if file.is_file())
                if not texts:
                    raise DataFileError(f"{path}: no *.txt file in this folder; put the corpus there as UTF-8 "
                                        "text files, one text a line, or list the files in text_files.")
                found += [(file, None) for file in texts]
            elif path.is_file():
                found.append((path, None))
            else:
                raise FileNotFoundError(f"{path}: no such text file or folder (text_files).")
        if not found:
            raise DataFileError(f"The corpus is empty: none of the train splits of {self.tasks} is there.")
        return found

    @cached_property
    def _digests(self) -> list[tuple[str, str]]:
        """(file, sha256) of each file, read in chunks: what the caches are keyed by."""
        digests = []
        for path, _ in self.files:
            with path.open("rb") as handle:
                digests.append((str(path), hashlib.file_digest(handle, "sha256").hexdigest()))
        return digests

    def _key(self, *settings) -> str:
        """A cache key: the files' contents and ``settings``."""
        return hashlib.sha256(json.dumps([self._digests, *settings]).encode()).hexdigest()[:16]

    @cached_property
    def texts(self) -> datasets.Dataset:
        """Every text of the corpus in order, as Arrow on disk (memory-mapped): ``text``, and
        ``source``, the index of its file in :attr:`files`."""
        files = [(source, str(path), fields) for source, (path, fields) in enumerate(self.files)]
        try:
            return datasets.Dataset.from_generator(  # a list in gen_kwargs: each file is a shard of its own
                _read_texts, features=TEXTS, gen_kwargs={"files": files}, cache_dir=str(self.cache_dir / "texts"),
                fingerprint=self._key("texts", [fields for _, fields in self.files]), writer_batch_size=ARROW_BATCH,
            )
        except DatasetGenerationError as err:  # raise the reader's own error: it names the file and the fix
            if isinstance(err.__cause__, (DataFileError, OSError)):
                raise err.__cause__ from None
            raise

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
        """Rows of :attr:`texts` held out, in order: the first ``max(1, round(heldout_fraction * n))``
        (at most ``heldout_max_texts``) of ``np.random.default_rng(seed).permutation(n)``."""
        n = len(self.texts)
        order = np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)
        np.random.default_rng(self.seed).shuffle(order)  # the order permutation(n) gives, in 4 bytes a text
        count = max(1, int(round(self.heldout_fraction * n)))
        return np.sort(order[: min(count, self.heldout_max_texts or count)])

    @cached_property
    def heldout_texts(self) -> dict[str, list[str]]:
        """The held-out texts by language (``zh``, ``en``: those present), in corpus order."""
        # One pass on up to num_proc processes: a look-up of each row would map 64 KB around it.
        key = self._key("heldout", *self._split_settings)
        heldout = self._map_chunks(
            self.texts.with_format("arrow"), "heldout", key, _take, {"rows": self.heldout_rows},
            with_indices=True, batched=True, batch_size=ARROW_BATCH, desc="Holding out",
        )
        splits: dict[str, list[str]] = {}
        for text in heldout.with_format(None)["text"]:
            splits.setdefault(language(text), []).append(text)
        return splits

    @cached_property
    def train_texts(self) -> datasets.Dataset:
        """The texts not held out: a view of :attr:`texts` (its row numbers cached on disk)."""
        key = self._key("train", *self._split_settings)
        return self.texts.filter(
            _not_in, with_indices=True, batched=True, batch_size=ARROW_BATCH, writer_batch_size=ARROW_BATCH,
            input_columns=[], fn_kwargs={"rows": self.heldout_rows}, new_fingerprint=key, desc="Training texts",
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
        return self.tokenizer.pad_token_id

    # --- encoding ----------------------------------------------------------------------

    def _processes(self, texts: int) -> int:
        """Processes for a pass over ``texts`` texts: ``num_proc``, but one per 10,000 texts at
        most (starting one costs more than it saves on fewer)."""
        return max(1, min(self.num_proc, texts // BATCH))

    def _map_chunks(self, dataset: datasets.Dataset, name: str, key: str, function, fn_kwargs: dict[str, Any],
                    texts_per_row: int = 1, **kwargs) -> datasets.Dataset:
        """``dataset.map(function, fn_kwargs=fn_kwargs, **kwargs)`` over chunks of :data:`CHUNK`
        texts (``texts_per_row`` texts a row), each on up to ``num_proc`` processes and cached on
        disk as ``<name>-<key>-<first row>-<end row>``, concatenated in order. ``with_indices``
        functions also get the chunk's first row as ``offset``: their indices count from it."""
        parts, rows = [], CHUNK // texts_per_row
        for start in range(0, max(len(dataset), 1), rows):
            stop = min(start + rows, len(dataset))
            parts.append(dataset.select(range(start, stop)).map(
                function, fn_kwargs={**fn_kwargs, **({"offset": start} if kwargs.get("with_indices") else {})},
                num_proc=self._processes((stop - start) * texts_per_row), new_fingerprint=f"{key}-{start}-{stop}",
                cache_file_name=str(self.cache_dir / f"{name}-{key}-{start}-{stop}.arrow"), **kwargs,
            ))
        return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]

    def tokenized(self, split: str) -> datasets.Dataset:
        """``split``'s texts as token ids, a row a text (``input_ids``; ``zh``: a Chinese text),
        cached on disk."""
        name = f"{split}-ids"
        if name not in self._opened:
            texts = self.train_texts if split == "train" else datasets.Dataset.from_dict(
                {"text": self.heldout_texts[split.removeprefix("heldout_")]})
            key = self._key(split, *self._split_settings, self._tokenizer_digest)
            self._opened[name] = self._map_chunks(
                texts, name, key, _tokenize, {"tokenizer": self.tokenizer}, batched=True, batch_size=BATCH,
                writer_batch_size=BATCH, features=TOKENIZED, remove_columns=texts.column_names,
                desc=f"Tokenizing {split}",
            )
        return self._opened[name]

    def _per_group(self, split: str, name: str, function, batch_size: int, features: datasets.Features,
                   **fn_kwargs) -> datasets.Dataset:
        """``function(batch of group numbers, tokens=..., **fn_kwargs)`` over the groups of
        :data:`GROUP` consecutive texts of ``split``'s :meth:`tokenized` texts, each group whole
        in one call whatever the number of processes, a chunk of :data:`CHUNK` texts at a time on
        up to ``num_proc`` processes (so that none reads more than its share of a chunk); cached
        on disk."""
        name = f"{split}-{name}"
        if name not in self._opened:
            tokens = self.tokenized(split)
            groups = datasets.Dataset.from_dict({"group": list(range(math.ceil(len(tokens) / GROUP)))})
            key = self._key(split, *self._split_settings, self._tokenizer_digest, name, fn_kwargs)
            self._opened[name] = self._map_chunks(
                groups, name, key, function, {"tokens": tokens, **fn_kwargs}, texts_per_row=GROUP,
                batched=True, batch_size=batch_size, writer_batch_size=BATCH, features=features,
                remove_columns=["group"], desc=name,
            )
        return self._opened[name]

    def encode(self, split: str) -> datasets.Dataset:
        """Packed blocks of ``split`` (``train``, ``heldout_zh``, ``heldout_en``), cached on disk:
        each group of 1,000 consecutive texts is one token stream, cut into blocks."""
        tokenizer = self.tokenizer
        return self._per_group(split, "blocks", _pack, BATCH // GROUP, BLOCKS, cls=tokenizer.cls_token_id,
                               sep=tokenizer.sep_token_id, max_length=self.max_length)

    def collator(self, seed: int | None = None) -> DataCollatorForLanguageModeling:
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
        counts = self._per_group("train", "counts", _count, 10 * BATCH // GROUP, COUNTS, vocab_size=len(self.tokenizer))
        return {language: np.sum(counts[language], axis=0) for language in ("zh", "en")}

    def unigram_baseline_accuracy(self, language: str, batches: Sequence[dict[str, torch.Tensor]]) -> float:
        """Masked-token accuracy of always guessing the most frequent training token of
        ``language`` (of tokens equally frequent, the smallest id)."""
        top = int(self._train_token_counts[language].argmax())
        labels = torch.cat([batch["labels"][batch["labels"] != -100] for batch in batches])
        return float((labels == top).float().mean())

    # --- LightningDataModule hooks -----------------------------------------------------

    def prepare_data(self) -> None:
        """Read, tokenize and pack what the run needs into the cache, in one process per
        machine: on several processes the others wait, then load it in :meth:`setup`."""
        if self.trainer is None or self.trainer.state.fn == TrainerFn.FITTING:
            self.encode("train")
        for language in self.languages:
            self.encode(f"heldout_{language}")

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.datasets["train"] = self.encode("train")
        self.heldout_batches = {language: self.masked_heldout(language) for language in self.languages}

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


class BlockSampler(DistributedSampler):
    """``DistributedSampler``'s order and shares (a new shuffle each epoch from ``seed``; every
    ``num_replicas``-th block from ``rank``, as many on each process), held as a tensor, 8 bytes
    a block: its own Python list of every index takes about 40 on each process."""

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed + self.epoch))
        order = order.repeat(math.ceil(self.total_size / len(order)))[: self.total_size]  # padded as it pads
        return map(int, order[self.rank :: self.num_replicas].numpy())  # a tensor's iterator would unbind it whole


def _read_texts(files: list[tuple[int, str, list[str] | None]]) -> Iterator[dict]:
    """Rows ``{"text", "source"}`` of ``(source, path, text columns)`` files in order: a labelled
    file's texts (``text_a`` column, then ``text_b``), a text file's non-blank lines."""
    for source, path, text_fields in files:
        if text_fields is None:
            texts = _lines(path)
        else:
            columns = read_labelled_file(path, text_fields, label_field=None, label2idx=None)
            texts = (text for field in ("text_a", "text_b") for text in columns.get(field, []))
        for text in texts:
            yield {"text": text, "source": source}


def _lines(path: str) -> Iterator[str]:
    """The non-blank lines of a UTF-8 text file, a line at a time (split at "\\n" only: texts
    hold U+2028; a byte order mark skipped); errors name the file and the line."""
    offset, found = 0, False
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8").removesuffix("\n")
            except UnicodeDecodeError as err:
                raise DataFileError(f"{path}, line {number}: not UTF-8 (byte {offset + err.start} of the file: "
                                    f"{err.reason}); re-save the file as UTF-8.") from None
            offset += len(raw)
            if number == 1:
                line = line.removeprefix("\ufeff")
            if line.strip():
                found = True
                yield line
    if not found:
        raise DataFileError(f"{path}: no text (the file is empty or blank); add text or leave the file out.")


def _not_in(indices: list[int], rows: np.ndarray) -> np.ndarray:
    return np.isin(indices, rows, invert=True)


def _take(batch: pa.Table, indices: list[int], rows: np.ndarray, offset: int) -> pa.Table:
    return batch.take(np.flatnonzero(np.isin(np.asarray(indices) + offset, rows)))


def _tokenize(batch: dict[str, list], tokenizer: PreTrainedTokenizerBase) -> dict[str, list]:
    ids = tokenizer(batch["text"], add_special_tokens=False, return_attention_mask=False,
                    return_token_type_ids=False)["input_ids"]
    return {"input_ids": ids, "zh": [language(text) == "zh" for text in batch["text"]]}


def _pack(batch: dict[str, list], tokens: datasets.Dataset, cls: int, sep: int, max_length: int) -> dict[str, list]:
    """Each group's texts -> ``[CLS] t1 [SEP] t2 [SEP] ...`` blocks of at most ``max_length`` tokens."""
    body, blocks = max_length - 1, []
    for group in batch["group"]:
        stream = [token for ids in tokens[group * GROUP : (group + 1) * GROUP]["input_ids"] for token in ids + [sep]]
        blocks += [[cls] + stream[start : start + body] for start in range(0, len(stream), body)]
    return {"input_ids": [block for block in blocks if len(block) > 2]}


def _count(batch: dict[str, list], tokens: datasets.Dataset, vocab_size: int) -> dict[str, list]:
    """One row: how often each token id occurs in the groups' Chinese texts, and in their English texts."""
    groups = batch["group"]
    texts = tokens.with_format("arrow")[groups[0] * GROUP : (groups[-1] + 1) * GROUP]
    chinese = texts.column("zh")
    return {language: [np.bincount(pc.list_flatten(texts.column("input_ids").filter(rows)).to_numpy(),
                                   minlength=vocab_size)]
            for language, rows in (("zh", chinese), ("en", pc.invert(chinese)))}

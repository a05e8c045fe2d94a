"""A text corpus for masked-LM pretraining: the train splits of the long-tailed datasets, or files.

Texts are tokenized in batched ``datasets.map`` calls and packed into ``[CLS] ... [SEP]``
blocks of ``max_length`` tokens (texts separated by [SEP]), so no compute goes to padding.
A fixed share of the texts is held out, masked once with a fixed seed, and used to measure
masked-token accuracy per language (Chinese and English texts apart, since their tokens are
characters and words) next to that language's unigram baseline (always guess its most frequent
training token).
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import datasets
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, DataCollatorForLanguageModeling, PreTrainedTokenizerBase

from lt_tuning.data.prompt import template_words
from lt_tuning.data.reading import DataFileError, load_json_mapping, read_labelled_file, read_text
from lt_tuning.data.sources import cache_root, resolve_task_dir
from lt_tuning.data.tasks import TASKS
from lt_tuning.data.vocab import train_wordpiece_tokenizer

#: CJK Unified Ideographs (and extension A): a text holding one of them counts as Chinese.
_CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff]")


def language(text: str) -> str:
    """``"zh"`` if ``text`` holds a CJK ideograph, else ``"en"``: held-out accuracy is reported per language."""
    return "zh" if _CJK.search(text) else "en"


class MaskedLMCorpusDataModule(pl.LightningDataModule):
    """Training text -> packed, dynamically masked (80/10/10 at ``mlm_probability``) batches.

    Args:
        tasks: datasets of the study whose *train* split is read (never dev or test); their
            templates' words and verbalizer words are added to the vocabulary's training text,
            so that no prompt becomes [UNK].
        data_root: folder holding ``<task>/train.tsv``; None finds each task by
            :func:`~lt_tuning.data.sources.resolve_task_dir` (``$LT_TUNING_DATA``, the cache, or a download).
        text_files: more UTF-8 text files, one text per line.
        skip_missing: skip (with a warning) a task whose train split is absent, instead of failing.
        tokenizer: an existing tokenizer (hub name or folder); None trains a WordPiece
            vocabulary of ``vocab_size`` on the training texts (cached by corpus and settings).
        max_length: tokens per packed block, [CLS] and [SEP] included.
        mlm_probability: share of tokens chosen for prediction (80% [MASK], 10% random, 10% kept).
        heldout_fraction: share of texts kept out of training for masked-token accuracy.
        seed: fixes the held-out texts and their masking.
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
        batch_size: int = 64,
        num_workers: int = 0,
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
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.cache_dir = Path(cache_dir) if cache_dir else cache_root() / "corpus"
        self.datasets: dict[str, datasets.Dataset] = {}

    # --- the corpus --------------------------------------------------------------------

    def _task_dir(self, task: str) -> Path:
        return Path(self.data_root) / task if self.data_root else resolve_task_dir(task)

    @cached_property
    def sources(self) -> list[dict[str, str | int]]:
        """The files read, with their sha256 and number of texts (written beside the model)."""
        return [{"file": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "texts": len(texts)}
                for path, texts in self._texts]

    @cached_property
    def _texts(self) -> list[tuple[Path, list[str]]]:
        found = []
        for task in self.tasks:
            path = self._task_dir(task) / "train.tsv"
            if not path.is_file():
                if not self.skip_missing:
                    raise FileNotFoundError(f"{path}: the {task} train split is missing (or set skip_missing=true).")
                warnings.warn(f"{path} is missing: the {task} train split is left out of the corpus.", stacklevel=2)
                continue
            columns = read_labelled_file(path, TASKS[task].text_fields, label_field=None, label2idx=None)
            found.append((path, [text for field in ("text_a", "text_b") for text in columns.get(field, [])]))
        for name in self.text_files:
            lines = read_text(name).split("\n")  # not splitlines: texts hold U+2028
            found.append((Path(name), [line for line in lines if line.strip()]))
        if not any(texts for _, texts in found):
            raise DataFileError(f"The corpus is empty: no text in {[str(path) for path, _ in found] or self.tasks}.")
        return found

    @cached_property
    def split_texts(self) -> dict[str, list[str]]:
        """``train`` texts, and the held-out ones by language (``heldout_zh``, ``heldout_en``, those
        present): a seeded random ``heldout_fraction`` of all texts is held out."""
        texts = [text for _, group in self._texts for text in group]
        order = np.random.default_rng(self.seed).permutation(len(texts))
        n_heldout = max(1, int(round(self.heldout_fraction * len(texts))))
        splits: dict[str, list[str]] = {"train": [texts[i] for i in sorted(order[n_heldout:])]}
        for i in sorted(order[:n_heldout]):
            splits.setdefault(f"heldout_{language(texts[i])}", []).append(texts[i])
        return splits

    @property
    def languages(self) -> list[str]:
        """Languages of the held-out texts (``zh``, ``en``)."""
        return [split.removeprefix("heldout_") for split in self.split_texts if split != "train"]

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
        digest = hashlib.sha256(json.dumps([self.sources, self.seed, self.heldout_fraction,
                                            self.vocab_size_target, self._prompt_words()]).encode())
        folder = self.cache_dir / f"wordpiece-{digest.hexdigest()[:16]}"
        if (folder / "tokenizer.json").is_file():
            return AutoTokenizer.from_pretrained(folder)
        # Each prompt word is repeated so that it clears the trainer's min_frequency.
        texts = self.split_texts["train"] + self._prompt_words() * 2
        return train_wordpiece_tokenizer(texts, folder, vocab_size=self.vocab_size_target)

    @property
    def vocab_size(self) -> int:
        """Rows the model's embedding needs (the CLI links it to the model)."""
        return len(self.tokenizer)

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id

    # --- encoding ----------------------------------------------------------------------

    def _pack(self, batch: dict[str, list]) -> dict[str, list]:
        """Texts -> ``[CLS] t1 [SEP] t2 [SEP] ...`` blocks of at most ``max_length`` tokens."""
        tokenizer = self.tokenizer
        sep, cls = tokenizer.sep_token_id, tokenizer.cls_token_id
        stream: list[int] = []
        for ids in tokenizer(batch["text"], add_special_tokens=False)["input_ids"]:
            stream.extend(ids + [sep])
        body = self.max_length - 1
        blocks = [[cls] + stream[start : start + body] for start in range(0, len(stream), body)]
        return {"input_ids": [block for block in blocks if len(block) > 2]}

    def encode(self, split: str) -> datasets.Dataset:
        """Packed blocks of ``split`` (a key of :attr:`split_texts`), cached on disk."""
        digest = hashlib.sha256(json.dumps([
            split, self.sources, self.seed, self.heldout_fraction, self.max_length,
        ]).encode())
        digest.update(self.tokenizer.backend_tokenizer.to_str().encode())
        key = digest.hexdigest()[:16]
        cache_file = self.cache_dir / f"{split}-{key}.arrow"
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        return datasets.Dataset.from_dict({"text": self.split_texts[split]}).map(
            self._pack, batched=True, batch_size=1000, remove_columns=["text"],
            cache_file_name=str(cache_file), new_fingerprint=key, desc=f"Packing {split}",
        )

    def collator(self, seed: int | None = None) -> DataCollatorForLanguageModeling:
        return DataCollatorForLanguageModeling(self.tokenizer, mlm_probability=self.mlm_probability, seed=seed)

    def masked_heldout(self, language: str) -> list[dict[str, torch.Tensor]]:
        """The held-out blocks of ``language``, masked once with ``seed``: the same sample at every evaluation."""
        blocks = self.encode(f"heldout_{language}")
        collate = self.collator(seed=self.seed)
        return [collate([blocks[i] for i in range(start, min(start + self.batch_size, len(blocks)))])
                for start in range(0, len(blocks), self.batch_size)]

    @cached_property
    def _train_token_counts(self) -> dict[str, Counter]:
        """Token counts of the training texts, by language, special tokens left out."""
        counts: dict[str, Counter] = {}
        tokenized = self.tokenizer(self.split_texts["train"], add_special_tokens=False)["input_ids"]
        for text, ids in zip(self.split_texts["train"], tokenized):
            counts.setdefault(language(text), Counter()).update(ids)
        return counts

    def unigram_baseline_accuracy(self, language: str, batches: Sequence[dict[str, torch.Tensor]]) -> float:
        """Masked-token accuracy of always guessing the most frequent training token of ``language``."""
        top = self._train_token_counts[language].most_common(1)[0][0]
        labels = torch.cat([batch["labels"][batch["labels"] != -100] for batch in batches])
        return float((labels == top).float().mean())

    # --- LightningDataModule hooks -----------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.datasets["train"] = self.encode("train")
        self.heldout_batches = {language: self.masked_heldout(language) for language in self.languages}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.datasets["train"], batch_size=self.batch_size, shuffle=True, collate_fn=self.collator(),
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        """All held-out batches, both languages (already batched and masked)."""
        batches = [batch for group in self.heldout_batches.values() for batch in group]
        return DataLoader(batches, batch_size=None)

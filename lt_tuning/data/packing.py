"""Passes over the corpus in Arrow, a chunk at a time: tokenizing, packing into blocks, counting tokens.

No part of the corpus has to fit in memory: each pass is a ``datasets.map`` over a chunk of a
million texts on up to ``num_proc`` processes, cached on disk, so that no process reads more than
its share of a chunk; a second run over the same files and settings loads the cache.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow.compute as pc
from transformers import PreTrainedTokenizerBase

from lt_tuning.data.heldout import language

TOKENIZED = datasets.Features({"input_ids": datasets.List(datasets.Value("int32")), "zh": datasets.Value("bool")})
BLOCKS = datasets.Features({"input_ids": datasets.List(datasets.Value("int32"))})
COUNTS = datasets.Features({language: datasets.List(datasets.Value("int64")) for language in ("zh", "en")})
#: Texts packed as one token stream (as when the corpus was packed 1,000 texts a ``datasets.map`` batch).
GROUP = 1000
#: Texts per batch of a pass in Python, and per record batch of what it writes: opening a
#: memory-mapped Arrow file maps (and counts as resident) 64 KB around each record batch.
BATCH = 10_000
#: Texts per ``datasets.map`` call of a pass over the corpus. Each call starts its own processes,
#: and a process keeps the pages of the memory-mapped files it has read resident until it ends:
#: a chunk at a time, no process reads more than a chunk's share, whatever the corpus size.
CHUNK = 1_000_000


def processes(texts: int, num_proc: int) -> int:
    """Processes for a pass over ``texts`` texts: ``num_proc``, but one per 10,000 texts at most
    (starting one costs more than it saves on fewer)."""
    return max(1, min(num_proc, texts // BATCH))


def map_chunks(dataset: datasets.Dataset, cache_dir: Path, name: str, key: str, function: Callable,
               fn_kwargs: dict[str, Any], num_proc: int, texts_per_row: int = 1, **kwargs: Any) -> datasets.Dataset:
    """``dataset.map(function, fn_kwargs=fn_kwargs, **kwargs)`` over chunks of :data:`CHUNK` texts
    (``texts_per_row`` texts a row), each on up to ``num_proc`` processes and cached in ``cache_dir``
    as ``<name>-<key>-<first row>-<end row>``, concatenated in order. ``with_indices`` functions
    also get the chunk's first row as ``offset``: their indices count from it."""
    parts, rows = [], CHUNK // texts_per_row
    for start in range(0, max(len(dataset), 1), rows):
        stop = min(start + rows, len(dataset))
        parts.append(dataset.select(range(start, stop)).map(
            function, fn_kwargs={**fn_kwargs, **({"offset": start} if kwargs.get("with_indices") else {})},
            num_proc=processes((stop - start) * texts_per_row, num_proc), new_fingerprint=f"{key}-{start}-{stop}",
            cache_file_name=str(cache_dir / f"{name}-{key}-{start}-{stop}.arrow"), **kwargs,
        ))
    return datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]


def tokenize(batch: dict[str, list], tokenizer: PreTrainedTokenizerBase) -> dict[str, list]:
    ids = tokenizer(batch["text"], add_special_tokens=False, return_attention_mask=False,
                    return_token_type_ids=False)["input_ids"]
    return {"input_ids": ids, "zh": [language(text) == "zh" for text in batch["text"]]}


def pack(batch: dict[str, list], tokens: datasets.Dataset, cls: int, sep: int, max_length: int) -> dict[str, list]:
    """Each group's texts -> ``[CLS] t1 [SEP] t2 [SEP] ...`` blocks of at most ``max_length`` tokens."""
    body, blocks = max_length - 1, []
    for group in batch["group"]:
        stream = [token for ids in tokens[group * GROUP : (group + 1) * GROUP]["input_ids"] for token in ids + [sep]]
        blocks += [[cls] + stream[start : start + body] for start in range(0, len(stream), body)]
    return {"input_ids": [block for block in blocks if len(block) > 2]}


def count_tokens(batch: dict[str, list], tokens: datasets.Dataset, vocab_size: int) -> dict[str, list]:
    """One row: how often each token id occurs in the groups' Chinese texts, and in their English texts."""
    groups = batch["group"]
    texts = tokens.with_format("arrow")[groups[0] * GROUP : (groups[-1] + 1) * GROUP]
    chinese = texts.column("zh")
    return {language: [np.bincount(pc.list_flatten(texts.column("input_ids").filter(rows)).to_numpy(),
                                   minlength=vocab_size)]
            for language, rows in (("zh", chinese), ("en", pc.invert(chinese)))}

"""The held-out texts: a seeded share of the corpus, by language, and the unigram baseline.

Held-out accuracy is reported per language (Chinese and English texts apart, since their tokens
are characters and words) next to that language's unigram baseline: always guess its most
frequent training token.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import torch

#: CJK Unified Ideographs (and extension A): a text holding one of them counts as Chinese.
_CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff]")


def language(text: str) -> str:
    """``"zh"`` if ``text`` holds a CJK ideograph, else ``"en"``: held-out accuracy is reported per language."""
    return "zh" if _CJK.search(text) else "en"


def heldout_rows(n: int, seed: int, fraction: float, max_texts: int | None) -> np.ndarray:
    """Rows of ``n`` texts held out, in order: the first ``max(1, round(fraction * n))`` (at most
    ``max_texts``) of ``np.random.default_rng(seed).permutation(n)``."""
    order = np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)
    np.random.default_rng(seed).shuffle(order)  # the order permutation(n) gives, in 4 bytes a text
    count = max(1, int(round(fraction * n)))
    return np.sort(order[: min(count, max_texts or count)])


def unigram_baseline_accuracy(token_counts: np.ndarray, batches: Sequence[dict[str, torch.Tensor]]) -> float:
    """Masked-token accuracy of always guessing the most frequent token of ``token_counts`` (of
    tokens equally frequent, the smallest id) on the masked ``batches``."""
    top = int(token_counts.argmax())
    labels = torch.cat([batch["labels"][batch["labels"] != -100] for batch in batches])
    return float((labels == top).float().mean())


def not_heldout(indices: list[int], rows: np.ndarray) -> np.ndarray:
    """For ``datasets`` filter: which of the batch's rows (``indices``) are not among ``rows``."""
    return np.isin(indices, rows, invert=True)


def take_heldout(batch: pa.Table, indices: list[int], rows: np.ndarray, offset: int) -> pa.Table:
    """For ``datasets`` map over a chunk starting at row ``offset``: the batch's rows among ``rows``."""
    return batch.take(np.flatnonzero(np.isin(np.asarray(indices) + offset, rows)))

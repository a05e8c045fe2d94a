"""Text columns -> token ids in CLS format (``[CLS] a [SEP] (b [SEP])``, built by the tokenizer)
or prompt format (a :class:`~lt_tuning.data.prompt.Template` with one [MASK]).

Splits are tokenized by a fast tokenizer in batched ``datasets.map`` calls whose results are
cached on disk, keyed by a hash of everything an encoded row is made of: the rows themselves
(texts and label indices), the tokenizer and the encoding settings.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from transformers import BatchEncoding, PreTrainedTokenizerBase

from lt_tuning.data.prompt import Template, add_pseudo_tokens, truncate_longest_first

if TYPE_CHECKING:
    import datasets

InputFormat = Literal["cls", "prompt"]
_CACHE_VERSION = "3"  # 2: CLS pairs truncated by the study's tie rule; 3: mask_positions


def load_tokenizer(model_name_or_path: str, template: str) -> PreTrainedTokenizerBase:
    """The fast tokenizer of ``model_name_or_path``, with ``template``'s pseudo tokens added."""
    from transformers import AutoTokenizer  # imports torch: not for encode_batch alone

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, use_fast=True)
    except OSError as err:
        raise OSError(
            f"Cannot load a tokenizer from {model_name_or_path!r}: give an existing local folder "
            "or a model name on the Hugging Face hub (needs internet)."
        ) from err
    if not tokenizer.is_fast:
        raise ValueError(f"{model_name_or_path!r} has no fast tokenizer; lt-tuning needs one for speed.")
    add_pseudo_tokens(tokenizer, template)
    return tokenizer


def encode_columns(columns: dict[str, list], tokenizer: PreTrainedTokenizerBase, template: Template | None,
                   max_length: int, cache_file: Path) -> datasets.Dataset:
    """``columns`` with their texts replaced by ``input_ids`` (and ``mask_positions``), plus ``index``.

    Prompt format when ``template`` is given, else CLS format. ``cache_file`` gets a suffix that
    hashes the columns' contents with the tokenizer and the encoding settings: the inputs of the
    encoding itself, not the settings that led to them (file, label field, label order, row
    limit...), so a cached file is used only when it holds exactly these rows' encoding.
    """
    import datasets  # here: encode_batch alone (a classifier's texts) needs no datasets

    digest = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode())
    settings = [_CACHE_VERSION, max_length, template.text if template else None, tokenizer.all_special_ids,
                sorted(columns)]
    digest.update(json.dumps(settings).encode())
    for name in sorted(columns):
        digest.update(json.dumps(columns[name], ensure_ascii=False).encode())
    key = digest.hexdigest()[:16]
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    dataset = datasets.Dataset.from_dict({**columns, "index": list(range(len(columns["text_a"])))})
    return dataset.map(
        encode_batch,
        batched=True,
        fn_kwargs={"tokenizer": tokenizer, "template": template, "max_length": max_length},
        remove_columns=[name for name in ("text_a", "text_b") if name in columns],
        cache_file_name=f"{cache_file}-{key}.arrow",
        new_fingerprint=key,
        desc=f"Tokenizing {cache_file.name}",
    )


def encode_batch(
    batch: dict[str, list], tokenizer: PreTrainedTokenizerBase, template: Template | None, max_length: int
) -> dict[str, list]:
    """Texts ``text_a`` (``text_b``) -> ``input_ids`` (and ``mask_positions`` with a template)."""
    text_b = batch.get("text_b")
    if template is None:
        if text_b is None:
            return dict(tokenizer(batch["text_a"], truncation=True, max_length=max_length, return_attention_mask=False))
        encoded = tokenizer(batch["text_a"], text_b, return_attention_mask=False)
        budget = max_length - tokenizer.num_special_tokens_to_add(pair=True)
        rows = [_truncate_pair(encoded, i, budget) for i in range(len(text_b))]
        return {name: [row[name] for row in rows] for name in encoded}
    ids_a = tokenizer(batch["text_a"], add_special_tokens=False)["input_ids"]
    ids_b = tokenizer(text_b, add_special_tokens=False)["input_ids"] if text_b is not None else [None] * len(ids_a)
    input_ids = [template.encode(a, b, max_length) for a, b in zip(ids_a, ids_b)]
    return {"input_ids": input_ids, "mask_positions": [ids.index(tokenizer.mask_token_id) for ids in input_ids]}


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

"""Dynamic padding: pad each batch to its own longest sequence, not to max_length."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class PadCollator:
    """Stack encoded examples into a batch, padding ``input_ids`` to the batch's longest row.

    Output keys: ``input_ids``, ``attention_mask``, ``token_type_ids`` (only when the
    tokenizer uses them), ``labels`` (when examples have a label), ``mask_positions``
    (prompt format) and ``index`` (row number in the split, to map predictions back).
    """

    def __init__(self, pad_token_id: int, with_token_type_ids: bool = True) -> None:
        self.pad_token_id = pad_token_id
        self.with_token_type_ids = with_token_type_ids

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        width = max(len(example["input_ids"]) for example in examples)
        input_ids = torch.full((len(examples), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
        token_type_ids = torch.zeros((len(examples), width), dtype=torch.long)
        for row, example in enumerate(examples):
            length = len(example["input_ids"])
            input_ids[row, :length] = torch.tensor(example["input_ids"])
            attention_mask[row, :length] = 1
            if "token_type_ids" in example:
                token_type_ids[row, :length] = torch.tensor(example["token_type_ids"])
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.with_token_type_ids:
            batch["token_type_ids"] = token_type_ids
        for key, out in (("label", "labels"), ("mask_pos", "mask_positions"), ("index", "index")):
            if key in examples[0]:
                batch[out] = torch.tensor([example[key] for example in examples], dtype=torch.long)
        return batch

"""The verbalizer: label words as token ids, and masked-LM logits at [MASK] -> class logits.

One object owns what prompt-tuning knows about the label words, as OpenPrompt's
``ManualVerbalizer`` does (one word per class). The DataModule builds it from its tokenizer;
the prompt-tuning module holds it as a submodule, so it is saved in every checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from transformers import PreTrainedTokenizerBase


class Verbalizer(nn.Module):
    """Class ``c`` is the word whose token ids are ``token_ids[c, mask[c]]``.

    Args:
        token_ids: ``[C, L]`` token ids of each class's word, right-padded.
        mask: ``[C, L]`` boolean, True at a word's real tokens (each row has at least one).
    """

    def __init__(self, token_ids: torch.Tensor, mask: torch.Tensor) -> None:
        super().__init__()
        if token_ids.shape != mask.shape or token_ids.dim() != 2 or not mask.any(dim=1).all():
            raise ValueError("token_ids and mask must both be [classes, tokens], with a real token in every row.")
        self.register_buffer("token_ids", token_ids.long())
        self.register_buffer("mask", mask.bool())

    @classmethod
    def from_token_ids(cls, rows: Sequence[Sequence[int]]) -> Verbalizer:
        """A verbalizer from each class's word as a row of token ids, in label order."""
        ids = [torch.as_tensor(row, dtype=torch.long) for row in rows]
        mask = [torch.ones(len(row), dtype=torch.bool) for row in rows]
        return cls(pad_sequence(ids, batch_first=True), pad_sequence(mask, batch_first=True))

    @classmethod
    def from_words(cls, label_words: Mapping[str, str], labels: Sequence[str], tokenizer: PreTrainedTokenizerBase,
                   space_before: bool = False, source: str = "verbalizer") -> Verbalizer:
        """Tokenize each label's word (``label_words[label]``, in ``labels`` order).

        ``space_before``: the word follows a space in the template (matters for BPE vocabularies).
        Raises, naming ``source``, if a label has no word or a word tokenizes to nothing or to
        [UNK] (its score would be meaningless).
        """
        missing = [label for label in labels if label not in label_words]
        if missing:
            raise ValueError(f"{source}: no verbalizer word for label(s) {missing}; add an entry 'label': 'word' for "
                             f"each, keyed by the label's name or its index 0..{len(labels) - 1}.")
        words = [(" " if space_before else "") + label_words[label] for label in labels]
        rows = tokenizer(words, add_special_tokens=False)["input_ids"]
        for label, row in zip(labels, rows):
            if not row or tokenizer.unk_token_id in row:
                raise ValueError(
                    f"{source}: the verbalizer word {label_words[label]!r} of label {label!r} tokenizes to "
                    f"{tokenizer.convert_ids_to_tokens(row)}; choose a word in the tokenizer's vocabulary."
                )
        return cls.from_token_ids(rows)

    @property
    def num_classes(self) -> int:
        """The number of classes, one label word each."""
        return self.token_ids.shape[0]

    def forward(self, vocab_logits: torch.Tensor) -> torch.Tensor:
        """Class logits ``[B, C]`` from vocabulary logits ``[B, V]``: the mean over each word's tokens."""
        token_logits = vocab_logits[:, self.token_ids]  # [B, C, L]
        mask = self.mask.to(token_logits.dtype)
        return (token_logits * mask).sum(dim=-1) / mask.sum(dim=-1)

    def weight_norms(self, output_embeddings: torch.Tensor) -> torch.Tensor:
        """``[C]`` L2 norms of the class weights: class c's logit is the [MASK] feature times the mean
        output embedding of its word's tokens (plus their mean bias), ``output_embeddings`` ``[V, H]``."""
        return self(output_embeddings.T).norm(p=2, dim=0)  # row h of the map: the weights' component h

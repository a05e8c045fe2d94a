"""Prompt-tuning: the pretrained masked-LM head scores verbalizer words at the [MASK]."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lt_tuning.data.prompt import pad_token_rows
from lt_tuning.models.backbone import encoder_inputs, gather_positions, load_masked_lm, mlm_head
from lt_tuning.models.base import LongTailedClassifier


class PromptTuningModule(LongTailedClassifier):
    """Prompt-tuning with a verbalizer-mapped MLM head.

    The encoder runs over the prompt; only the [MASK] position goes through the MLM head (the
    vocabulary projection of every other position is never computed). A class logit is the
    mean vocabulary logit of its verbalizer word's tokens, padding masked.

    Args:
        decouple_embeddings: "w/ ed.": untie the output embeddings from the input embeddings
            (the output ones start as a copy and then train separately).
        label_token_ids: each class's verbalizer token ids, in label order. None takes them from
            the DataModule when training starts (and stores them in the hyperparameters, so
            the checkpoint is self-contained).
    Other arguments: see :class:`LongTailedClassifier`.
    """

    input_format = "prompt"

    def __init__(
        self,
        model_name_or_path: str,
        num_classes: int,
        decouple_embeddings: bool = False,
        label_token_ids: Sequence[Sequence[int]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name_or_path, num_classes, **kwargs)
        self.mlm = load_masked_lm(model_name_or_path)
        mlm_head(self.mlm)  # fail now, not at the first batch, on an unsupported head
        self._grow_embeddings(self.mlm)
        if decouple_embeddings:
            output = self.mlm.get_output_embeddings()
            output.weight = nn.Parameter(self.mlm.get_input_embeddings().weight.detach().clone())
            self.mlm.config.tie_word_embeddings = False
        self.register_buffer("verbalizer_ids", None, persistent=False)
        self.register_buffer("verbalizer_mask", None, persistent=False)
        if label_token_ids is not None:
            self.set_verbalizer(label_token_ids)

    def set_verbalizer(self, label_token_ids: Sequence[Sequence[int]]) -> None:
        """Use ``label_token_ids`` (one row of token ids per class) as the verbalizer."""
        if len(label_token_ids) != self.num_classes:
            raise ValueError(f"The verbalizer has {len(label_token_ids)} rows for {self.num_classes} classes.")
        ids, mask = pad_token_rows(label_token_ids)
        self.hparams.label_token_ids = [list(map(int, row)) for row in label_token_ids]
        device = self.mlm.device
        self.register_buffer("verbalizer_ids", ids.to(device), persistent=False)
        self.register_buffer("verbalizer_mask", mask.to(device), persistent=False)

    def setup(self, stage: str) -> None:
        if self.verbalizer_ids is None:
            datamodule = self.trainer.datamodule
            if datamodule is None or not hasattr(datamodule, "verbalizer_ids"):
                raise ValueError("PromptTuningModule needs label_token_ids or a lt-tuning DataModule with a verbalizer.")
            ids, mask = datamodule.verbalizer_ids
            self.set_verbalizer([row[keep].tolist() for row, keep in zip(ids, mask)])

    def class_weight_norms(self) -> torch.Tensor:
        """Norm of each class's mean verbalizer output embedding: a class logit is its dot
        product with the [MASK] feature (plus the tokens' mean bias)."""
        embeddings = self.mlm.get_output_embeddings().weight[self.verbalizer_ids]  # [C, L, H]
        mask = self.verbalizer_mask.to(embeddings.dtype)[..., None]
        return ((embeddings * mask).sum(dim=1) / mask.sum(dim=1)).norm(p=2, dim=-1)

    def class_scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "mask_positions" not in batch:
            raise ValueError("PromptTuningModule needs prompt-format batches: set the DataModule's input_format='prompt'.")
        hidden = self.mlm.base_model(**encoder_inputs(batch)).last_hidden_state
        vocab_logits = mlm_head(self.mlm)(gather_positions(hidden, batch["mask_positions"]))  # [B, V]
        token_logits = vocab_logits[:, self.verbalizer_ids]  # [B, C, L]
        mask = self.verbalizer_mask.to(token_logits.dtype)
        return (token_logits * mask).sum(dim=-1) / mask.sum(dim=-1)

"""Prompt-tuning: the pretrained masked-LM head scores verbalizer words at the [MASK]."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from lt_tuning.models.backbone import encoder_inputs, load_masked_lm, mask_hidden, mlm_head
from lt_tuning.models.base import LongTailedClassifier
from lt_tuning.verbalizer import Verbalizer


class PromptTuningModule(LongTailedClassifier):
    """Prompt-tuning with a verbalizer-mapped MLM head.

    The encoder runs over the prompt; only the [MASK] position goes through the MLM head (the
    vocabulary projection of every other position is never computed); the
    :class:`~lt_tuning.verbalizer.Verbalizer` turns its vocabulary logits into class logits.

    Args:
        verbalizer: the label words (the CLI links the DataModule's; in Python pass
            ``datamodule.verbalizer``). Saved in checkpoints as part of the module's state, so
            ``load_from_checkpoint`` needs none.
        decouple_embeddings: "w/ ed.": untie the output embeddings from the input embeddings
            (the output ones start as a copy and then train separately).
    Other arguments: see :class:`LongTailedClassifier`.
    """

    input_format = "prompt"

    def __init__(
        self,
        model_name_or_path: str,
        num_classes: int,
        verbalizer: Verbalizer | None = None,
        decouple_embeddings: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name_or_path, num_classes, **kwargs)
        if verbalizer is not None and verbalizer.num_classes != num_classes:
            raise ValueError(f"The verbalizer has words for {verbalizer.num_classes} classes, not {num_classes}.")
        self.verbalizer = verbalizer
        self.mlm = load_masked_lm(model_name_or_path)
        mlm_head(self.mlm)  # fail now, not at the first batch, on an unsupported head
        self._grow_embeddings(self.mlm)
        if decouple_embeddings:
            output = self.mlm.get_output_embeddings()
            output.weight = nn.Parameter(self.mlm.get_input_embeddings().weight.detach().clone())
            self.mlm.config.tie_word_embeddings = False

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A module built without a verbalizer takes the checkpoint's (loaded right after this)."""
        super().on_load_checkpoint(checkpoint)
        if self.verbalizer is None:
            state = checkpoint["state_dict"]
            self.verbalizer = Verbalizer(state["verbalizer.token_ids"], state["verbalizer.mask"])

    def _verbalizer(self) -> Verbalizer:
        if self.verbalizer is None:
            raise ValueError(
                "The PromptTuningModule has no verbalizer: pass verbalizer=datamodule.verbalizer (the DataModule "
                "needs label words: `verbalizer`, label -> word or a verbalizer.json path)."
            )
        return self.verbalizer

    @property
    def backbone(self) -> PreTrainedModel:
        return self.mlm

    def class_weight_norms(self) -> torch.Tensor:
        return self._verbalizer().weight_norms(self.mlm.get_output_embeddings().weight)

    def class_scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.mlm.base_model(**encoder_inputs(batch)).last_hidden_state
        vocab_logits = mlm_head(self.mlm)(mask_hidden(hidden, batch, "PromptTuningModule"))  # [B, V]
        return self._verbalizer()(vocab_logits)

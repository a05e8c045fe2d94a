"""CLS-tuning: a classifier head on the encoder's [CLS] (or [MASK]) hidden state."""

from __future__ import annotations

import copy
from typing import Any, Literal

import torch
from torch import nn
from transformers import PreTrainedModel

from lt_tuning.models.backbone import encoder_inputs, load_encoder, load_masked_lm, mask_hidden, mlm_head_layer_norm
from lt_tuning.models.base import LongTailedClassifier


class ClsTuningModule(LongTailedClassifier):
    """CLS-tuning and the study's steps from it towards prompt-tuning.

    Head: ``Linear(h, h) -> activation -> Dropout -> [LayerNorm] -> Linear(h, C)``.

    Args:
        activation: ``tanh`` (the study's main table, "T") or ``relu`` (its analysis, "R").
        layer_norm: ``none``; ``fresh`` ("w/ LN": a new LayerNorm before the last Linear);
            ``pretrained`` ("w/ pt. LN": the MLM head's shape, Linear -> act -> LayerNorm ->
            Linear, no dropout, the LayerNorm copied from the pretrained MLM head's transform).
        use_prompt: "w/ prompt": feed prompt-format input and classify the [MASK] hidden state.
        dropout: dropout probability inside the head.
    Other arguments: see :class:`LongTailedClassifier`; the study's "w/ eta-norm" is its
    ``tau_norm=1.1`` (each class logit, bias included, divided by ``||w_c||^1.1`` at inference).
    """

    def __init__(
        self,
        model_name_or_path: str,
        num_classes: int,
        activation: Literal["tanh", "relu"] = "tanh",
        layer_norm: Literal["none", "fresh", "pretrained"] = "none",
        use_prompt: bool = False,
        dropout: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name_or_path, num_classes, **kwargs)
        self.input_format = "prompt" if use_prompt else "cls"
        if layer_norm == "pretrained":
            mlm = load_masked_lm(model_name_or_path)
            pretrained_norm = copy.deepcopy(mlm_head_layer_norm(mlm))
            self.encoder = mlm.base_model
        else:
            self.encoder = load_encoder(model_name_or_path)
        self._grow_embeddings(self.encoder)
        config = self.encoder.config
        hidden = config.hidden_size
        layers: list[nn.Module] = [nn.Linear(hidden, hidden), nn.Tanh() if activation == "tanh" else nn.ReLU()]
        if layer_norm != "pretrained":
            layers.append(nn.Dropout(dropout))
        if layer_norm == "fresh":
            layers.append(nn.LayerNorm(hidden))  # torch's eps 1e-5, as the study's "w/ LN" (not the encoder's)
        elif layer_norm == "pretrained":
            layers.append(pretrained_norm)
        layers.append(nn.Linear(hidden, num_classes))
        self.head = nn.Sequential(*layers)
        for module in self.head:
            if isinstance(module, nn.Linear):  # the encoder's own init, as the study's code did
                nn.init.normal_(module.weight, std=getattr(config, "initializer_range", 0.02))
                nn.init.zeros_(module.bias)

    @property
    def backbone(self) -> PreTrainedModel:
        return self.encoder

    def class_weight_norms(self) -> torch.Tensor:
        return self.head[-1].weight.norm(p=2, dim=1)

    def class_scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.encoder(**encoder_inputs(batch)).last_hidden_state
        return self.head(mask_hidden(hidden, batch, "use_prompt=True") if self.hparams.use_prompt else hidden[:, 0])

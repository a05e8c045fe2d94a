"""Loading pretrained encoders and reaching into their masked-LM heads, for any architecture."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers import AutoModel, AutoModelForMaskedLM, PreTrainedModel


def _from_pretrained(auto_class: type, model_name_or_path: str) -> PreTrainedModel:
    """``auto_class.from_pretrained`` in train mode, with errors that say what to do."""
    try:
        model = auto_class.from_pretrained(model_name_or_path)
    except OSError as err:
        raise OSError(
            f"Cannot load {model_name_or_path!r}: give an existing local model folder or a hub name (needs internet)."
        ) from err
    return model.train()  # from_pretrained returns eval mode; Lightning keeps each module's mode


def load_masked_lm(model_name_or_path: str) -> PreTrainedModel:
    """The pretrained masked LM (encoder + MLM head)."""
    try:
        return _from_pretrained(AutoModelForMaskedLM, model_name_or_path)
    except ValueError as err:
        raise ValueError(
            f"{model_name_or_path!r} has no masked-LM head that AutoModelForMaskedLM knows; prompt-tuning and "
            "'pretrained' layer norm need one (e.g. BERT, RoBERTa, ELECTRA generator)."
        ) from err


def load_encoder(model_name_or_path: str) -> PreTrainedModel:
    """The bare encoder (``AutoModel``), without the pooler: lt-tuning never uses it."""
    encoder = _from_pretrained(AutoModel, model_name_or_path)
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None  # unused parameters would stall DDP
    return encoder


def mlm_head(model: PreTrainedModel) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function hidden states ``[..., H]`` -> vocabulary logits ``[..., V]`` of ``model``'s MLM head."""
    if hasattr(model, "cls"):  # BERT family
        return model.cls
    if hasattr(model, "lm_head"):  # RoBERTa family
        return model.lm_head
    if hasattr(model, "generator_predictions"):  # ELECTRA generator
        return lambda hidden: model.generator_lm_head(model.generator_predictions(hidden))
    raise ValueError(f"{type(model).__name__}: unsupported masked-LM head; supported are BERT, RoBERTa and ELECTRA.")


def mlm_head_layer_norm(model: PreTrainedModel) -> nn.LayerNorm:
    """The LayerNorm of the MLM head's transform (the first LayerNorm outside the encoder)."""
    encoder = model.base_model
    inside = {id(module) for module in encoder.modules()}
    for module in model.modules():
        if isinstance(module, nn.LayerNorm) and id(module) not in inside:
            return module
    raise ValueError(f"{type(model).__name__}: its masked-LM head has no LayerNorm to initialise from.")


def gather_positions(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """``hidden[b, positions[b]]`` for each row b: ``[B, T, H]`` -> ``[B, H]``."""
    return hidden[torch.arange(hidden.size(0), device=hidden.device), positions]


def encoder_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keys of a batch that the encoder takes."""
    return {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in batch}

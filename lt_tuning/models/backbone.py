"""Loading pretrained encoders and reaching into their masked-LM heads, for any architecture."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, PreTrainedModel

_CONFIG_ONLY: ContextVar[bool] = ContextVar("config_only", default=False)


@contextmanager
def config_only() -> Iterator[None]:
    """Inside, backbones are built from the folder's ``config.json`` alone, with random weights:
    for rebuilding a saved classifier, whose own state dict then fills in every weight."""
    token = _CONFIG_ONLY.set(True)
    try:
        yield
    finally:
        _CONFIG_ONLY.reset(token)


def _from_pretrained(
    auto_class: type, model_name_or_path: str, **kwargs: Any
) -> PreTrainedModel | tuple[PreTrainedModel, dict]:
    """``auto_class.from_pretrained`` in float32 and train mode, with errors that say what to do.

    A checkpoint stored in half precision is widened to float32: lt-tuning trains in float32
    (or in mixed precision, which keeps float32 weights).
    """
    if _CONFIG_ONLY.get():
        info = kwargs.pop("output_loading_info", False)
        model = auto_class.from_config(AutoConfig.from_pretrained(model_name_or_path), dtype=torch.float32, **kwargs)
        return (model, {"missing_keys": []}) if info else model
    try:
        loaded = auto_class.from_pretrained(model_name_or_path, dtype=torch.float32, **kwargs)
    except OSError as err:
        raise OSError(
            f"Cannot load {model_name_or_path!r}: give an existing local model folder or a hub name (needs internet)."
        ) from err
    model = loaded[0] if kwargs.get("output_loading_info") else loaded
    model.train()  # from_pretrained returns eval mode; Lightning keeps each module's mode
    return loaded


def load_masked_lm(model_name_or_path: str) -> PreTrainedModel:
    """The pretrained masked LM (encoder + MLM head); refuses a checkpoint without the head's weights."""
    try:
        model, info = _from_pretrained(AutoModelForMaskedLM, model_name_or_path, output_loading_info=True)
    except ValueError as err:
        raise ValueError(
            f"{model_name_or_path!r} has no masked-LM head that AutoModelForMaskedLM knows; prompt-tuning and "
            "'pretrained' layer norm need one (e.g. BERT, RoBERTa, ELECTRA generator)."
        ) from err
    encoder = f"{model.base_model_prefix}."
    head = {name for name, _ in model.named_parameters() if not name.startswith(encoder)}
    if head and head <= set(info["missing_keys"]):  # else the head would start from random weights
        raise ValueError(
            f"{model_name_or_path!r} holds no masked-LM head weights (an encoder-only checkpoint); prompt-tuning "
            "and 'pretrained' layer norm need a checkpoint saved with its MLM head, e.g. bert-base-chinese."
        )
    return model


@contextmanager
def _no_load_report() -> Iterator[None]:
    """Inside, transformers logs no loading report (it would list the checkpoint's MLM head, which
    CLS-tuning drops by design, as UNEXPECTED keys "not ok if you expect identical arch")."""
    logger = logging.getLogger("transformers.modeling_utils")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_encoder(model_name_or_path: str) -> PreTrainedModel:
    """The bare encoder (``AutoModel``), without the pooler: lt-tuning never uses it. Weights the
    checkpoint lacks are named in a warning; those it has beyond the encoder (a head) go unsaid."""
    with _no_load_report():
        try:  # not built at all: a masked-LM checkpoint has no pooler weights to load
            encoder, info = _from_pretrained(AutoModel, model_name_or_path, add_pooling_layer=False,
                                             output_loading_info=True)
        except TypeError:  # architectures without that argument (e.g. ELECTRA)
            encoder, info = _from_pretrained(AutoModel, model_name_or_path, output_loading_info=True)
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        warnings.warn(f"{model_name_or_path}: {len(missing)} encoder weight(s) are not in the checkpoint and start "
                      f"from random values: {', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}.",
                      stacklevel=2)
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


def grow_embeddings(model: PreTrainedModel, vocab_size: int, init_token_ids: list[int] | None = None) -> None:
    """Add input-embedding rows up to ``vocab_size`` (the template's pseudo tokens, a soft prompt).

    New rows start as the mean embedding of ``init_token_ids`` (a word), else random like the
    model's own init; a tied output embedding grows with them. They train with the rest.
    """
    old = model.get_input_embeddings().num_embeddings
    if vocab_size <= old:
        return
    model.resize_token_embeddings(vocab_size, mean_resizing=False)
    weight = model.get_input_embeddings().weight
    with torch.no_grad():
        if init_token_ids:
            weight[old:] = weight[init_token_ids].mean(dim=0)
        else:
            weight[old:].normal_(0.0, getattr(model.config, "initializer_range", 0.02))


def mask_hidden(hidden: torch.Tensor, batch: dict[str, torch.Tensor], reader: str) -> torch.Tensor:
    """The hidden state at each row's [MASK], ``[B, T, H]`` -> ``[B, H]``; ``reader`` is named in the error
    for a batch without ``mask_positions`` (not prompt format)."""
    if "mask_positions" not in batch:
        raise ValueError(f"{reader} needs prompt-format batches: set the DataModule's input_format='prompt'.")
    return hidden[torch.arange(hidden.size(0), device=hidden.device), batch["mask_positions"]]


def encoder_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The keys of a batch that the encoder takes."""
    return {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids") if key in batch}

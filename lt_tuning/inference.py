"""Run a trained classifier on PyTorch: from a checkpoint or an exported folder alone; export it.

A checkpoint of ``fit`` holds everything classifying new text needs: the module's weights and
arguments, its backbone's config (:meth:`LongTailedClassifier.on_save_checkpoint`), and the
DataModule's tokenizer files, label names and words, template, text fields and ``max_length``
(:attr:`LongTailedDataModule.inference_spec`). :func:`load_torch_classifier` rebuilds the
classifier from that alone; :func:`export_classifier` writes a folder: PyTorch weights that
transformers loads too where a variant has a transformers equivalent, or an ONNX graph
(:mod:`lt_tuning.onnx_export`) that runs without torch (:mod:`lt_tuning.onnx_runtime`).
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, PreTrainedTokenizerBase

from lt_tuning.classifier import TextClassifier, default_device, load_classifier, load_tokenizer_folder
from lt_tuning.data.prompt import Template
from lt_tuning.models.backbone import config_only
from lt_tuning.models.base import LongTailedClassifier
from lt_tuning.models.cls_tuning import ClsTuningModule
from lt_tuning.models.prompt_tuning import PromptTuningModule
from lt_tuning.settings import ClassifierSettings
from lt_tuning.verbalizer import Verbalizer

MODULE_WEIGHTS = "lt_tuning_module.safetensors"  # the module's weights, for a variant transformers cannot load
ExportFormat = Literal["pytorch", "onnx"]

__all__ = ["TextClassifier", "TorchClassifier", "export_classifier", "load_classifier", "load_torch_classifier"]


class TorchClassifier(TextClassifier):
    """A :class:`~lt_tuning.classifier.TextClassifier` whose LightningModule runs in eval mode,
    without gradients, on its device; ``predict_proba`` gives a CPU ``torch.Tensor`` (NumPy with
    ``as_numpy=True``)."""

    def __init__(self, module: LongTailedClassifier, tokenizer: PreTrainedTokenizerBase,
                 settings: ClassifierSettings) -> None:
        super().__init__(tokenizer, settings)
        self.module = module.eval()

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def to(self, device: str | torch.device) -> TorchClassifier:
        self.module.to(device)
        return self

    @torch.inference_mode()
    def _probabilities(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        tensors = {key: torch.from_numpy(value).to(self.device) for key, value in batch.items()}
        return self.module(tensors).float().softmax(dim=-1).cpu().numpy()

    def _output(self, probs: np.ndarray, as_numpy: bool) -> np.ndarray | torch.Tensor:
        return probs if as_numpy else torch.from_numpy(probs)

    def save_pretrained(self, folder: str | os.PathLike, format: ExportFormat = "pytorch",
                        quantize: Literal["int8"] | None = None) -> str | None:
        """Write this classifier as an exported folder (see :func:`export_classifier`)."""
        if format == "onnx":
            from lt_tuning.onnx_export import export_onnx

            export_onnx(self, Path(folder), quantize)
            return None
        if quantize is not None:
            raise ValueError("quantize applies to --format onnx only; a PyTorch export keeps float32 weights.")
        return _export(self.module, self.tokenizer, self.settings, Path(folder))


def load_torch_classifier(path: str | os.PathLike, device: str | None = None) -> TorchClassifier:
    """The classifier of a checkpoint of ``fit`` or a PyTorch folder of :func:`export_classifier`,
    on ``device`` (default: :func:`~lt_tuning.classifier.default_device`)."""
    path = Path(path)
    if path.is_dir():
        settings = ClassifierSettings.load(path)
        if settings.format == "onnx":
            raise ValueError(f"{path} holds an ONNX graph, not PyTorch weights: load it with load_classifier.")
        saved = {"state_dict": load_file(path / MODULE_WEIGHTS)} if settings.format == "pytorch" else {}
        classifier = _build(settings, path, saved)
    else:
        saved = _read_checkpoint(path)
        with tempfile.TemporaryDirectory() as folder:  # the backbone's config and the tokenizer, for from_pretrained
            for name, content in saved["tokenizer_files"].items():
                Path(folder, name).write_bytes(content)
            Path(folder, "config.json").write_text(json.dumps(saved["backbone_config"]), encoding="utf-8")
            classifier = _build(saved["settings"], Path(folder), saved)
    return classifier.to(device or default_device())


def _build(settings: ClassifierSettings, folder: Path, saved: dict[str, Any]) -> TorchClassifier:
    """The classifier whose backbone config and tokenizer are in ``folder``, weights in ``saved``."""
    tokenizer = load_tokenizer_folder(folder)
    module_path, _, class_name = settings.module.rpartition(".")
    module_class = getattr(importlib.import_module(module_path), class_name)
    with config_only():  # random weights at first: the saved state dict fills every one in
        module = module_class(**{**settings.hyper_parameters, "model_name_or_path": str(folder)})
    state = saved["state_dict"] if "state_dict" in saved else _module_state(module, settings, folder)
    module.on_load_checkpoint({"state_dict": state})  # the verbalizer's shape, for prompt-tuning
    module.load_state_dict(state)
    return TorchClassifier(module, tokenizer, settings)


def export_classifier(ckpt_path: str | os.PathLike, output_dir: str | os.PathLike, format: ExportFormat = "pytorch",
                      quantize: Literal["int8"] | None = None) -> str | None:
    """Write the classifier of ``ckpt_path`` into ``output_dir``; returns the transformers Auto class
    that loads the folder, or None when the variant has none or the format is ONNX.

    ``format="pytorch"``: CLS-tuning with the tanh head on BERT or RoBERTa is
    ``AutoModelForSequenceClassification`` (``pipeline("text-classification")`` gives the same
    probabilities); prompt-tuning is ``AutoModelForMaskedLM`` plus ``lt_tuning.json`` (template
    pieces, labels, verbalizer token ids); other variants are lt-tuning's own safetensors.
    ``format="onnx"``: one self-contained ``model.onnx`` that maps token ids to class
    probabilities, for every variant (``quantize="int8"``: dynamically quantized weights).
    Every folder loads back with :func:`~lt_tuning.classifier.load_classifier`.
    """
    classifier = load_torch_classifier(ckpt_path, "cpu")
    return classifier.save_pretrained(output_dir, format, quantize)


# --- what transformers can load ------------------------------------------------------------

def transformers_equivalent(module: LongTailedClassifier) -> tuple[type, dict[str, str]] | str:
    """The transformers Auto class whose model computes ``module``'s probabilities, with the map
    from the module's state-dict names to that model's; else why there is none."""
    arguments = module.hparams
    if arguments.get("tau_norm") is not None or arguments.get("logit_adjustment") == "posthoc" \
            or arguments.get("temperature_scaling"):
        return ("tau-norm, post-hoc logit adjustment and temperature scaling change the logits at inference; "
                "transformers has no such step")
    if isinstance(module, PromptTuningModule):
        return AutoModelForMaskedLM, {f"mlm.{name}": name for name in module.mlm.state_dict()}
    if not isinstance(module, ClsTuningModule):
        return f"{type(module).__name__} has no transformers equivalent"
    model_type = module.encoder.config.model_type
    if (arguments["activation"], arguments["layer_norm"], arguments["use_prompt"]) != ("tanh", "none", False):
        return "only CLS-tuning with the tanh head (no layer norm, no prompt) is a sequence-classification head"
    heads = {"bert": ("bert.pooler.dense", "classifier"), "roberta": ("classifier.dense", "classifier.out_proj")}
    if model_type not in heads:
        return f"the {model_type} sequence-classification head differs from CLS-tuning's (BERT and RoBERTa match)"
    names = {f"encoder.{name}": f"{module.encoder.base_model_prefix}.{name}" for name in module.encoder.state_dict()}
    for layer, target in zip(("head.0", "head.3"), heads[model_type]):
        names.update({f"{layer}.{kind}": f"{target}.{kind}" for kind in ("weight", "bias")})
    return AutoModelForSequenceClassification, names


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, settings: ClassifierSettings, folder: Path) -> None:
    """The tokenizer's own files in ``folder``, ``model_max_length`` the training ``max_length``
    (what ``truncation=True`` cuts to in transformers' pipeline)."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.model_max_length = settings.max_length
    tokenizer.save_pretrained(folder)


def _export(module: LongTailedClassifier, tokenizer: PreTrainedTokenizerBase, settings: ClassifierSettings,
            folder: Path) -> str | None:
    save_tokenizer(tokenizer, settings, folder)
    settings = copy.deepcopy(settings)
    equivalent = transformers_equivalent(module)
    config = module.backbone.config
    if isinstance(module, PromptTuningModule):
        template = Template.parse(settings.template, tokenizer, len(settings.text_fields))
        settings.template_pieces = list(template.pieces)
        settings.verbalizer_token_ids = [ids[mask].tolist() for ids, mask in
                                         zip(module.verbalizer.token_ids, module.verbalizer.mask)]
    if isinstance(equivalent, str):
        config.save_pretrained(folder)
        # cloned: safetensors refuses tensors that share memory (tied embeddings)
        save_file({name: tensor.detach().clone() for name, tensor in module.state_dict().items()}, folder / MODULE_WEIGHTS)
        settings.format, settings.transformers, settings.why_not_transformers = "pytorch", None, equivalent
    else:
        auto_class, names = equivalent
        config = copy.deepcopy(config)
        config.id2label = dict(enumerate(settings.labels))  # pipeline("text-classification") names the labels
        config.label2id = {label: index for index, label in enumerate(settings.labels)}
        model = auto_class.from_config(config)
        state = module.state_dict()
        model.load_state_dict({target: state[name] for name, target in names.items()}, strict=True)
        model.save_pretrained(folder)
        settings.format, settings.transformers, settings.why_not_transformers = "transformers", auto_class.__name__, None
    settings.save(folder)
    return settings.transformers


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """The settings, tokenizer files, backbone config and weights a checkpoint of ``fit`` holds."""
    not_a_checkpoint = (f"{path} is not a checkpoint of `lt-tuning fit`: give a .ckpt file it wrote (e.g. "
                        "lightning_logs/version_0/checkpoints/best-step=500.ckpt) or a folder of `lt-tuning export`")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else would fail deep in unpickling
        raise ValueError(f"{not_a_checkpoint}.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError) as error:
        raise ValueError(f"{not_a_checkpoint} (torch cannot read it: {str(error).splitlines()[0]}).") from None
    specs = [value["inference"] for value in checkpoint.values() if isinstance(value, dict) and "inference" in value] \
        if isinstance(checkpoint, dict) else []
    if not specs or "lt_tuning" not in checkpoint:
        raise ValueError(
            f"{path} does not hold what classifying raw text needs (the DataModule's tokenizer, labels and "
            "template, the backbone's config): it was saved by an older lt-tuning or without an lt-tuning "
            "DataModule. Train it again with this version, or evaluate it with `lt-tuning predict --config ...`."
        )
    saved = checkpoint["lt_tuning"]
    settings = ClassifierSettings.from_checkpoint(specs[0], saved["module"], checkpoint["hyper_parameters"])
    return {"settings": settings, "tokenizer_files": specs[0]["tokenizer_files"],
            "backbone_config": saved["backbone_config"], "state_dict": checkpoint["state_dict"]}


def checkpoint_settings(path: str | os.PathLike) -> ClassifierSettings:
    """The :class:`ClassifierSettings` a checkpoint of ``fit`` carries (without building its model)."""
    return _read_checkpoint(Path(path))["settings"]


def _module_state(module: LongTailedClassifier, settings: ClassifierSettings, folder: Path) -> dict[str, torch.Tensor]:
    """The module's state dict from an exported transformers model (the inverse of the export's map)."""
    auto_class, names = transformers_equivalent(module)
    model_state = auto_class.from_pretrained(folder).state_dict()
    state = {name: model_state[target] for name, target in names.items()}
    if isinstance(module, PromptTuningModule):
        verbalizer = Verbalizer.from_token_ids(settings.verbalizer_token_ids)
        state.update({f"verbalizer.{name}": value for name, value in verbalizer.state_dict().items()})
    return state

"""Use a trained classifier: raw texts in, labels out, from a checkpoint or an exported folder alone.

A checkpoint of ``fit`` holds everything classifying new text needs: the module's weights and
arguments, its backbone's config (:meth:`LongTailedClassifier.on_save_checkpoint`), and the
DataModule's tokenizer files, label names and words, template, text fields and ``max_length``
(:meth:`LongTailedDataModule.inference_spec`). :func:`load_classifier` rebuilds the classifier
from that alone; :func:`export_classifier` writes a folder that transformers loads too, where a
variant has a transformers equivalent.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from lt_tuning.data.encoding import encode_batch
from lt_tuning.data.prompt import Template
from lt_tuning.models.backbone import config_only
from lt_tuning.models.base import LongTailedClassifier
from lt_tuning.models.cls_tuning import ClsTuningModule
from lt_tuning.models.prompt_tuning import PromptTuningModule
from lt_tuning.verbalizer import Verbalizer

SPEC_FILE = "lt_tuning.json"  # an exported folder's settings: what the checkpoint holds besides weights
MODULE_WEIGHTS = "lt_tuning_module.safetensors"  # the module's weights, for a variant transformers cannot load

Text = str | tuple[str, str]


class TextClassifier:
    """A trained lt-tuning classifier for raw text, with the names of scikit-learn and SetFit.

    Texts are encoded as in training (the same tokenizer, template, ``max_length``), sorted by
    length into batches, and run in eval mode without gradients on the module's device.
    ``predict_proba`` gives the module's class probabilities, inference-time remedies
    (tau-norm, post-hoc logit adjustment) included. A task with two text fields (MSRA) takes
    ``(text_a, text_b)`` pairs.
    """

    def __init__(self, module: LongTailedClassifier, tokenizer: PreTrainedTokenizerBase, spec: dict[str, Any]) -> None:
        self.module = module.eval()
        self.tokenizer = tokenizer
        self.spec = {key: value for key, value in spec.items() if key != "tokenizer_files"}
        self.labels: list[str] = list(spec["labels"])
        num_fields = len(spec["text_fields"])
        self.template = Template.parse(spec["template"], tokenizer, num_fields) if spec["input_format"] == "prompt" else None
        self._collate = DataCollatorWithPadding(tokenizer)

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def to(self, device: str | torch.device) -> TextClassifier:
        self.module.to(device)
        return self

    def encode(self, texts: Sequence[Text]) -> list[dict[str, Any]]:
        """Each text's ``input_ids`` (and ``mask_positions``), as the DataModule encodes them."""
        pairs = len(self.spec["text_fields"]) == 2
        for number, text in enumerate(texts):
            if (isinstance(text, str) or len(text) != 2) if pairs else not isinstance(text, str):
                form = "(text_a, text_b) pairs" if pairs else "strings"
                raise TypeError(f"Text {number} is {text!r}; this classifier reads {form} ({self.spec['text_fields']}).")
        columns = {"text_a": [t[0] for t in texts], "text_b": [t[1] for t in texts]} if pairs else {"text_a": list(texts)}
        encoded = encode_batch(columns, self.tokenizer, self.template, self.spec["max_length"])
        return [dict(zip(encoded, row)) for row in zip(*encoded.values())]

    @torch.inference_mode()
    def predict_proba(self, texts: Sequence[Text], batch_size: int = 32) -> torch.Tensor:
        """``[N, C]`` class probabilities (columns in :attr:`labels` order), on the CPU."""
        rows = self.encode(texts)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]), reverse=True)
        probs = torch.empty(len(rows), len(self.labels))
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            batch = self._collate([rows[i] for i in chosen]).to(self.device)
            probs[chosen] = self.module(dict(batch)).float().softmax(dim=-1).cpu()
        return probs

    def predict(self, texts: Sequence[Text], batch_size: int = 32) -> list[str]:
        """The most probable label of each text."""
        return [self.labels[i] for i in self.predict_proba(texts, batch_size).argmax(dim=-1).tolist()]

    def save_pretrained(self, folder: str | os.PathLike) -> str | None:
        """Write this classifier as an exported folder (see :func:`export_classifier`)."""
        return _export(self.module, self.tokenizer, self.spec, Path(folder))


def prediction_columns(texts: dict[str, list], spec: dict[str, Any], probs: torch.Tensor,
                       top_k: int = 1) -> dict[str, list]:
    """The columns of a predictions file: the text field(s) (``texts``' ``text_a``/``text_b``),
    the gold label where ``texts`` has one (``label``, indices), then the ``top_k`` most probable
    labels with their probabilities (``prediction``, ``probability``, ``prediction_2``...)."""
    labels = spec["labels"]
    if not 1 <= top_k <= len(labels):
        raise ValueError(f"top_k must be between 1 and the number of labels ({len(labels)}), got {top_k}.")
    table = {field: texts[key] for key, field in zip(("text_a", "text_b"), spec["text_fields"])}
    if "label" in texts:
        table[spec["label_field"]] = [labels[index] for index in texts["label"]]
    top = probs.topk(top_k, dim=-1)
    for k in range(top_k):
        suffix = f"_{k + 1}" if k else ""
        table[f"prediction{suffix}"] = [labels[index] for index in top.indices[:, k].tolist()]
        table[f"probability{suffix}"] = [round(value, 6) for value in top.values[:, k].tolist()]
    return table


def load_classifier(path: str | os.PathLike, device: str | torch.device | None = None) -> TextClassifier:
    """The classifier saved in ``path``: a checkpoint of ``fit`` or a folder of :func:`export_classifier`.

    Needs nothing else: not the backbone's folder, the dataset, the working directory or the network.
    ``device``: where to run (default: the CPU).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint or exported folder at {path}.")
    saved = _read_folder(path) if path.is_dir() else _read_checkpoint(path)
    with tempfile.TemporaryDirectory() as folder:
        for name, content in saved["spec"]["tokenizer_files"].items():
            Path(folder, name).write_bytes(content)
        Path(folder, "config.json").write_text(json.dumps(saved["backbone_config"]), encoding="utf-8")
        tokenizer = AutoTokenizer.from_pretrained(folder)
        module_path, _, class_name = saved["module"].rpartition(".")
        module_class = getattr(importlib.import_module(module_path), class_name)
        arguments = {key: value for key, value in saved["hyper_parameters"].items() if not key.startswith("_")}
        with config_only():  # random weights at first: the saved state dict fills every one in
            module = module_class(**{**arguments, "model_name_or_path": folder})
    state = saved["state_dict"] if "state_dict" in saved else _module_state(module, saved)
    module.on_load_checkpoint({"state_dict": state})  # the verbalizer's shape, for prompt-tuning
    module.load_state_dict(state)
    return TextClassifier(module, tokenizer, saved["spec"]).to(device or "cpu")


def export_classifier(ckpt_path: str | os.PathLike, output_dir: str | os.PathLike) -> str | None:
    """Write the classifier of ``ckpt_path`` into ``output_dir``; returns the transformers Auto class
    that loads the folder, or None when the variant has none (it then loads in lt-tuning only).

    CLS-tuning with the tanh head on BERT or RoBERTa is ``AutoModelForSequenceClassification``
    (``pipeline("text-classification")`` gives the same probabilities); prompt-tuning is
    ``AutoModelForMaskedLM`` plus ``lt_tuning.json`` (template pieces, labels, verbalizer token
    ids). Every folder loads back with :func:`load_classifier`.
    """
    classifier = load_classifier(ckpt_path)
    return _export(classifier.module, classifier.tokenizer, classifier.spec, Path(output_dir))


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


def _export(module: LongTailedClassifier, tokenizer: PreTrainedTokenizerBase, spec: dict[str, Any],
            folder: Path) -> str | None:
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.model_max_length = spec["max_length"]  # what `truncation=True` cuts to, as in training
    tokenizer.save_pretrained(folder)
    equivalent = transformers_equivalent(module)
    config = module.backbone.config
    settings = {"spec": spec, "module": f"{type(module).__module__}.{type(module).__qualname__}",
                "hyper_parameters": {k: v for k, v in module.hparams.items() if not k.startswith("_")}}
    if isinstance(module, PromptTuningModule):
        template = Template.parse(spec["template"], tokenizer, len(spec["text_fields"]))
        settings["template_pieces"] = list(template.pieces)
        settings["verbalizer_token_ids"] = [ids[mask].tolist() for ids, mask in
                                            zip(module.verbalizer.token_ids, module.verbalizer.mask)]
    if isinstance(equivalent, str):
        config.save_pretrained(folder)
        # cloned: safetensors refuses tensors that share memory (tied embeddings)
        save_file({name: tensor.detach().clone() for name, tensor in module.state_dict().items()}, folder / MODULE_WEIGHTS)
        settings["transformers"] = None
        settings["why_not_transformers"] = equivalent
    else:
        auto_class, names = equivalent
        config = copy.deepcopy(config)
        config.id2label = dict(enumerate(spec["labels"]))  # pipeline("text-classification") names the labels
        config.label2id = {label: index for index, label in enumerate(spec["labels"])}
        model = auto_class.from_config(config)
        state = module.state_dict()
        model.load_state_dict({target: state[name] for name, target in names.items()}, strict=True)
        model.save_pretrained(folder)
        settings["transformers"] = auto_class.__name__
    (folder / SPEC_FILE).write_text(json.dumps(settings, ensure_ascii=False, indent=2), encoding="utf-8")
    return settings["transformers"]


def _read_checkpoint(path: Path) -> dict[str, Any]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    specs = [value["inference"] for value in checkpoint.values() if isinstance(value, dict) and "inference" in value]
    if "lt_tuning" not in checkpoint or not specs:
        raise ValueError(
            f"{path} does not hold what classifying raw text needs (the DataModule's tokenizer, labels and "
            "template, the backbone's config): it was saved by an older lt-tuning or without an lt-tuning "
            "DataModule. Train it again with this version, or evaluate it with `lt-tuning predict --config ...`."
        )
    return {**checkpoint["lt_tuning"], "spec": specs[0], "state_dict": checkpoint["state_dict"],
            "hyper_parameters": checkpoint["hyper_parameters"]}


def _read_folder(folder: Path) -> dict[str, Any]:
    if not (folder / SPEC_FILE).is_file():
        raise FileNotFoundError(f"{folder} has no {SPEC_FILE}: it is not a folder written by `lt-tuning export`.")
    settings = json.loads((folder / SPEC_FILE).read_text(encoding="utf-8"))
    files = {path.name: path.read_bytes() for path in folder.iterdir() if path.name.startswith(("tokenizer", "special"))}
    saved = {**settings, "spec": {**settings["spec"], "tokenizer_files": files},
             "backbone_config": json.loads((folder / "config.json").read_text(encoding="utf-8")), "folder": folder}
    if settings["transformers"] is None:
        saved["state_dict"] = load_file(folder / MODULE_WEIGHTS)
    return saved


def _module_state(module: LongTailedClassifier, saved: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The module's state dict from an exported transformers model (the inverse of the export's map)."""
    auto_class, names = transformers_equivalent(module)
    model_state = auto_class.from_pretrained(saved["folder"]).state_dict()
    state = {name: model_state[target] for name, target in names.items()}
    if isinstance(module, PromptTuningModule):
        verbalizer = Verbalizer.from_token_ids(saved["verbalizer_token_ids"])
        state.update({f"verbalizer.{name}": value for name, value in verbalizer.state_dict().items()})
    return state

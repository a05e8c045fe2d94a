"""What a saved classifier is besides its weights and tokenizer: :class:`ClassifierSettings`.

A checkpoint of ``fit`` carries these settings (the DataModule's
:attr:`~lt_tuning.data.LongTailedDataModule.inference_spec`, the module's class and arguments);
an exported folder holds them as ``lt_tuning.json`` beside the tokenizer's own files. Reading
them imports neither torch nor transformers, so that an ONNX folder classifies without either.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

SETTINGS_FILE = "lt_tuning.json"
Format = Literal["pytorch", "transformers", "onnx"]


@dataclass
class ClassifierSettings:
    """How a trained classifier reads text and names its classes, and how its folder is stored.

    Attributes:
        labels: class names, in the order of the model's outputs.
        text_fields: the text column(s) of the training data (one, or two for pairs).
        label_field: the gold label's column in data files (None: unlabelled data).
        label_words: each label's verbalizer word (prompt format), else None.
        template: the prompt template (prompt format), else None.
        max_length: token budget of an encoded text, as in training.
        input_format: ``"cls"`` or ``"prompt"`` encoding.
        module: the LightningModule's class, ``"package.module.Class"``.
        hyper_parameters: the module's arguments.
        format: the weights' form in a folder: ``pytorch`` (``lt_tuning_module.safetensors``),
            ``transformers`` (a model transformers' Auto class loads) or ``onnx`` (``model.onnx``).
        transformers: that Auto class's name, for ``transformers``.
        why_not_transformers: why a ``pytorch`` folder has no transformers equivalent.
        template_pieces: the template as token-id pieces (prompt-tuning), for reproducing it in
            plain transformers.
        verbalizer_token_ids: each label word's token ids (prompt-tuning), likewise.
        onnx_inputs: the graph's input names, for ``onnx``.
        quantization: ``"int8"`` for a dynamically quantized ONNX graph, else None.
        lt_tuning_version: the version that wrote the folder.
    """

    labels: list[str]
    text_fields: list[str]
    label_field: str | None
    max_length: int
    input_format: str
    label_words: dict[str, str] | None = None
    template: str | None = None
    module: str = ""
    hyper_parameters: dict[str, Any] = field(default_factory=dict)
    format: Format = "pytorch"
    transformers: str | None = None
    why_not_transformers: str | None = None
    template_pieces: list[Any] | None = None
    verbalizer_token_ids: list[list[int]] | None = None
    onnx_inputs: list[str] | None = None
    quantization: str | None = None
    lt_tuning_version: str = ""

    @property
    def pairs(self) -> bool:
        """Whether the classifier reads ``(text_a, text_b)`` pairs."""
        return len(self.text_fields) == 2

    @property
    def label_spec(self) -> dict[str, Any]:
        """Label names, text fields and label field, as a DataModule's ``label_spec``."""
        return {"labels": self.labels, "text_fields": self.text_fields, "label_field": self.label_field}

    @classmethod
    def from_checkpoint(cls, spec: dict[str, Any], module: str, hyper_parameters: dict[str, Any]) -> ClassifierSettings:
        """The settings of a checkpoint: its DataModule's inference spec (the tokenizer's files
        left out) and the module's class and arguments."""
        known = {f.name for f in dataclasses.fields(cls)}
        arguments = {key: value for key, value in hyper_parameters.items() if not key.startswith("_")}
        return cls(**{key: value for key, value in spec.items() if key in known}, module=module,
                   hyper_parameters=arguments)

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``lt_tuning.json`` into ``folder``."""
        from lt_tuning import __version__

        self.lt_tuning_version = __version__
        path = Path(folder, SETTINGS_FILE)
        path.write_text(json.dumps(dataclasses.asdict(self), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> ClassifierSettings:
        """Read ``folder``'s ``lt_tuning.json``; a folder without one was not written by ``lt-tuning export``."""
        path = Path(folder, SETTINGS_FILE)
        if not path.is_file():
            raise FileNotFoundError(f"{folder} has no {SETTINGS_FILE}: it is not a folder written by `lt-tuning "
                                    "export`. Give such a folder or a checkpoint of `lt-tuning fit`.")
        values = json.loads(path.read_text(encoding="utf-8"))
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown or "labels" not in values:
            raise ValueError(f"{path} has settings this lt-tuning does not know ({unknown or 'no labels'}): it was "
                             "written by another version; export the checkpoint again with this one.")
        return cls(**values)

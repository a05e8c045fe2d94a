"""A trained classifier for raw text, whatever runs it: PyTorch or ONNX Runtime.

:class:`TextClassifier` encodes texts as in training (the same tokenizer, template and
``max_length``), sorts them by length into padded batches and asks its runtime for class
probabilities; :func:`load_classifier` picks the runtime from what it is given. This module
imports neither torch nor Lightning: an ONNX folder classifies without them
(:mod:`lt_tuning.onnx_runtime`), a checkpoint or PyTorch folder loads through
:mod:`lt_tuning.inference`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lt_tuning.data.encoding import encode_batch
from lt_tuning.data.prompt import Template
from lt_tuning.settings import ClassifierSettings

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Text = str | tuple[str, str]

# A text is cut to max_length * CHARS_PER_TOKEN characters before tokenizing, so that a huge text
# costs no more than one that fills max_length: tokenizing 10 million characters takes about a
# minute, only to keep 64 tokens. A token of WordPiece or BPE spans a few characters (a word of
# more than 100 characters is one [UNK]); only a text whose first max_length tokens span more than
# this many characters on average (e.g. long runs of whitespace) is encoded differently.
CHARS_PER_TOKEN = 128


class TextClassifier:
    """A trained lt-tuning classifier for raw text, with the names of scikit-learn and SetFit.

    ``predict_proba`` gives the module's class probabilities, the inference-time remedies
    (eta/tau-norm, post-hoc logit adjustment) included; ``predict`` the most probable labels.
    Both take a list of texts, or one text (a string; a ``(text_a, text_b)`` pair for a task
    with two text fields, such as MSRA) for one result. Subclasses run the model
    (:meth:`_probabilities`): :class:`lt_tuning.inference.TorchClassifier`,
    :class:`lt_tuning.onnx_runtime.OnnxClassifier`.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, settings: ClassifierSettings) -> None:
        self.tokenizer = tokenizer
        self.settings = settings
        self.labels: list[str] = list(settings.labels)
        num_fields = len(settings.text_fields)
        self.template = Template.parse(settings.template, tokenizer, num_fields) if settings.input_format == "prompt" else None

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | None = None) -> TextClassifier:
        """The classifier saved in ``path`` (as :func:`load_classifier`), by the name SetFit and transformers use."""
        return load_classifier(path, device)

    # --- texts -> batches ------------------------------------------------------------------

    def _as_list(self, texts: Text | Sequence[Text]) -> tuple[list[Text], bool]:
        """``texts`` as a list, and whether it was one text."""
        pairs = self.settings.pairs
        if isinstance(texts, str) or (pairs and isinstance(texts, tuple) and len(texts) == 2
                                      and all(isinstance(part, str) for part in texts)):
            return [texts], True
        return list(texts), False

    def encode(self, texts: Sequence[Text]) -> list[dict[str, list[int]]]:
        """Each text's ``input_ids`` (and ``token_type_ids``, ``mask_positions``), as the DataModule
        encodes them; each text first cut to ``max_length *`` :data:`CHARS_PER_TOKEN` characters."""
        pairs = self.settings.pairs
        for number, text in enumerate(texts):
            if (isinstance(text, str) or len(text) != 2) if pairs else not isinstance(text, str):
                form = "(text_a, text_b) pairs" if pairs else "strings"
                raise TypeError(f"Text {number} is {text!r}; this classifier reads {form} ({self.settings.text_fields}).")
        if not texts:
            return []
        limit = self.settings.max_length * CHARS_PER_TOKEN
        columns = ({"text_a": [t[0][:limit] for t in texts], "text_b": [t[1][:limit] for t in texts]} if pairs
                   else {"text_a": [t[:limit] for t in texts]})
        encoded = encode_batch(columns, self.tokenizer, self.template, self.settings.max_length)
        return [dict(zip(encoded, row)) for row in zip(*encoded.values())]

    def collate(self, rows: Sequence[dict[str, list[int]]]) -> dict[str, np.ndarray]:
        """Encoded rows as one right-padded batch of int64 arrays, with ``attention_mask``."""
        length = max(len(row["input_ids"]) for row in rows)
        pad = {"input_ids": self.tokenizer.pad_token_id, "token_type_ids": self.tokenizer.pad_token_type_id}
        batch = {key: np.array([row[key] + [pad[key]] * (length - len(row[key])) for row in rows], dtype=np.int64)
                 for key in rows[0] if key != "mask_positions"}
        batch["attention_mask"] = np.array([[1] * len(row["input_ids"]) + [0] * (length - len(row["input_ids"]))
                                            for row in rows], dtype=np.int64)
        if "mask_positions" in rows[0]:
            batch["mask_positions"] = np.array([row["mask_positions"] for row in rows], dtype=np.int64)
        return batch

    def _probabilities(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """``[B, C]`` float32 class probabilities of one batch (the runtime's part)."""
        raise NotImplementedError

    # --- the public API ----------------------------------------------------------------------

    def predict_proba(self, texts: Text | Sequence[Text], batch_size: int = 32, as_numpy: bool = False) -> Any:
        """``[N, C]`` class probabilities, columns in :attr:`labels` order (``[C]`` for one text).

        A ``torch.Tensor`` on the CPU from a PyTorch classifier unless ``as_numpy``; an ONNX
        classifier, which runs without torch, always gives a NumPy array.
        """
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        texts, single = self._as_list(texts)
        rows = self.encode(texts)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]), reverse=True)
        probs = np.empty((len(rows), len(self.labels)), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            probs[chosen] = self._probabilities(self.collate([rows[i] for i in chosen]))
        return self._output(probs[0] if single else probs, as_numpy)

    def _output(self, probs: np.ndarray, as_numpy: bool) -> Any:
        return probs

    def predict(self, texts: Text | Sequence[Text], batch_size: int = 32) -> list[str] | str:
        """The most probable label of each text (one label for one text)."""
        texts, single = self._as_list(texts)
        probs = self.predict_proba(texts, batch_size, as_numpy=True)
        labels = [self.labels[i] for i in probs.argmax(axis=-1).tolist()]
        return labels[0] if single else labels


def prediction_columns(texts: dict[str, list], spec: Mapping[str, Any], probs: Any,
                       top_k: int = 1, predicted: Sequence[bool] | None = None) -> dict[str, list]:
    """The columns of a predictions file: the text field(s) (``texts``' ``text_a``/``text_b``),
    the gold label where ``texts`` has one (``label``, indices), then the ``top_k`` most probable
    labels with their probabilities (``prediction``, ``probability``, ``prediction_2``...).

    ``spec``: ``labels``, ``text_fields`` and ``label_field`` (a DataModule's ``label_spec``,
    :attr:`ClassifierSettings.label_spec`). ``probs`` (an array or CPU tensor) has a row per predicted text; ``predicted`` (default: all) says which rows of
    ``texts`` those are, the others (blank lines) getting empty predictions.
    """
    labels = spec["labels"]
    if not 1 <= top_k <= len(labels):
        raise ValueError(f"top_k must be between 1 and the number of labels ({len(labels)}), got {top_k}.")
    table = {field: texts[key] for key, field in zip(("text_a", "text_b"), spec["text_fields"])}
    if "label" in texts:
        table[spec["label_field"]] = [labels[index] for index in texts["label"]]
    probs = np.asarray(probs, dtype=np.float32)
    top = np.argsort(-probs, axis=-1, kind="stable")[:, :top_k]
    predicted = [True] * len(texts["text_a"]) if predicted is None else list(predicted)
    rows = iter(range(len(probs)))
    places = [next(rows) if kept else None for kept in predicted]
    for k in range(top_k):
        suffix = f"_{k + 1}" if k else ""
        table[f"prediction{suffix}"] = ["" if i is None else labels[top[i, k]] for i in places]
        table[f"probability{suffix}"] = ["" if i is None else round(float(probs[i, top[i, k]]), 6) for i in places]
    return table


def load_tokenizer_folder(folder: str | os.PathLike) -> PreTrainedTokenizerBase:
    """The fast tokenizer saved in ``folder``, of the class its ``tokenizer_config.json`` names (it
    decides e.g. whether ``token_type_ids`` are made), without ``AutoTokenizer``, which imports torch."""
    import json

    import transformers

    config = Path(folder, "tokenizer_config.json")
    name = json.loads(config.read_text(encoding="utf-8")).get("tokenizer_class") if config.is_file() else None
    tokenizer_class = getattr(transformers, name or "", None)
    if not (isinstance(tokenizer_class, type) and issubclass(tokenizer_class, transformers.PreTrainedTokenizerFast)):
        tokenizer_class = transformers.PreTrainedTokenizerFast
    tokenizer = tokenizer_class.from_pretrained(str(folder))
    # An export saves max_length as model_max_length (for transformers' pipeline); lt-tuning cuts to
    # max_length itself, after tokenizing a prompt's text fields whole: no "sequence too long" warning.
    tokenizer.model_max_length = int(1e30)
    return tokenizer


def default_device() -> str:
    """Where a PyTorch classifier runs unless told: ``cuda`` when torch sees a GPU, else ``cpu``
    (the default of :func:`load_classifier` and of ``lt-tuning classify``/``serve`` alike)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_classifier(path: str | os.PathLike, device: str | None = None) -> TextClassifier:
    """The classifier saved in ``path``: a checkpoint of ``fit``, or a folder of ``lt-tuning export``
    (PyTorch or transformers weights, or ONNX: then on ONNX Runtime, without importing torch).

    Needs nothing else: not the backbone's folder, the dataset, the working directory or the network.
    ``device``: where to run, e.g. ``cpu`` or ``cuda`` (default: :func:`default_device`; an ONNX
    folder runs on the CPU unless ``cuda`` is asked for).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint or exported folder at {path}.")
    if path.is_dir():
        settings = ClassifierSettings.load(path)
        if settings.format == "onnx":
            from lt_tuning.onnx_runtime import OnnxClassifier

            return OnnxClassifier.load(path, settings, device)
    from lt_tuning.inference import load_torch_classifier

    return load_torch_classifier(path, device)

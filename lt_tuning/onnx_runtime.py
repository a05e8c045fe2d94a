"""An exported ONNX classifier on ONNX Runtime: the classifier API without torch or Lightning.

The folder of ``lt-tuning export --format onnx`` (:mod:`lt_tuning.onnx_export`) holds
``model.onnx`` (token ids -> class probabilities, the remedies inside), the tokenizer's files and
``lt_tuning.json``. Loading it imports ONNX Runtime, the fast tokenizer and lt-tuning's
encoding; not torch, Lightning, torchmetrics, matplotlib or datasets.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lt_tuning.classifier import TextClassifier, load_tokenizer_folder
from lt_tuning.settings import ClassifierSettings

ONNX_FILE = "model.onnx"


class OnnxClassifier(TextClassifier):
    """A :class:`~lt_tuning.classifier.TextClassifier` on an ONNX Runtime session;
    ``predict_proba`` gives NumPy arrays."""

    def __init__(self, session, tokenizer, settings: ClassifierSettings) -> None:
        super().__init__(tokenizer, settings)
        self.session = session
        self.input_names = [node.name for node in session.get_inputs()]

    @classmethod
    def load(cls, folder: str | os.PathLike, settings: ClassifierSettings | None = None,
             device: str | None = None, threads: int | None = None) -> OnnxClassifier:
        """The classifier of an ONNX folder; ``device`` ``cuda`` asks for ONNX Runtime's CUDA provider
        (default: the CPU), ``threads`` for its intra-op thread count (default: ONNX Runtime's, all cores)."""
        import onnxruntime

        folder = Path(folder)
        settings = settings or ClassifierSettings.load(folder)
        providers = ["CPUExecutionProvider"]
        if device is not None and str(device).startswith("cuda"):
            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                raise ValueError(f"device={device!r}: this ONNX Runtime has no CUDA provider (install "
                                 "onnxruntime-gpu), or run on the CPU.")
            providers.insert(0, "CUDAExecutionProvider")
        options = onnxruntime.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(str(folder / ONNX_FILE), options, providers=providers)
        return cls(session, load_tokenizer_folder(folder), settings)

    def _probabilities(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(["probabilities"], {name: batch[name] for name in self.input_names})[0]

"""Serve a trained classifier over HTTP with LitServe: ``POST /predict``, ``GET /info``, ``GET /health``.

``POST /predict`` takes ``{"texts": [...], "top_k": 3}`` (a task with two text fields takes
``[[text_a, text_b], ...]``) and returns, per text, the most probable label, its probability and
the ``top_k`` labels with theirs. Requests that arrive together (up to ``max_batch_size`` of them,
waiting at most ``batch_timeout`` seconds) are classified in one call, with the same results as
one by one. A bad request gets a 4xx with a message and leaves the worker serving: FastAPI
validates the body's form (422), :meth:`ClassifierAPI.decode_request` the limits (413) and the
texts' form for this model (422).

(No ``from __future__ import annotations`` here: LitServe reads ``decode_request``'s annotation
to validate the body.)
"""

import os
from pathlib import Path
from typing import Any, Optional, Union

import litserve
from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field, StrictStr

from lt_tuning.classifier import TextClassifier, load_classifier
from lt_tuning.settings import ClassifierSettings


class PredictRequest(BaseModel):
    """The body of ``POST /predict``."""

    model_config = ConfigDict(extra="forbid")
    texts: list[Union[StrictStr, list[StrictStr]]]
    top_k: int = Field(1, ge=1)


class ClassifierAPI(litserve.LitAPI):
    """The classifier of ``model`` (a checkpoint, an exported or an ONNX folder) as a LitServe API.

    ``max_texts``, ``max_chars``: the most texts in one request and characters in one text
    (more: 413). ``threads``: CPU threads of each worker's runtime (default: all cores shared
    out among the workers).
    """

    def __init__(self, model: str, settings: ClassifierSettings, max_texts: int = 256, max_chars: int = 100_000,
                 device: Optional[str] = None, threads: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model, self.settings, self.device = model, settings, device
        self.max_texts, self.max_chars, self.threads = max_texts, max_chars, threads

    def setup(self, device: str) -> None:
        if self.settings.format == "onnx":
            from lt_tuning.onnx_runtime import OnnxClassifier

            self.classifier: TextClassifier = OnnxClassifier.load(self.model, self.settings, self.device, self.threads)
        else:
            import torch

            if self.threads:
                torch.set_num_threads(self.threads)
            self.classifier = load_classifier(self.model, self.device)

    def decode_request(self, request: PredictRequest) -> tuple[list, int]:
        texts = request.texts
        if not texts:
            raise HTTPException(422, "texts is empty: give at least one text.")
        if len(texts) > self.max_texts:
            raise HTTPException(413, f"{len(texts)} texts in one request; this server takes at most {self.max_texts} "
                                "(--max_texts): send them in several requests.")
        pairs = self.settings.pairs
        for number, text in enumerate(texts):
            if pairs != isinstance(text, list) or (pairs and len(text) != 2):
                form = "a pair [text_a, text_b]" if pairs else "a string"
                raise HTTPException(422, f"texts[{number}] is {text!r}; each text of this model is {form} "
                                    f"({self.settings.text_fields}).")
            if max(map(len, text if pairs else [text])) > self.max_chars:
                raise HTTPException(413, f"texts[{number}] is longer than {self.max_chars} characters (--max_chars); "
                                    "shorten it.")
        if request.top_k > len(self.settings.labels):
            raise HTTPException(422, f"top_k is {request.top_k}; this model has {len(self.settings.labels)} labels.")
        return [tuple(text) if pairs else text for text in texts], request.top_k

    def batch(self, requests: list[tuple[list, int]]) -> list[tuple[list, int]]:
        return requests  # requests of different sizes: predict joins their texts itself

    def unbatch(self, outputs: list) -> list:
        return outputs

    def predict(self, requests: Union[tuple[list, int], list[tuple[list, int]]]) -> Any:
        """One request (``max_batch_size`` 1) or several: all their texts classified in one call."""
        single = isinstance(requests, tuple)
        requests = [requests] if single else requests
        probs = self.classifier.predict_proba([text for texts, _ in requests for text in texts], as_numpy=True)
        outputs, start = [], 0
        for texts, top_k in requests:
            outputs.append((probs[start : start + len(texts)], top_k))
            start += len(texts)
        return outputs[0] if single else outputs

    def encode_response(self, output: tuple[Any, int]) -> dict[str, list]:
        probs, top_k = output
        labels = self.settings.labels
        predictions = []
        for row in probs.tolist():
            top = sorted(range(len(row)), key=lambda index: -row[index])[:top_k]
            ranked = [{"label": labels[index], "probability": row[index]} for index in top]
            predictions.append({**ranked[0], "top_k": ranked})
        return {"predictions": predictions}


def model_settings(model: Union[str, os.PathLike]) -> tuple[ClassifierSettings, str]:
    """The settings of ``model`` and its form (``checkpoint`` or the folder's format)."""
    path = Path(model)
    if not path.exists():
        raise FileNotFoundError(f"No checkpoint or exported folder at {path}.")
    if path.is_dir():
        settings = ClassifierSettings.load(path)
        return settings, settings.format
    from lt_tuning.inference import checkpoint_settings

    return checkpoint_settings(path), "checkpoint"


def build_server(model: Union[str, os.PathLike], max_batch_size: int = 32, batch_timeout: float = 0.01,
                 workers: int = 1, max_texts: int = 256, max_chars: int = 100_000, device: Optional[str] = None,
                 threads: Optional[int] = None) -> litserve.LitServer:
    """A LitServer for ``model``; ``.run(host="127.0.0.1", port=8000)`` serves it."""
    from lt_tuning import __version__

    settings, form = model_settings(model)
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // workers)
    api = ClassifierAPI(str(model), settings, max_texts, max_chars, device, threads,
                        max_batch_size=max_batch_size, batch_timeout=batch_timeout)
    metadata = {"labels": settings.labels, "text_fields": settings.text_fields, "format": form,
                "quantization": settings.quantization, "max_length": settings.max_length,
                "max_texts": max_texts, "max_chars": max_chars, "lt_tuning_version": __version__}
    accelerator = "cuda" if device and device.startswith("cuda") else "cpu"
    return litserve.LitServer(api, accelerator=accelerator, devices=1, workers_per_device=workers,
                              model_metadata=metadata)

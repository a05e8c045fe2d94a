"""Export a trained classifier to ONNX: token ids in, class probabilities out, for every variant.

The graph is the LightningModule's own inference forward (eval mode: eta/tau-norm, post-hoc logit
adjustment, the verbalizer's reduction for prompt-tuning, anything else the module does at
inference) followed by a softmax, traced by ``torch.onnx.export``'s TorchScript exporter (it needs
no onnxscript) with dynamic batch and length axes. Inputs are what the classifier's encoding gives:
``input_ids``, ``attention_mask``, ``token_type_ids`` where the tokenizer makes them (CLS format)
and ``mask_positions`` (prompt format, the [MASK] of each row); the output is ``probabilities``
``[batch, classes]``. ``quantize="int8"`` quantizes the weights of its matrix products with ONNX
Runtime's dynamic quantization (activations quantized at run time; the embeddings stay float32).
"""

from __future__ import annotations

import copy
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import onnx

import torch
from torch import nn

from lt_tuning.onnx_runtime import ONNX_FILE

if TYPE_CHECKING:
    from lt_tuning.inference import TorchClassifier

OPSET = 17
# The matrix products only; the embedding lookups stay float32. Quantizing them too halves the file again
# (8.4 instead of 16.1 MiB for the own backbone) and was 10% faster; its argmax agreement with fp32 on the
# CMID test set was the same for the benchmarked prompt-tuning checkpoint (98.9%) and lower for an earlier
# one of the same run (98.7% against 99.1%).
QUANTIZED_OPS = ["MatMul", "Gemm"]


class ProbabilityGraph(nn.Module):
    """``module``'s inference forward on positional inputs named ``input_names``, then a softmax."""

    def __init__(self, module: nn.Module, input_names: list[str]) -> None:
        super().__init__()
        self.module = module
        self.input_names = input_names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.module(dict(zip(self.input_names, inputs))).float().softmax(dim=-1)


def export_onnx(classifier: TorchClassifier, folder: Path, quantize: Literal["int8"] | None = None) -> Path:
    """Write ``classifier`` into ``folder`` as ``model.onnx`` (one file, no external data), the
    tokenizer's files and ``lt_tuning.json``; returns the graph's path."""
    from lt_tuning.inference import save_tokenizer

    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be 'int8' or None, got {quantize!r}.")
    folder.mkdir(parents=True, exist_ok=True)
    # Example rows of different lengths: the traced graph must take the padded-batch path of the attention mask.
    text = "示例 example"
    example = [text, text * 8] if not classifier.settings.pairs else [(text, text), (text * 8, text * 4)]
    batch = classifier.collate(classifier.encode(example))
    input_names = list(batch)
    module = copy.deepcopy(classifier.module).cpu().float()
    graph = ProbabilityGraph(module, input_names).eval()
    axes = {name: {0: "batch"} if name == "mask_positions" else {0: "batch", 1: "length"} for name in input_names}
    with tempfile.TemporaryDirectory() as scratch:
        traced = Path(scratch, ONNX_FILE)
        torch.onnx.export(graph, tuple(torch.from_numpy(batch[name]) for name in input_names), str(traced),
                          input_names=input_names, output_names=["probabilities"],
                          dynamic_axes={**axes, "probabilities": {0: "batch"}}, opset_version=OPSET, dynamo=False)
        target = folder / ONNX_FILE
        if quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic

            untied = Path(scratch, "untied.onnx")
            onnx.save_model(untie_initializers(onnx.load(str(traced))), str(untied))
            quantize_dynamic(untied, target, op_types_to_quantize=QUANTIZED_OPS, weight_type=QuantType.QInt8)
        else:
            onnx.save_model(onnx.load(str(traced)), str(target), save_as_external_data=False)
    save_tokenizer(classifier.tokenizer, classifier.settings, folder)
    settings = copy.deepcopy(classifier.settings)
    settings.format, settings.onnx_inputs, settings.quantization = "onnx", input_names, quantize
    settings.transformers = settings.why_not_transformers = None
    settings.save(folder)
    return target


def untie_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give every node its own copy of a weight that several nodes share (tied input and output
    embeddings: a Gather and a Gemm): ONNX Runtime's quantizer rewrites a shared weight for one of
    them and breaks the other (the session then fails on "Incompatible dimensions")."""
    initializers = {initializer.name: initializer for initializer in model.graph.initializer}
    uses = defaultdict(list)
    for node in model.graph.node:
        for position, name in enumerate(node.input):
            if name in initializers:
                uses[name].append((node, position))
    for name, users in uses.items():
        for copy_number, (node, position) in enumerate(users[1:], 1):
            twin = copy.deepcopy(initializers[name])
            twin.name = f"{name}.{copy_number}"
            model.graph.initializer.append(twin)
            node.input[position] = twin.name
    return model

"""``lt-tuning export --ckpt_path CKPT --output_dir DIR [--format onnx [--quantize int8]]``: a checkpoint
as a self-contained folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from lt_tuning.settings import ClassifierSettings


def main(args: list[str]) -> None:
    """Export ``--ckpt_path`` into ``--output_dir`` and say what loads it."""
    parser = argparse.ArgumentParser(prog="lt-tuning export", description="Write a checkpoint of `lt-tuning fit` as "
                                     "a folder: PyTorch weights (a transformers model where the variant has one) or "
                                     "an ONNX graph that runs without torch.")
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint of `lt-tuning fit`")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--format", choices=("pytorch", "onnx"), default="pytorch",
                        help="pytorch (default): safetensors, or transformers' format where the variant has one; "
                        "onnx: model.onnx, token ids -> class probabilities, for every variant")
    parser.add_argument("--quantize", choices=("int8",), help="ONNX only: int8 weights (dynamic quantization)")
    options = parser.parse_args(args)
    if options.quantize and options.format != "onnx":
        raise ValueError("--quantize int8 needs --format onnx.")
    if not Path(options.ckpt_path).exists():  # said before loading torch, which takes seconds
        raise FileNotFoundError(f"--ckpt_path {options.ckpt_path}: no such file; give a checkpoint of `lt-tuning fit` "
                                "(e.g. lightning_logs/version_0/checkpoints/best-step=500.ckpt).")
    from lt_tuning.inference import export_classifier

    auto_class = export_classifier(options.ckpt_path, options.output_dir, options.format, options.quantize)
    if options.format == "onnx":
        kind = "an int8" if options.quantize else "a float32"
        print(f"Wrote {options.output_dir}: {kind} ONNX graph (model.onnx) with the tokenizer and settings; "
              "lt_tuning.load_classifier and `lt-tuning classify` run it on ONNX Runtime, without torch.")
    elif auto_class is None:
        reason = ClassifierSettings.load(options.output_dir).why_not_transformers
        print(f"Wrote {options.output_dir}: it loads with lt_tuning.load_classifier only, as this variant has no "
              f"transformers equivalent ({reason}).")
    else:
        print(f"Wrote {options.output_dir}: transformers' {auto_class}.from_pretrained loads it "
              "(and lt_tuning.load_classifier).")

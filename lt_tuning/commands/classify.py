"""``lt-tuning classify --ckpt_path CKPT --input FILE``: the raw texts of a file, classified."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lt_tuning.data.reading import read_texts, write_table
from lt_tuning.inference import load_classifier, prediction_columns


def main(args: list[str]) -> None:
    """Classify the texts of ``--input`` and write them with their predicted labels to ``--output``."""
    parser = argparse.ArgumentParser(
        prog="lt-tuning classify", description="Classify the texts of a file with a trained classifier. (A dataset "
        "split with its config: `lt-tuning predict --config ... --ckpt_path ...`.)")
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint of `lt-tuning fit`, or an exported folder")
    parser.add_argument("--input", required=True, help=".txt (one text a line) or .tsv/.csv/.jsonl with the text "
                        "column(s) the model was trained on; a label column there is written beside the prediction")
    parser.add_argument("--output", help="a .tsv, .csv or .jsonl file (default: <input name>.predictions.tsv, here)")
    parser.add_argument("--top_k", type=int, default=1, help="labels per text, most probable first")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--device", help="e.g. cpu, cuda (default: cuda when available, else cpu)")
    options = parser.parse_args(args)
    device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
    classifier = load_classifier(options.ckpt_path, device)
    spec = classifier.spec
    label2idx = {label: index for index, label in enumerate(spec["labels"])}
    texts = read_texts(options.input, spec["text_fields"], spec["label_field"], label2idx)
    inputs = list(zip(texts["text_a"], texts["text_b"])) if "text_b" in texts else texts["text_a"]
    probs = classifier.predict_proba(inputs, options.batch_size)
    output = Path(options.output or f"{Path(options.input).stem}.predictions.tsv")
    write_table(output, prediction_columns(texts, spec, probs, options.top_k))
    print(f"Wrote {len(inputs)} predictions to {output}")

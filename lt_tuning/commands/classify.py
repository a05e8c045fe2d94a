"""``lt-tuning classify --ckpt_path PATH --input FILE``: the raw texts of a file, classified.

``PATH`` is a checkpoint, an exported folder or an ONNX folder; the last runs on ONNX Runtime
and imports no torch, Lightning, torchmetrics, matplotlib or datasets.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lt_tuning.classifier import load_classifier, prediction_columns
from lt_tuning.data.reading import read_texts, write_table


def main(args: list[str]) -> None:
    """Classify the texts of ``--input`` and write them with their predicted labels to ``--output``."""
    parser = argparse.ArgumentParser(
        prog="lt-tuning classify", description="Classify the texts of a file with a trained classifier. (A dataset "
        "split with its config: `lt-tuning predict --config ... --ckpt_path ...`.)")
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint of `lt-tuning fit`, or a folder of "
                        "`lt-tuning export` (an ONNX one runs without torch)")
    parser.add_argument("--input", required=True, help=".txt (one text a line; a blank line gets an empty "
                        "prediction) or .tsv/.csv/.jsonl with the text column(s) the model was trained on; a label "
                        "column there is written beside the prediction")
    parser.add_argument("--output", help="a .tsv, .csv or .jsonl file (default: <input name>.predictions.tsv, here)")
    parser.add_argument("--top_k", type=int, default=1, help="labels per text, most probable first")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--device", help="e.g. cpu, cuda (default: cuda when torch sees one, else cpu; an ONNX "
                        "folder: cpu)")
    options = parser.parse_args(args)
    classifier = load_classifier(options.ckpt_path, options.device)
    settings = classifier.settings
    label2idx = {label: index for index, label in enumerate(settings.labels)}
    texts = read_texts(options.input, settings.text_fields, settings.label_field, label2idx)
    rows = list(zip(texts["text_a"], texts["text_b"])) if "text_b" in texts else texts["text_a"]
    kept = [bool(text.strip()) if isinstance(text, str) else True for text in rows]
    probs = classifier.predict_proba([text for text, keep in zip(rows, kept) if keep], options.batch_size,
                                     as_numpy=True)
    output = Path(options.output or f"{Path(options.input).stem}.predictions.tsv")
    write_table(output, prediction_columns(texts, settings.label_spec, probs, options.top_k, kept))
    blank = [number for number, keep in enumerate(kept, 1) if not keep]
    note = f" ({len(blank)} blank line(s) left without a prediction: line {', '.join(map(str, blank[:10]))}" \
           f"{', ...' if len(blank) > 10 else ''})" if blank else ""
    print(f"Wrote {len(probs)} predictions to {output}{note}")

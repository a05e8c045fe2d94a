"""``lt-tuning export --ckpt_path CKPT --output_dir DIR``: a checkpoint as a self-contained folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lt_tuning.inference import SPEC_FILE, export_classifier


def main(args: list[str]) -> None:
    """Export ``--ckpt_path`` into ``--output_dir`` and say what loads it."""
    parser = argparse.ArgumentParser(prog="lt-tuning export", description=export_classifier.__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint of `lt-tuning fit`")
    parser.add_argument("--output_dir", required=True)
    options = parser.parse_args(args)
    auto_class = export_classifier(options.ckpt_path, options.output_dir)
    if auto_class is None:
        reason = json.loads((Path(options.output_dir) / SPEC_FILE).read_text(encoding="utf-8"))["why_not_transformers"]
        print(f"Wrote {options.output_dir}: it loads with lt_tuning.load_classifier only, as this variant has no "
              f"transformers equivalent ({reason}).")
    else:
        print(f"Wrote {options.output_dir}: transformers' {auto_class}.from_pretrained loads it "
              "(and lt_tuning.load_classifier).")

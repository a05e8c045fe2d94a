"""Head-to-tail figures comparing finished runs (e.g. CLS-tuning vs prompt-tuning on one dataset).

Each run is a folder written by ``lt-tuning fit`` (or ``benchmarks/study/reproduce.py``): its
``config.yaml`` rebuilds the DataModule, its best checkpoint gives the classifier weights and its
``test_metrics.json`` the per-class F1 (the committed ``benchmarks/results`` keep no checkpoints,
so point it at runs of your own). Writes ``class_distribution.png``, ``per_class_f1.png`` and
``weight_norms.png`` to ``--output``; README's images came from the two main-job runs::

    python benchmarks/study/plot_runs.py --output docs/images \\
        --run CLS-tuning=lightning_logs/version_1 --run Prompt-tuning=lightning_logs/version_0
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

import yaml
from jsonargparse import ArgumentParser

from lt_tuning.data import LongTailedDataModule
from lt_tuning.models import LongTailedClassifier
from lt_tuning.plots import (
    class_distribution_figure,
    per_class_f1_figure,
    save_figure,
    weight_norms_figure,
)


def load_run(run_dir: Path) -> tuple[LongTailedDataModule, LongTailedClassifier, list[float]]:
    """The DataModule, the best checkpoint's classifier and the per-class test F1 of a run folder."""
    log_dir = max(run_dir.rglob("test_metrics.json"), key=lambda path: path.stat().st_mtime).parent
    config = yaml.safe_load((log_dir / "config.yaml").read_text(encoding="utf-8"))
    parser = ArgumentParser()
    parser.add_subclass_arguments(LongTailedDataModule, "data")
    built = parser.instantiate_classes(parser.parse_object({"data": config["data"]}))
    module_path, class_name = config["model"]["class_path"].rsplit(".", 1)
    model_class = getattr(importlib.import_module(module_path), class_name)
    best = next((log_dir / "checkpoints").glob("best-*.ckpt"))
    module = model_class.load_from_checkpoint(best, map_location="cpu")
    per_class_f1 = json.loads((log_dir / "test_metrics.json").read_text())["test/per_class_f1"]
    return built.data, module, per_class_f1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, metavar="NAME=DIR", help="a run folder and its name")
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args()
    f1s, norms, datamodule = {}, {}, None
    for item in args.run:
        name, folder = item.split("=", 1)
        datamodule, module, f1s[name] = load_run(Path(folder))
        norms[name] = module.class_weight_norms()
    # The counts that split the test metrics: the training split's, or the test split's own (the study's rule).
    counts = datamodule.metric_class_counts or datamodule.class_counts("test")
    ratio, names = datamodule.head_tail_ratio, datamodule.label_names
    for file, figure in {
        "class_distribution.png": class_distribution_figure(counts, ratio, names),
        "per_class_f1.png": per_class_f1_figure(f1s, counts, ratio, names),
        "weight_norms.png": weight_norms_figure(norms, counts, ratio, names),
    }.items():
        print("wrote", save_figure(figure, args.output / file))


if __name__ == "__main__":
    main()

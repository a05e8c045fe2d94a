"""Callbacks that write what a classifier's evaluation produced: metrics, predictions, plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure
from pytorch_lightning.callbacks import BasePredictionWriter, Callback
from pytorch_lightning.utilities import rank_zero_warn

from lt_tuning import plots
from lt_tuning.data import LongTailedDataModule
from lt_tuning.data.reading import write_table
from lt_tuning.classifier import prediction_columns
from lt_tuning.io import atomic_write_json
from lt_tuning.models import LongTailedClassifier


def log_dir(trainer: pl.Trainer) -> str:
    """The trainer's log dir, else its root dir. ``trainer.log_dir`` is a broadcast from rank 0:
    every process must ask for it, or the run hangs; callbacks ask before any rank-0-only work."""
    return trainer.log_dir or trainer.default_root_dir


class PredictionWriter(BasePredictionWriter):
    """Write one row per predicted example: its text field(s), its gold label where the split has
    labels, the ``top_k`` predicted labels and their probabilities (see
    :func:`~lt_tuning.inference.prediction_columns`), in input order, as TSV, CSV or JSON lines
    by the file's suffix (:func:`~lt_tuning.data.reading.write_table`).

    On several processes each predicts its share; the rows are gathered and written once, by the
    global-zero process.

    Args:
        output_file: where to write; default ``<log dir>/predictions.tsv``.
        top_k: how many labels per example, most probable first.
    """

    def __init__(self, output_file: str | None = None, top_k: int = 1) -> None:
        super().__init__(write_interval="epoch")
        self.output_file = output_file
        self.top_k = top_k

    def write_on_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions, batch_indices) -> None:
        rows = {index: probs for batch in predictions for index, probs in zip(batch["index"].tolist(), batch["probs"].cpu())}
        rows = gather_dicts(rows, trainer.world_size)
        path = Path(self.output_file or Path(log_dir(trainer)) / "predictions.tsv")
        if not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        split = datamodule.predict_split
        order = sorted(rows)
        texts = {key: [values[index] for index in order] for key, values in datamodule.examples[split].items()}
        probs = torch.stack([rows[index] for index in order])
        write_table(path, prediction_columns(texts, datamodule.label_spec, probs, self.top_k))
        print(f"Wrote {len(rows)} predictions ({split} split) to {path}")


def gather_dicts(part: dict, world_size: int) -> dict:
    """Every process's ``part`` merged, on every process (a collective call: all must make it)."""
    if world_size == 1:
        return part
    parts: list[dict] = [{} for _ in range(world_size)]
    torch.distributed.all_gather_object(parts, part)
    return {key: value for each in parts for key, value in each.items()}


class TestMetricsWriter(Callback):
    """After a test, write the module's metrics (acc, macro F1, head/tail and many/medium/few-shot
    F1, per-class F1, the confusion matrix and where the tail's errors go, calibration errors) as
    ``test_metrics.json`` in the trainer's log dir, from the global-zero process (the metrics
    are reduced over all processes already). With a :class:`LongTailedDataModule`, classes are
    named (see :func:`name_head_tail`), so that ``lt-tuning report`` needs the folder alone.
    An empty group (no head class, no few-shot class...) has no F1 key at all."""

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        result = getattr(pl_module, "last_test_metrics", None)
        folder = log_dir(trainer)
        if trainer.is_global_zero and result is not None:
            if isinstance(pl_module, LongTailedClassifier) and isinstance(trainer.datamodule, LongTailedDataModule):
                result = name_head_tail(result, trainer.datamodule)
            atomic_write_json(Path(folder) / "test_metrics.json", result)


def name_head_tail(result: dict[str, Any], datamodule: LongTailedDataModule) -> dict[str, Any]:
    """``result`` with its class indices as label names: ``head_classes`` and ``tail_classes``
    (head to tail); ``head_tail_counts``: the split whose counts divided them (``test``, or
    ``train`` with ``head_tail_from="train"``) and each class's count, in that order (classes
    absent from the test split, in neither group under the default rule, last); ``shot_classes``
    (many/medium/few-shot) and ``top_confusions`` (``[true, predicted, count]``). Also
    ``labels`` (index order, that of ``per_class_f1``, ``confusion_matrix`` and
    ``train_class_counts``) and the head/tail ratio."""
    result, names = dict(result), datamodule.label_names
    head, tail, counts = (result.pop(f"test/{key}") for key in ("head_classes", "tail_classes", "head_tail_counts"))
    order = head + tail + [c for c in range(len(names)) if c not in head + tail]
    named = {"labels": names, "head_tail_ratio": datamodule.head_tail_ratio,
             "head_classes": [names[c] for c in head], "tail_classes": [names[c] for c in tail],
             "head_tail_counts": {"split": "train" if datamodule.head_tail_from == "train" else "test",
                                  "counts": {names[c]: counts[c] for c in order}},
             "top_confusions": [[names[t], names[p], n] for t, p, n in result.pop("test/top_confusions", [])]}
    if "test/shot_classes" in result:
        named["shot_classes"] = {shot: [names[c] for c in classes]
                                 for shot, classes in result.pop("test/shot_classes").items()}
    return {**result, **named}


class PlotWriter(Callback):
    """After a test, save the head-to-tail figures of :mod:`lt_tuning.plots` as PNGs.

    ``class_distribution.png`` (training examples per class), ``per_class_f1.png`` (the test's
    per-class F1) and ``weight_norms.png`` (the module's ``class_weight_norms``), all
    in training-count order with the head/tail boundary of the DataModule's ratio. With
    ``head_tail_from="eval"`` (no training counts for the metrics) the test split's counts
    order the classes, as they split the test metrics. And ``confusion_matrix.png``, the test's
    confusion matrix in that order (:func:`~lt_tuning.plots.confusion_matrix_figure`). Written
    by the global-zero process.

    Args:
        enabled: ``False`` writes nothing (``--plots.enabled false``).
        output_dir: where to write; default the trainer's log dir.
    """

    FILES = ("class_distribution.png", "per_class_f1.png", "weight_norms.png")
    CONFUSION_FILE = "confusion_matrix.png"  # where the test's metrics hold a confusion matrix

    def __init__(self, enabled: bool = True, output_dir: str | None = None) -> None:
        self.enabled = enabled
        self.output_dir = output_dir

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.enabled:
            return
        datamodule = trainer.datamodule
        if not isinstance(pl_module, LongTailedClassifier) or pl_module.last_test_metrics is None \
                or not isinstance(datamodule, LongTailedDataModule):
            rank_zero_warn("PlotWriter plots a lt-tuning classifier tested on a LongTailedDataModule; no plots written.")
            return
        folder = Path(self.output_dir or log_dir(trainer))
        if not trainer.is_global_zero:
            return
        for name, figure in self.figures(datamodule, pl_module).items():
            plots.save_figure(figure, folder / name)

    def figures(self, datamodule: LongTailedDataModule, module: LongTailedClassifier) -> dict[str, Figure]:
        """The figures of ``module``'s latest test, by file name."""
        counts = datamodule.metric_class_counts or datamodule.class_counts("test")
        ratio, names, run = datamodule.head_tail_ratio, datamodule.label_names, type(module).__name__
        metrics = module.last_test_metrics
        figures = dict(zip(self.FILES, (
            plots.class_distribution_figure(counts, ratio, names),
            plots.per_class_f1_figure({run: metrics["test/per_class_f1"]}, counts, ratio, names),
            plots.weight_norms_figure({run: module.class_weight_norms()}, counts, ratio, names),
        )))
        if "test/confusion_matrix" in metrics:
            figures[self.CONFUSION_FILE] = plots.confusion_matrix_figure(metrics["test/confusion_matrix"], counts,
                                                                         ratio, names, title=f"Confusion matrix of {run}")
        return figures

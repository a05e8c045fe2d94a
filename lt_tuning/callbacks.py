"""Callbacks of the lt-tuning CLI."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter

from lt_tuning.io import atomic_write_text


class PredictionWriter(BasePredictionWriter):
    """Write one TSV row per predicted example: its text field(s), predicted label, probability.

    Args:
        output_file: where to write; default ``<log dir>/predictions.tsv``.
    """

    def __init__(self, output_file: str | None = None) -> None:
        super().__init__(write_interval="epoch")
        self.output_file = output_file

    def write_on_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions, batch_indices) -> None:
        if trainer.world_size > 1:
            raise RuntimeError("PredictionWriter writes from one process; run predict on a single device.")
        datamodule = trainer.datamodule
        split = datamodule.predict_split
        examples = datamodule.examples[split]
        rows = {}
        for batch in predictions:
            for index, pred, prob in zip(batch["index"].tolist(), batch["pred"].tolist(), batch["prob"].tolist()):
                rows[index] = (datamodule.label_names[pred], prob)
        fields = [key for key in ("text_a", "text_b") if key in examples]
        out = io.StringIO()
        writer = csv.writer(out, delimiter="\t", lineterminator="\n")
        writer.writerow([*datamodule.text_fields, "prediction", "probability"])
        for index in sorted(rows):
            label, prob = rows[index]
            writer.writerow([*(examples[field][index] for field in fields), label, f"{prob:.6f}"])
        path = Path(self.output_file or Path(trainer.log_dir or trainer.default_root_dir) / "predictions.tsv")
        atomic_write_text(path, out.getvalue())

"""What every lt-tuning LightningModule shares: the study's training recipe and its metrics."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn
from torchmetrics import MetricCollection
from transformers import get_linear_schedule_with_warmup

from lt_tuning.io import atomic_write_json
from lt_tuning.metrics import Accuracy, HeadTailF1, MacroF1, PerClassF1
from lt_tuning.models.losses import LossName, classification_loss

STAGES = ("val", "test")


class LongTailedClassifier(pl.LightningModule):
    """Base of the tuning modules: loss, AdamW + linear warmup schedule, acc/F1/head/tail F1.

    Subclasses implement :meth:`forward` (batch -> logits ``[B, C]``) and set ``input_format``
    (``"cls"`` or ``"prompt"``), which the DataModule reads to encode its splits.

    Args:
        model_name_or_path: the pretrained encoder (hub name or local folder).
        num_classes: number of labels (the CLI links it from the DataModule).
        loss: ``cross_entropy``, ``focal`` (Lin et al.) or ``focal_reference`` (the study's code).
        focal_gamma: gamma of either focal loss (the study used 1.0 with ``focal_reference``).
        learning_rate, weight_decay, warmup_proportion: AdamW and linear-schedule settings;
            bias and LayerNorm weights never decay.
        head_tail_ratio, class_counts: head/tail split of the metrics (linked from the
            DataModule); ``class_counts=None`` splits on each evaluated set itself.
    """

    input_format: str = "cls"

    def __init__(
        self,
        model_name_or_path: str,
        num_classes: int,
        loss: LossName = "cross_entropy",
        focal_gamma: float = 1.0,
        learning_rate: float = 1e-5,
        weight_decay: float = 0.0,
        warmup_proportion: float = 0.1,
        head_tail_ratio: float = 0.65,
        class_counts: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.metrics = nn.ModuleDict({stage: self._make_metrics(head_tail_ratio, class_counts) for stage in STAGES})

    def _make_metrics(self, ratio: float, class_counts: Sequence[int] | None) -> MetricCollection:
        """All metrics share one set of confusion counts (a torchmetrics compute group)."""
        c = self.num_classes
        return MetricCollection({
            "acc": Accuracy(c),
            "f1": MacroF1(c),
            "per_class_f1": PerClassF1(c),
            "head_tail": HeadTailF1(c, ratio=ratio, class_counts=class_counts),
        })

    # --- steps --------------------------------------------------------------------------

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits = self(batch)
        loss = classification_loss(logits, batch["labels"], self.hparams.loss, self.hparams.focal_gamma)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _eval_step(self, batch: dict[str, torch.Tensor], stage: str) -> None:
        self.metrics[stage].update(self(batch).argmax(dim=-1), batch["labels"])

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        probs = self(batch).float().softmax(dim=-1)
        prob, pred = probs.max(dim=-1)
        return {"index": batch["index"], "pred": pred, "prob": prob}

    def _log_epoch(self, stage: str) -> dict[str, float]:
        computed = self.metrics[stage].compute()  # head_tail's dict arrives flattened: head_f1, tail_f1
        self.metrics[stage].reset()
        per_class = computed.pop("per_class_f1")
        values = {f"{stage}/{name}": value for name, value in computed.items()}
        self.log_dict(values, prog_bar=stage == "val")  # already reduced across processes
        result = {key: float(value) for key, value in values.items()}
        result[f"{stage}/per_class_f1"] = per_class.tolist()
        return result

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        result = self._log_epoch("test")
        log_dir = self.trainer.log_dir
        if self.trainer.is_global_zero and log_dir is not None:
            atomic_write_json(Path(log_dir) / "test_metrics.json", result)

    # --- optimisation -------------------------------------------------------------------

    def configure_optimizers(self):
        """AdamW without decay on bias/LayerNorm, linear decay after linear warmup, per step."""
        no_decay, decay, seen = [], [], set()
        for module in self.modules():
            for name, param in module.named_parameters(recurse=False):
                if not param.requires_grad or id(param) in seen:  # tied weights appear twice
                    continue
                seen.add(id(param))
                plain = name == "bias" or isinstance(module, nn.LayerNorm) or "LayerNorm" in type(module).__name__
                (no_decay if plain else decay).append(param)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.hparams.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.hparams.learning_rate,
        )
        total = self.trainer.estimated_stepping_batches
        scheduler = get_linear_schedule_with_warmup(optimizer, int(self.hparams.warmup_proportion * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

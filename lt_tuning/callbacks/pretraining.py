"""Callbacks of masked-LM pretraining: exporting the backbone with its held-out report."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from lt_tuning.data import MaskedLMCorpusDataModule
from lt_tuning.io import atomic_write_json
from lt_tuning.models.backbone import load_masked_lm
from lt_tuning.models.masked_lm import masked_token_accuracy


class MaskedLMExport(Callback):
    """Save a pretrained masked LM for fine-tuning: at the end of fit, and at budgets of tokens seen.

    Each export is a ``save_pretrained`` folder (weights, config, the corpus' tokenizer) that
    ``AutoModelForMaskedLM`` and both tuning modules load with no new weights, and a
    ``pretraining_report.json``: steps, tokens seen, parameters, the corpus files with their
    sha256, and per language the held-out masked-token accuracy of the *saved* weights (reloaded
    as lt-tuning loads them) next to that language's unigram baseline.

    Args:
        output_dir: where the final model goes (None: not saved at the end).
        token_budgets: save ``budgets_dir/<budget>`` when the tokens seen first reach each
            budget; budget 0 is the random initialisation, saved when fit starts.
        budgets_dir: the budget checkpoints' folder (needed with ``token_budgets``).
        half_precision: store the weights as float16, half the bytes (lt-tuning loads them as float32).
        dropout: hidden and attention dropout written into the saved config, for fine-tuning
            (e.g. BERT's 0.1 after a pretraining without dropout); None keeps the model's own.
    """

    def __init__(
        self,
        output_dir: str | None = None,
        token_budgets: list[int] | None = None,
        budgets_dir: str | None = None,
        half_precision: bool = False,
        dropout: float | None = None,
    ) -> None:
        if token_budgets and budgets_dir is None:
            raise ValueError("MaskedLMExport: token_budgets need a budgets_dir to save into.")
        self.output_dir = output_dir
        self.pending = sorted(token_budgets or [])
        self.budgets_dir = budgets_dir
        self.half_precision = half_precision
        self.dropout = dropout

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save_reached_budgets(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        self._save_reached_budgets(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.output_dir is not None:
            self.export(trainer, pl_module, Path(self.output_dir))

    def _save_reached_budgets(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        while self.pending and pl_module.tokens_seen >= self.pending[0]:
            self.export(trainer, pl_module, Path(self.budgets_dir) / str(self.pending.pop(0)))

    def state_dict(self) -> dict[str, Any]:
        return {"pending": self.pending}  # a resumed run does not save budgets it already passed

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pending = state_dict["pending"]

    def export(self, trainer: pl.Trainer, pl_module: pl.LightningModule, folder: Path) -> None:
        """Save ``pl_module.model``, the DataModule's tokenizer and the report into ``folder``."""
        if not trainer.is_global_zero:
            return
        model = copy.deepcopy(pl_module.model)
        if self.dropout is not None:
            model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = self.dropout
        (model.half() if self.half_precision else model).save_pretrained(folder)
        datamodule = trainer.datamodule
        report = {"steps": trainer.global_step, "tokens_seen": pl_module.tokens_seen,
                  "parameters": sum(p.numel() for p in model.parameters())}
        if isinstance(datamodule, MaskedLMCorpusDataModule):
            datamodule.tokenizer.save_pretrained(folder)
            saved = load_masked_lm(str(folder))  # the weights as fine-tuning will see them
            for language, batches in datamodule.heldout_batches.items():
                report[f"heldout_mlm_acc_{language}"] = masked_token_accuracy(saved, batches)
                report[f"heldout_unigram_baseline_acc_{language}"] = datamodule.unigram_baseline_accuracy(language, batches)
            report["corpus"] = datamodule.sources
        atomic_write_json(folder / "pretraining_report.json", report)

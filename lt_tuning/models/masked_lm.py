"""Masked-LM pretraining: a small BERT trained from scratch, or a given masked LM adapted to the task text."""

from __future__ import annotations

from collections.abc import Iterable

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from transformers import BertConfig, BertForMaskedLM, PreTrainedModel

from lt_tuning.models.backbone import encoder_inputs, load_masked_lm, mlm_head
from lt_tuning.models.base import adamw_with_warmup


def masked_logits(
    model: PreTrainedModel, batch: dict[str, torch.Tensor], head: torch.nn.Module | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Vocabulary logits ``[N, V]`` at the N predicted positions (labels != -100), and their
    labels ``[N]``: the MLM ``head`` (default: the model's own) runs at those positions only."""
    hidden = model.base_model(**encoder_inputs(batch)).last_hidden_state
    selected = batch["labels"] != -100
    head = mlm_head(model) if head is None else head
    return head(hidden[selected]), batch["labels"][selected]


@torch.no_grad()
def masked_token_accuracy(model: PreTrainedModel, batches: Iterable[dict[str, torch.Tensor]]) -> float:
    """Share of the predicted positions (labels != -100) whose token ``model`` gets right."""
    was_training = model.training
    model.eval()
    head, correct, total = mlm_head(model), 0, 0
    for batch in batches:
        logits, labels = masked_logits(model, batch, head)
        correct += int((logits.argmax(dim=-1) == labels).sum())
        total += labels.numel()
    model.train(was_training)
    return correct / total


class MaskedLMPretrainingModule(pl.LightningModule):
    """Masked-LM training whose vocabulary projection runs only at the masked positions.

    Batches come from :class:`~lt_tuning.data.MaskedLMCorpusDataModule` (labels -100 where
    nothing is predicted). :class:`~lt_tuning.callbacks.MaskedLMExport` saves the model for
    fine-tuning, at the end of fit and at budgets of ``tokens_seen``.

    Args:
        vocab_size: the tokenizer's vocabulary size (the CLI links it from the DataModule).
        pad_token_id: the tokenizer's padding id (linked likewise).
        model_name_or_path: continue pretraining this masked LM (task-adaptive pretraining);
            None builds a BERT from the size arguments below.
        hidden_size: the new BERT's hidden size.
        num_hidden_layers: its number of layers.
        num_attention_heads: its attention heads per layer.
        intermediate_size: its feed-forward size.
        max_position_embeddings: its longest input.
        dropout: the new BERT's hidden and attention dropout. 0 suits a short pretraining
            (the model underfits, it does not overfit); the saved config keeps this value.
        learning_rate: AdamW's peak learning rate, after a linear warmup, then linear decay.
        weight_decay: AdamW's weight decay.
        warmup_proportion: the share of the schedule spent warming up.
        schedule_steps: length of that schedule; None: the trainer's step budget. Set it to
            stop early on a longer schedule (e.g. to rebuild a run cut short by ``max_time``).
    """

    def __init__(
        self,
        vocab_size: int,
        pad_token_id: int = 0,
        model_name_or_path: str | None = None,
        hidden_size: int = 256,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 4,
        intermediate_size: int = 1024,
        max_position_embeddings: int = 512,
        dropout: float = 0.1,
        learning_rate: float = 5e-4,
        weight_decay: float = 0.01,
        warmup_proportion: float = 0.06,
        schedule_steps: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if model_name_or_path is not None:
            self.model = load_masked_lm(model_name_or_path)
            if self.model.get_input_embeddings().num_embeddings < vocab_size:
                self.model.resize_token_embeddings(vocab_size)
        else:
            config = BertConfig(
                vocab_size=vocab_size, pad_token_id=pad_token_id, hidden_size=hidden_size,
                num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                intermediate_size=intermediate_size, max_position_embeddings=max_position_embeddings,
                hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
            )
            self.model = BertForMaskedLM(config).train()
        self.head = mlm_head(self.model)
        self.tokens_seen = 0
        self.val_loss = MeanMetric()
        self.val_acc = MeanMetric()

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Vocabulary logits ``[N, V]`` at the N predicted positions, and their labels ``[N]``."""
        return masked_logits(self.model, batch, self.head)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        logits, labels = self(batch)
        loss = F.cross_entropy(logits.float(), labels)
        # Every process's tokens: budgets and the learning curve count what the model learnt from.
        self.tokens_seen += int(self.trainer.strategy.reduce(batch["attention_mask"].sum(), reduce_op="sum"))
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        logits, labels = self(batch)
        self.val_loss.update(F.cross_entropy(logits.float(), labels, reduction="none"))
        self.val_acc.update((logits.argmax(dim=-1) == labels).float())

    def on_validation_epoch_end(self) -> None:
        # Reduced across processes already (the metrics sync, tokens_seen counts all), so equal on
        # all: "max" syncs them exactly (Lightning would warn about an unsynced value).
        metrics = {"val/mlm_loss": self.val_loss.compute(), "val/mlm_acc": self.val_acc.compute()}
        self.log_dict(metrics, prog_bar=True, sync_dist=True, reduce_fx="max")
        self.log("tokens_seen", float(self.tokens_seen), sync_dist=True, reduce_fx="max")  # the learning curve's x axis
        self.val_loss.reset()
        self.val_acc.reset()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["tokens_seen"] = self.tokens_seen  # budgets of tokens go on counting after a resume

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.tokens_seen = checkpoint.get("tokens_seen", 0)

    def configure_optimizers(self):
        return adamw_with_warmup(self, self.hparams.learning_rate, self.hparams.weight_decay,
                                 self.hparams.warmup_proportion, self.hparams.schedule_steps)

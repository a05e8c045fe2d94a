"""The study's recipe: early-stopping patience in epochs of steps, AdamW eps, the "w/ LN" eps."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.demos.boring_classes import BoringModel, RandomDataset
from torch.utils.data import DataLoader

from lt_tuning import ClsTuningModule
from lt_tuning.callbacks.training import EpochPatienceEarlyStopping, patience_in_evaluations


class RowsModel(BoringModel):
    """BoringModel whose training split has ``rows`` examples in batches of 32."""

    def __init__(self, rows: int) -> None:
        super().__init__()
        self.rows = rows

    def train_dataloader(self) -> DataLoader:
        return DataLoader(RandomDataset(32, self.rows), batch_size=32)


@pytest.mark.parametrize(("rows", "batches", "steps", "evaluations"), [
    (8578, 269, 538, 5),     # CMID train: evaluations at +100..+500 steps, the stop at +538 comes before +600
    (20666, 646, 1292, 12),  # CTC train: +1200 is seen, the stop at +1292 comes before +1300
])
def test_patience_is_two_epochs_of_steps_counted_in_evaluations(rows, batches, steps, evaluations):
    stopping = EpochPatienceEarlyStopping(monitor="val_loss")
    trainer = pl.Trainer(max_steps=1, val_check_interval=100, check_val_every_n_epoch=None, limit_val_batches=0,
                         callbacks=[stopping], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(RowsModel(rows))
    assert trainer.num_training_batches == batches
    assert (stopping.patience_steps, stopping.patience) == (steps, evaluations)


def test_patience_in_evaluations_counts_an_evaluation_at_the_limit():
    assert patience_in_evaluations(600, 100) == 6  # the study evaluates at +600, then stops
    assert patience_in_evaluations(599, 100) == 5
    assert patience_in_evaluations(40, 100) == 1  # at least one evaluation
    assert patience_in_evaluations(2 * 186, 93) == 4  # R52 (5943 rows) with 2 evaluations per epoch


def test_adamw_eps_and_fresh_layer_norm_eps(tiny_bert_dir):
    module = ClsTuningModule(tiny_bert_dir, num_classes=3, activation="relu", layer_norm="fresh")
    assert [type(layer).__name__ for layer in module.head] == ["Linear", "ReLU", "Dropout", "LayerNorm", "Linear"]
    assert module.head[3].eps == 1e-5  # torch's default, as the study's "w/ LN"; the encoder's is 1e-12
    assert module.encoder.config.layer_norm_eps == 1e-12
    module.trainer = pl.Trainer(max_steps=10, logger=False)
    optimizer = module.configure_optimizers()["optimizer"]
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [group["eps"] for group in optimizer.param_groups] == [1e-6, 1e-6]

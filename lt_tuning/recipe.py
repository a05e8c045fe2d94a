"""The study's training recipe as the ``lt-tuning`` CLI runs it, for Python users in one call.

The CLI and :func:`recipe_trainer` share these settings, so the same seed gives the same
numbers from a notebook as from ``lt-tuning fit`` (tested). The recipe: AdamW with linear warmup
(in the modules), gradient clipping 1.0, 10 epochs, dev evaluation every 100 steps and at the
last one, the best checkpoint by dev macro F1, early stopping after 2 epochs of steps without
improvement, per-step seeding (exact resume), then a test of the best checkpoint.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from lt_tuning.callbacks import (
    EpochPatienceEarlyStopping,
    PlotWriter,
    PredictionWriter,
    StepSeed,
    TestMetricsWriter,
    ValidateLastStep,
)
from lt_tuning.io import AtomicCheckpointIO

SEED = 775
TRAINER = {"max_epochs": 10, "gradient_clip_val": 1.0, "val_check_interval": 100, "check_val_every_n_epoch": None,
           "precision": "32-true", "log_every_n_steps": 10}
BEST_CHECKPOINT = {"monitor": "val/f1", "mode": "max", "filename": "best-{step}"}
# last.ckpt every N steps, for `--ckpt_path last` after a kill (the best checkpoint's own save_last
# would only refresh it when dev F1 improves)
LAST_CHECKPOINT = {"save_top_k": 0, "save_last": True, "every_n_train_steps": 100}
EARLY_STOPPING = {"monitor": "val/f1", "mode": "max", "patience_epochs": 2.0}  # the study's patience

# The callbacks of every run: the CLI's option group (--checkpoint.*, --plots.* ...) -> class and defaults.
CALLBACKS: dict[str, tuple[type[Callback], dict[str, Any]]] = {
    "checkpoint": (ModelCheckpoint, BEST_CHECKPOINT),
    "last_checkpoint": (ModelCheckpoint, LAST_CHECKPOINT),
    "early_stopping": (EpochPatienceEarlyStopping, EARLY_STOPPING),
    "prediction_writer": (PredictionWriter, {}),  # predict: one row per example
    "test_metrics": (TestMetricsWriter, {}),  # <log dir>/test_metrics.json
    "plots": (PlotWriter, {}),  # PNGs after test; --plots.enabled false: none
    "step_seed": (StepSeed, {}),  # exact resume after a kill
    "validate_last_step": (ValidateLastStep, {}),  # a best checkpoint for any budget
}


def recipe_callbacks() -> list[Callback]:
    """The callbacks ``lt-tuning fit`` adds (:data:`CALLBACKS`), with its defaults."""
    return [callback_class(**defaults) for callback_class, defaults in CALLBACKS.values()]


def recipe_trainer(**overrides: Any) -> pl.Trainer:
    """A Trainer with the CLI's recipe: its Trainer defaults (``overrides`` win), its callbacks
    (given ``callbacks`` are added to them) and atomic checkpoint writes. Seed before building
    the model (``pl.seed_everything(775)``, the CLI's default seed), as the CLI does."""
    callbacks = recipe_callbacks() + list(overrides.pop("callbacks", []))
    return pl.Trainer(callbacks=callbacks, plugins=[AtomicCheckpointIO()], **{**TRAINER, **overrides})


def best_checkpoint_test(trainer: pl.Trainer, model: pl.LightningModule,
                         datamodule: pl.LightningDataModule) -> list[dict[str, float]]:
    """Test the best checkpoint of ``trainer``'s fit; where no evaluation saved one, the final
    weights, with a warning. What ``lt-tuning fit`` does after training."""
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if not best:
        monitor = trainer.checkpoint_callback.monitor if trainer.checkpoint_callback else None
        rank_zero_warn(f"No best checkpoint was saved (no validation ran, or it did not log {monitor!r}): "
                       "TESTING THE FINAL WEIGHTS, not a best checkpoint.")
    if best and getattr(model, "fits_posthoc", False):
        fit_posthoc_on_dev(trainer, model, datamodule, best)
    return trainer.test(model, datamodule=datamodule, ckpt_path=best or None)


def fit_posthoc_on_dev(trainer: pl.Trainer, model: pl.LightningModule, datamodule: pl.LightningDataModule,
                       ckpt_path: str) -> None:
    """Fit the model's post-hoc settings (temperature, post-hoc tau ``"auto"``) on the dev logits
    of the checkpoint ``ckpt_path``, and write them into that checkpoint's state, so that a test,
    ``predict_proba``, an export or a server of it apply them."""
    model.collect_dev_logits()
    trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    if trainer.is_global_zero:
        checkpoint_io = trainer.strategy.checkpoint_io
        checkpoint = checkpoint_io.load_checkpoint(ckpt_path)
        for name in ("temperature", "posthoc_tau"):
            checkpoint["state_dict"][name] = getattr(model, name).detach().cpu().clone()
        checkpoint_io.save_checkpoint(checkpoint, ckpt_path)
    trainer.strategy.barrier("fit_posthoc_on_dev")
    fit = ", ".join(f"{key} {value:.4g}" for key, value in model.posthoc_fit.items())
    rank_zero_info(f"Fitted on dev and saved in {ckpt_path}: {fit}")


def fit_and_test(model: pl.LightningModule, datamodule: pl.LightningDataModule,
                 **trainer_overrides: Any) -> dict[str, Any]:
    """``lt-tuning fit`` from Python: train ``model`` on ``datamodule`` with :func:`recipe_trainer`,
    test the best checkpoint, and return its test metrics (acc, macro F1, head/tail F1, per-class F1)."""
    trainer = recipe_trainer(**trainer_overrides)
    trainer.fit(model, datamodule=datamodule)
    best_checkpoint_test(trainer, model, datamodule)
    return model.last_test_metrics

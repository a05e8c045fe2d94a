"""Callbacks that steer training: per-step seeding, a last-step evaluation, early stopping in epochs."""

from __future__ import annotations

import math
import os
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping


class StepSeed(Callback):
    """Seed torch's random generator before every training batch from (seed, batch number, rank).

    The random draws of a step (dropout) then depend only on where the step is in training,
    not on what else ran in the process before it (a validation, a restart), so a run resumed
    from a mid-epoch checkpoint draws what the uninterrupted run drew and ends with the same
    weights.

    Args:
        seed: base seed; None takes ``seed_everything``'s (``$PL_GLOBAL_SEED``), else torch's
            initial seed of the process.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._base = 0

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._base = self.seed if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        batch_number = trainer.fit_loop.total_batch_idx  # counts across epochs, restored on resume
        torch.manual_seed(((self._base * 1_000_003 + batch_number) * 4099 + trainer.global_rank) % 2**63)


class ValidateLastStep(Callback):
    """Validate after the last training step of a step or epoch budget, if the interval missed it.

    Validation runs every ``val_check_interval`` steps; a budget that is not a multiple of it
    would end with steps no evaluation saw, and one shorter than an interval with no best
    checkpoint at all. Asking the trainer to stop at the last step makes Lightning validate
    there (as it does when early stopping asks), and only there.
    """

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        last_step = trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps
        last_epoch = trainer.max_epochs not in (None, -1) and trainer.current_epoch + 1 >= trainer.max_epochs
        if last_step or (last_epoch and trainer.is_last_batch):
            trainer.should_stop = True


def patience_in_evaluations(patience_steps: float, steps_between_evaluations: float) -> int:
    """How many evaluations without improvement stand for ``patience_steps`` training steps.

    The study stops as soon as ``patience_steps`` steps have passed since the best evaluation,
    between evaluations too, so it sees ``floor(patience_steps / steps_between_evaluations)``
    evaluations without improvement and never the next one (at least 1 here).
    """
    return max(1, math.floor(patience_steps / steps_between_evaluations))


class EpochPatienceEarlyStopping(EarlyStopping):
    """:class:`~pytorch_lightning.callbacks.EarlyStopping` with ``patience_epochs``.

    At the start of fit, ``patience_epochs`` x the real number of training batches per epoch
    (``patience_steps``) becomes ``patience`` in evaluations, from the trainer's evaluation
    interval (``val_check_interval``, ``check_val_every_n_epoch``). The study's rule, 2 epochs
    without improvement, thus holds for every dataset size with no per-dataset number in a config.

    Args:
        patience_epochs: epochs of steps without improvement before stopping; None: use
            ``patience`` (in evaluations) as given.
        **kwargs: the arguments of ``EarlyStopping``.
    """

    def __init__(self, monitor: str, patience_epochs: float | None = 2.0, **kwargs: Any) -> None:
        super().__init__(monitor, **kwargs)
        if patience_epochs is not None and patience_epochs <= 0:
            raise ValueError(f"patience_epochs must be positive or None, got {patience_epochs}.")
        self.patience_epochs = patience_epochs
        self.patience_steps: float | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.patience_epochs is None:
            return
        between = trainer.val_check_batch
        if between is None or math.isinf(between) or math.isinf(trainer.num_training_batches):
            raise ValueError(
                "patience_epochs needs a training loader with a length and evaluations every N batches or a "
                "fraction of an epoch; otherwise set patience_epochs to null and give patience in evaluations."
            )
        self.patience_steps = self.patience_epochs * trainer.num_training_batches
        self.patience = patience_in_evaluations(self.patience_steps, between * (trainer.check_val_every_n_epoch or 1))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Check at the epoch's end (with per-epoch validation) only where validation runs: a fit
        with no dev split or ``limit_val_batches=0`` has no ``monitor`` to stop on."""
        if sum(trainer.num_val_batches) > 0:
            super().on_train_epoch_end(trainer, pl_module)

"""Data loading that survives a kill mid-epoch, and evaluation on many processes without repeats."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lt_tuning.data.sampler import DistributedLengthGroupedSampler, LengthGroupedBatchSampler


def world(trainer: pl.Trainer | None) -> tuple[int, int]:
    """(number of processes, this one's rank) of ``trainer``'s run; (1, 0) outside a Trainer."""
    return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)


def shuffle_seed(trainer: pl.Trainer | None = None) -> int:
    """The seed of a training order: the first draw from ``seed_everything``'s seed
    ($PL_GLOBAL_SEED), random when nothing was seeded. Drawn when a loader is made, so a
    DataModule built before or after seeding trains on the same order. On several processes,
    rank 0's draw on all (broadcast): their shares of one order must not overlap, seeded or not."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
    drawn = int(torch.randint(0, 2**62, (), generator=generator).item())
    return trainer.strategy.broadcast(drawn) if trainer is not None and trainer.world_size > 1 else drawn


def train_loader(dataset: Dataset, batch_size: int, group_by_length: bool, seed: int, world_size: int = 1,
                 rank: int = 0, **kwargs: Any) -> ResumableDataLoader:
    """Shuffled batches (of similar lengths with ``group_by_length``), a new order each epoch from
    ``seed``, that resume mid-epoch. On ``world_size`` processes: process ``rank``'s share, as many
    batches on each, from a ``DistributedSampler`` (Lightning cannot put its own into a batch sampler);
    every process must give the same ``seed`` (:func:`shuffle_seed`)."""
    generator = torch.Generator().manual_seed(seed)
    lengths = [len(ids) for ids in dataset["input_ids"]] if group_by_length else None
    if world_size > 1:
        kwargs.update(batch_size=batch_size, sampler=(
            DistributedLengthGroupedSampler(lengths, batch_size, world_size, rank, seed) if group_by_length
            else DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)))
    elif group_by_length:
        kwargs["batch_sampler"] = LengthGroupedBatchSampler(lengths, batch_size, generator=generator)
    else:
        kwargs.update(batch_size=batch_size, shuffle=True)
    return ResumableDataLoader(dataset, generator=generator, **kwargs)


def eval_loader(dataset: Dataset, batch_size: int, world_size: int, rank: int, **kwargs: Any) -> DataLoader:
    """Batches in order, each example once per run over all ``world_size`` processes."""
    if world_size > 1:  # Lightning keeps a DistributedSampler; its default one would repeat examples
        kwargs["sampler"] = UnrepeatedDistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
    return DataLoader(dataset, batch_size=batch_size, **kwargs)


class ResumableDataLoader(DataLoader):
    """A training DataLoader that a run resumed from a mid-epoch checkpoint continues exactly.

    Its :meth:`position` (saved by the DataModule; not named ``state_dict``, so that Lightning
    does not save it twice) is the ``generator``'s state when the epoch began plus the batches
    handed out since: on resume the epoch's order is drawn again and those batches are skipped
    (loaded and dropped: cheap for tokenized rows, and it works with any sampler whose order
    depends only on ``generator`` and the epoch).
    """

    def __init__(self, dataset: Dataset, *, generator: torch.Generator, **kwargs: Any) -> None:
        super().__init__(dataset, generator=generator, **kwargs)
        self._epoch_state: torch.Tensor | None = None
        self._served = 0
        self._skip = 0

    def __iter__(self) -> Iterator[Any]:
        self._epoch_state = self.generator.get_state()  # before the sampler draws from it
        skip, self._skip = self._skip, 0
        batches = super().__iter__()
        for _ in range(skip):
            next(batches)
        self._served = skip
        for batch in batches:
            self._served += 1
            yield batch

    def position(self) -> dict[str, Any]:
        """Where the current epoch's order came from and how far into it training got."""
        if self._epoch_state is None or self._served >= len(self):  # the next epoch starts from here
            return {"generator": self.generator.get_state(), "batches": 0}
        return {"generator": self._epoch_state, "batches": self._served}

    def load_position(self, position: dict[str, Any]) -> None:
        """Make the next iteration replay the saved epoch's order from its first unseen batch."""
        self.generator.set_state(position["generator"])
        self._skip = int(position["batches"])

"""Length-grouped batches: similar lengths share a batch, so dynamic padding pads little."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DistributedSampler, Sampler


def shuffled(count: int, generator: torch.Generator, total: int | None = None) -> torch.Tensor:
    """A random order of ``range(count)``; ``total`` pads it by repeating it from the start (as
    ``DistributedSampler`` pads), so that every process gets as many examples."""
    order = torch.randperm(count, generator=generator)
    return order if total is None else order.repeat(math.ceil(total / count))[:total]


def length_grouped_batches(lengths: torch.Tensor, batch_size: int, group_batches: int, generator: torch.Generator,
                           total: int | None = None) -> list[list[int]]:
    """One epoch of shuffled batches of indices whose sequences have similar lengths.

    Shuffle all indices, cut them into chunks of ``group_batches`` batches, sort each chunk by
    length, cut it into batches, and shuffle the batch order: every example appears once and
    the grouping stays random; only the lengths inside a batch are brought together.
    ``total`` (a multiple of ``batch_size``) pads the shuffled indices by repeating them from
    the start, so that every batch is full.
    """
    order = shuffled(len(lengths), generator, total)
    batches = []
    for group in order.split(batch_size * group_batches):
        group = group[torch.argsort(lengths[group], descending=True, stable=True)]
        batches.extend(batch.tolist() for batch in group.split(batch_size))
    return [batches[position] for position in torch.randperm(len(batches), generator=generator).tolist()]


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Length-grouped batches (:func:`length_grouped_batches`), a new draw each epoch.

    Each epoch draws from ``generator``: give the DataLoader's, and the generator's state when
    an epoch begins replays that epoch (how :class:`~lt_tuning.data.loaders.ResumableDataLoader`
    resumes). None: a fresh seed from torch's global generator each epoch, as ``RandomSampler``.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, group_batches: int = 50,
                 generator: torch.Generator | None = None) -> None:
        if batch_size < 1 or group_batches < 1:
            raise ValueError("batch_size and group_batches must be positive.")
        self.lengths = torch.as_tensor(lengths)
        self.batch_size = batch_size
        self.group_batches = group_batches
        self.generator = generator

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        generator = self.generator
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.empty((), dtype=torch.int64).random_().item()))
        yield from length_grouped_batches(self.lengths, self.batch_size, self.group_batches, generator)


class DistributedLengthGroupedSampler(DistributedSampler):
    """One process's share of the length-grouped batches, as a stream of indices.

    Every process draws the same epoch of batches (from ``seed`` + the epoch, which Lightning
    sets through :meth:`set_epoch`), padded by repeating examples so that all batches are full
    and each process gets as many (DDP needs equal step counts); process ``rank`` takes batches
    ``rank``, ``rank + R``... A DataLoader with ``batch_size`` cuts the stream back into exactly
    those batches. Being a ``DistributedSampler``, Lightning keeps it as it is.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, num_replicas: int, rank: int, seed: int,
                 group_batches: int = 50) -> None:
        super().__init__(lengths, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.lengths = torch.as_tensor(lengths)
        self.batch_size = batch_size
        self.group_batches = group_batches
        self.num_samples = math.ceil(len(lengths) / (batch_size * num_replicas)) * batch_size
        self.total_size = self.num_samples * num_replicas

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        batches = length_grouped_batches(self.lengths, self.batch_size, self.group_batches, generator, self.total_size)
        for batch in batches[self.rank :: self.num_replicas]:
            yield from batch


class BlockSampler(DistributedSampler):
    """``DistributedSampler``'s order and shares (a new shuffle each epoch from ``seed``; every
    ``num_replicas``-th index from ``rank``, as many on each process), held as a tensor, 8 bytes an
    index (a pretraining corpus' blocks): its own Python list of every index takes about 40 on each process."""

    def __iter__(self) -> Iterator[int]:
        order = shuffled(len(self.dataset), torch.Generator().manual_seed(self.seed + self.epoch), self.total_size)
        return map(int, order[self.rank :: self.num_replicas].numpy())  # a tensor's iterator would unbind it whole

"""Length-grouped batches: similar lengths share a batch, so dynamic padding pads little."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Shuffled batches of indices whose sequences have similar lengths.

    Each epoch: shuffle all indices, cut them into chunks of ``group_batches`` batches, sort
    each chunk by length, cut it into batches, and shuffle the batch order. Every example
    appears exactly once per epoch and the grouping stays random across epochs; only the
    lengths inside a batch are brought together. Lightning calls :meth:`set_epoch`.
    """

    def __init__(
        self, lengths: Sequence[int], batch_size: int, group_batches: int = 50, seed: int | None = None
    ) -> None:
        if batch_size < 1 or group_batches < 1:
            raise ValueError("batch_size and group_batches must be positive.")
        self.lengths = torch.as_tensor(lengths)
        self.batch_size = batch_size
        self.group_batches = group_batches
        self.seed = int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator)
        chunk = self.batch_size * self.group_batches
        batches = []
        for group in order.split(chunk):
            group = group[torch.argsort(self.lengths[group], descending=True, stable=True)]
            batches.extend(batch.tolist() for batch in group.split(self.batch_size))
        for position in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[position]

"""Lightning checkpoint IO with atomic writes (kept apart from :mod:`lt_tuning.io`, which needs no torch)."""

from __future__ import annotations

from typing import Any

import torch
from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.plugins.io import TorchCheckpointIO

from lt_tuning.io import atomic_open


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes local checkpoints with :func:`atomic_open`.

    Lightning's own save stages the file in the system temp folder; where that is another file
    system than the checkpoint folder, the final move is a copy that a kill can cut short,
    leaving a truncated ``last.ckpt`` for ``--ckpt_path last`` to choke on. Remote paths
    (``s3://`` and the like) are left to Lightning.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}.")
        with atomic_open(path) as out:
            torch.save(checkpoint, out)

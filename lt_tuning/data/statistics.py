"""Class frequencies of a labelled split: they define head and tail classes and the class priors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pytorch_lightning.utilities import rank_zero_warn


def count_classes(labels: Sequence[int], num_classes: int) -> list[int]:
    """Number of examples of each of ``num_classes`` classes among ``labels``."""
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).tolist()


def warn_absent_classes(where: object, label_names: Sequence[str], counts: Sequence[int], what: str,
                        consequence: str) -> None:
    """Name the classes that ``where`` has no example of, and what that means."""
    absent = [name for name, count in zip(label_names, counts) if count == 0]
    if absent:
        rank_zero_warn(f"{where}: {len(absent)} class(es) have no {what}: {absent}. {consequence}")

"""Classification losses: cross-entropy and focal loss (published and reference variants)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

LossName = Literal["cross_entropy", "focal", "focal_reference"]


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Focal loss as published (Lin et al., ICCV 2017) per example, ``[N]``: ``-(1 - p_t)^gamma log p_t``."""
    log_p = F.log_softmax(logits.float(), dim=-1).gather(1, target[:, None]).squeeze(1)
    return -((1.0 - log_p.exp()) ** gamma) * log_p


def focal_loss_reference(logits: torch.Tensor, target: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """The study's code's "focal loss" per example, ``[N]``: ``-(1 - log p_t)^gamma log p_t``.

    Not the published loss: the factor uses ``log p`` where Lin et al. use ``p``, so it grows
    without bound as ``p_t -> 0`` instead of staying in [0, 1]. The paper's focal-loss numbers
    came from this variant (gamma = 1.0); it is kept only to reproduce them.
    """
    log_p = F.log_softmax(logits.float(), dim=-1).gather(1, target[:, None]).squeeze(1)
    return -((1.0 - log_p) ** gamma) * log_p


def classification_loss(logits: torch.Tensor, target: torch.Tensor, name: LossName = "cross_entropy",
                        gamma: float = 1.0, class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean loss ``name`` of ``logits [N, C]`` against class indices ``target [N]``.

    With ``class_weights [C]`` each example's loss is multiplied by its class's weight before
    the mean over the batch (Cui et al. 2019's class-balanced loss: not divided by the weights' sum).
    """
    if name == "cross_entropy":
        losses = F.cross_entropy(logits.float(), target, reduction="none")
    elif name == "focal":
        losses = focal_loss(logits, target, gamma)
    elif name == "focal_reference":
        losses = focal_loss_reference(logits, target, gamma)
    else:
        raise ValueError(f"Unknown loss {name!r}; use 'cross_entropy', 'focal' or 'focal_reference'.")
    if class_weights is not None:
        losses = losses * class_weights.to(losses.device)[target]
    return losses.mean()

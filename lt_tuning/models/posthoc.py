"""Inference settings fitted on the dev split after training: a softmax temperature
(Guo et al., "On Calibration of Modern Neural Networks", ICML 2017) and post-hoc logit
adjustment's tau (chosen from a grid by dev macro F1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lt_tuning.metrics import MacroF1, MacroOver
from lt_tuning.models.remedies import logit_adjust

POSTHOC_TAU_GRID = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature ``T > 0`` minimising the NLL of ``softmax(logits / T)`` on ``labels``:
    L-BFGS on ``log T`` (so T stays positive), in float64. Dividing by T leaves the argmax
    unchanged: accuracy and F1 stay, only the confidence moves. Runs with gradients also when
    called from a validation loop (inference mode)."""
    with torch.inference_mode(False), torch.enable_grad():
        logits, labels = logits.detach().double().clone(), labels.detach().clone()  # no inference tensors
        log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
        optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(logits / log_t.exp(), labels)
            loss.backward()
            return loss

        optimizer.step(closure)
    return float(log_t.detach().exp())


def choose_posthoc_tau(logits: torch.Tensor, labels: torch.Tensor, prior_log: torch.Tensor,
                       grid: Sequence[float] = POSTHOC_TAU_GRID, f1_over: MacroOver = "present") -> float:
    """The tau of post-hoc logit adjustment (``logits - tau * log prior``) with the best macro
    F1 on ``labels``; of equal ones, the first in ``grid`` (the mildest, with the default grid)."""
    scores = []
    for tau in grid:
        metric = MacroF1(logits.shape[-1], over=f1_over)
        metric.update(logit_adjust(logits, prior_log, -tau).argmax(dim=-1), labels)
        scores.append(float(metric.compute()))
    return float(grid[scores.index(max(scores))])

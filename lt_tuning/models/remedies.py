"""Long-tail remedies beyond the study: logit adjustment, class-balanced weights, tau-normalisation.

Each is a small function of logits and class statistics, used by both tuning modules
(see :class:`~lt_tuning.models.base.LongTailedClassifier`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def log_prior(class_counts: Sequence[int]) -> torch.Tensor:
    """``log pi_c``, the training label frequencies; an empty class counts as half an example
    (a finite, smallest prior instead of ``-inf``)."""
    counts = torch.as_tensor(class_counts, dtype=torch.float64).clamp(min=0.5)
    return (counts / counts.sum()).log().float()


def logit_adjust(logits: torch.Tensor, prior_log: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """``logits + tau * log pi``: logit adjustment (Menon et al., "Long-tail learning via logit
    adjustment", ICLR 2021).

    Add it inside the softmax cross-entropy during training (the logit-adjusted loss, their
    eq. 10); subtract it (``tau`` negated) from a plainly trained model's logits at inference
    (post-hoc adjustment, their eq. 9). Either way the argmax favours rare classes.
    """
    return logits + tau * prior_log.to(logits.device, logits.dtype)


def class_balanced_weights(class_counts: Sequence[int], beta: float = 0.9999) -> torch.Tensor:
    """Per-class loss weights ``(1 - beta) / (1 - beta^n_c)``, normalised to sum to C.

    The inverse "effective number of samples" (Cui et al., "Class-Balanced Loss Based on
    Effective Number of Samples", CVPR 2019). ``beta=0`` gives equal weights and ``beta -> 1``
    inverse class frequency. A class with no example is weighted as if it had one.
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"class-balanced beta must be in [0, 1), got {beta}.")
    counts = torch.as_tensor(class_counts, dtype=torch.float64).clamp(min=1.0)
    weights = (1.0 - beta) / (1.0 - beta**counts)
    return (weights * len(weights) / weights.sum()).float()


def tau_normalize(logits: torch.Tensor, weight_norms: torch.Tensor, tau: float) -> torch.Tensor:
    """``logits_c / ||w_c||^tau``: tau-normalisation of the classifier (Kang et al., "Decoupling
    Representation and Classifier for Long-Tailed Recognition", ICLR 2020).

    Dividing the logit (bias included) rather than rescaling ``w_c`` alone is the study's
    eta-norm, which is this with ``tau = eta = 1.1``. Head classes grow larger weight norms
    during training; dividing them out evens the classes at inference.
    """
    return logits / weight_norms.to(logits.dtype).pow(tau)

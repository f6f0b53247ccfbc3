"""Knowledge distillation losses (Hinton et al. 2015) for the classifier and the motion net.

Classification: the student matches the teacher's temperature-softened class distribution
(KL divergence scaled by T^2 so its gradient does not shrink with T) blended with the
cross-entropy on the true labels; optionally the student's pooled features are matched to
the teacher's through a learned linear adapter (feature / hint distillation).
Regression (motion): the student matches both the truth and the teacher's prediction.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mmode.errors import DataError, describe


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 4.0,
    alpha: float = 0.7,
    class_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scalar ``alpha * T^2 * KL(p_t || p_s) + (1 - alpha) * CE(student, labels)``.

    student_logits, teacher_logits : (N, n_classes). labels : (N,) int64 class indices.
    p_t = softmax(teacher / T), p_s = softmax(student / T); the KL is averaged over the batch
    (sum over classes, mean over samples). ``class_weights`` (n_classes,) weight the
    cross-entropy term (class imbalance).
    """
    if temperature <= 0:
        raise DataError(describe("distillation temperature", "> 0", temperature))
    if not 0.0 <= alpha <= 1.0:
        raise DataError(describe("distillation alpha", "0 <= alpha <= 1", alpha))
    log_ps = F.log_softmax(student_logits / temperature, dim=1)
    log_pt = F.log_softmax(teacher_logits.detach() / temperature, dim=1)
    kl = F.kl_div(log_ps, log_pt, reduction="batchmean", log_target=True)
    ce = F.cross_entropy(student_logits, labels, weight=class_weights)
    return alpha * temperature**2 * kl + (1.0 - alpha) * ce


def regression_distillation_loss(
    student_pred: torch.Tensor, teacher_pred: torch.Tensor, target: torch.Tensor, alpha: float = 0.5,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.mse_loss,
) -> torch.Tensor:
    """Scalar ``alpha * loss(student, teacher) + (1 - alpha) * loss(student, target)``, the loss
    MSE unless given (e.g. ``F.l1_loss``); all (N, 1)."""
    if not 0.0 <= alpha <= 1.0:
        raise DataError(describe("distillation alpha", "0 <= alpha <= 1", alpha))
    return alpha * loss(student_pred, teacher_pred.detach()) + (1.0 - alpha) * loss(student_pred, target)


class FeatureHint(nn.Module):
    """Feature distillation: MSE between a linear map of the student's pooled features and
    the teacher's pooled features. student_dim, teacher_dim: feature widths (channels).
    """

    def __init__(self, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.adapter = nn.Linear(student_dim, teacher_dim, bias=False)

    def forward(self, student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
        """student_features (N, student_dim), teacher_features (N, teacher_dim) -> scalar."""
        return F.mse_loss(self.adapter(student_features), teacher_features.detach())


def logits_and_features(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(outputs, pooled features (N, C) that feed ``model.head``) from one forward pass."""
    captured: list[torch.Tensor] = []
    handle = model.head.register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0]))
    try:
        out = model(x)
    finally:
        handle.remove()
    return out, captured[0]

"""Binary cross-entropy on sigmoid probabilities, forward and gradient in closed form, reproducing
torch's nn.BCELoss(sigmoid(x)) exactly, including its saturation behaviour: log terms clamped at
-100, and the backward's (p - y) / max(p (1 - p), 1e-12) times the sigmoid's p (1 - p), so a
prediction that rounds to exactly 0 or 1 in float32 gets zero gradient, as in the authors' code."""

from __future__ import annotations

import torch

_EPS = 1e-12


def bce_forward_backward(
    logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, count: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """logits/labels/valid [C, B], count [C]. Returns (probabilities, per-client mean loss [C],
    d(loss_c)/d(logit) [C, B])."""
    prob = torch.sigmoid(logits)
    log_p = torch.log(prob).clamp_(min=-100)
    log_1mp = torch.log1p(-prob).clamp_(min=-100)
    per_sample = -(labels * log_p + (1 - labels) * log_1mp)
    per_sample = torch.where(valid, per_sample, torch.zeros_like(per_sample))
    loss = per_sample.sum(1) / count
    sig_grad = prob * (1 - prob)
    grad_prob = (prob - labels) / sig_grad.clamp(min=_EPS)
    grad_logit = grad_prob * sig_grad * (valid / count.unsqueeze(1))
    return prob, loss, grad_logit

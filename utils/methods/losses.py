"""Training losses of TOD and LL4AL, as small functions over tensors."""

import torch
from torch import nn


def cod_loss(logits, cons_logits, ema_logits):
    """TOD's auxiliary loss on one batch (spec A.7): the classifier and consistency heads agree,
    and the consistency head follows the EMA teacher, both as mean squared error on logits:
    MSE(z, z') + MSE(z', z_ema)."""
    return nn.functional.mse_loss(logits, cons_logits) + nn.functional.mse_loss(cons_logits, ema_logits)


@torch.no_grad()
def ema_update(ema_model, model, step, max_decay=0.999):
    """theta_ema <- a theta_ema + (1 - a) theta with a = min(1 - 1/(step + 1), max_decay), on
    parameters only (BatchNorm buffers are not averaged), as TOD's Mean-Teacher update."""
    alpha = min(1.0 - 1.0 / (step + 1), max_decay)
    for ema_param, param in zip(ema_model.parameters(), model.parameters()):
        ema_param.mul_(alpha).add_(param.detach(), alpha=1.0 - alpha)
    return alpha


def ranking_loss(pred_loss, target_loss, margin=1.0):
    """LL4AL's pairwise loss-prediction loss (Yoo & Kweon, Eq. 2): the batch is split in halves
    paired back to front (i with 2B-1-i); for d = l_i - l_j (detached) and its prediction d^,
    mean over pairs of max(0, margin - sign(d) d^), with sign(0) = -1. An odd batch leaves its
    last sample out (LL4AL asserts an even batch)."""
    half = len(pred_loss) // 2
    if half == 0:
        return pred_loss.sum() * 0.0
    pred_loss, target_loss = pred_loss[: 2 * half], target_loss[: 2 * half]
    pred_diff = pred_loss[:half] - pred_loss.flip(0)[:half]
    target_diff = (target_loss[:half] - target_loss.flip(0)[:half]).detach()
    sign = 2 * (target_diff > 0).to(pred_diff.dtype) - 1
    return torch.clamp(margin - sign * pred_diff, min=0).mean()

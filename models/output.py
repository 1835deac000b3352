"""The one output type every classifier in ``models/`` returns."""

from typing import NamedTuple

import torch


class ModelOutput(NamedTuple):
    """``logits`` [B, C]; ``features`` [B, D], the pooled embedding strategies use;
    ``cons_logits`` [B, C], TOD's consistency head (None when the model has none);
    ``stages``, the per-stage feature maps (the LL4AL loss module reads them)."""

    logits: torch.Tensor
    features: torch.Tensor
    cons_logits: torch.Tensor | None = None
    stages: list | None = None

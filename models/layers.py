"""Layers shared by the models."""

import torch
from torch import nn


class ConsistentDropout(nn.Module):
    """Dropout (element-wise, or whole channels with ``channels=True`` as Dropout2d).

    In training mode it is ordinary dropout. For MC-dropout inference, ``fix_mask(seed)`` makes
    every forward pass use one mask drawn from ``seed`` and shared by all samples of all batches:
    the k-th of K passes over a pool then uses the same network omega_k for every point, which
    BatchBALD's joint entropies need (Kirsch et al., 2019, Sec. 3). ``fix_mask(None)`` restores
    ordinary behaviour. ``mc_active`` keeps the layer stochastic while the model is in eval mode.
    """

    def __init__(self, p=0.5, channels=False):
        super().__init__()
        self.p, self.channels = p, channels
        self.mask_seed = None
        self.mc_active = False

    def fix_mask(self, seed):
        self.mask_seed = seed

    def forward(self, x):
        if not (self.training or self.mc_active) or self.p == 0:
            return x
        if self.mask_seed is None:
            return nn.functional.dropout2d(x, self.p, True) if self.channels else nn.functional.dropout(x, self.p, True)
        shape = (x.shape[1],) + (1,) * (x.dim() - 2) if self.channels else x.shape[1:]
        generator = torch.Generator(device=x.device).manual_seed(self.mask_seed)
        keep = torch.rand(shape, generator=generator, device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1 - self.p)

    def extra_repr(self):
        return f"p={self.p}, channels={self.channels}"

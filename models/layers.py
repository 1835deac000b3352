"""Layers shared by the models."""

import math

import torch
from torch import nn

MASK32 = 0xFFFFFFFF
GOLDEN32 = 0x9E3779B9  # 2**32 / golden ratio: keeps seed 0 off the hash's fixed point 0 -> 0


def hash32_(x: torch.Tensor) -> torch.Tensor:
    """Wellons' ``lowbias32`` integer hash, a bijection on 32-bit values, in place on an int64 tensor
    of values < 2**32 (returned). Exact integer arithmetic, no int64 overflow (every product < 2**63),
    so the same bits on every device; in place, as large temporaries cost more than the arithmetic."""
    t = x >> 16
    x ^= t
    x.mul_(0x7FEB352D).bitwise_and_(MASK32)  # x * 0x7FEB352D mod 2**32
    torch.bitwise_right_shift(x, 15, out=t)
    x ^= t
    torch.bitwise_and(x, 1, out=t).bitwise_left_shift_(31)  # x * 2**31 = (x & 1) << 31 mod 2**32
    x.mul_(0x846CA68B - 2**31).add_(t).bitwise_and_(MASK32)  # x * 0x846CA68B mod 2**32
    torch.bitwise_right_shift(x, 16, out=t)
    x ^= t
    return x


class ConsistentDropout(nn.Module):
    """Dropout (element-wise, or whole channels with ``channels=True`` as Dropout2d).

    In training mode it is ordinary dropout. For MC-dropout inference, ``fix_mask(seed)`` makes every
    forward pass use one mask drawn from ``seed`` and shared by all samples of all batches: the k-th of
    K passes over a pool then uses the same network omega_k for every point, which BatchBALD's joint
    entropies need (Kirsch et al., 2019, Sec. 3). ``fix_mask(seed, sample_ids)`` instead gives sample b
    its own mask, a counter-based draw from (``seed``, ``sample_ids[b]``, element) (independent masks:
    each point's K passes are i.i.d. draws omega ~ q(omega), Gal & Ghahramani, 2016, Eq. 8, and do not
    depend on batching or on the other points). ``fix_mask(None)`` restores ordinary behaviour.
    ``mc_active`` keeps the layer stochastic while the model is in eval mode.
    """

    def __init__(self, p=0.5, channels=False):
        super().__init__()
        self.p, self.channels = p, channels
        self.mask_seed = None
        self.mask_ids = None
        self.mc_active = False

    def fix_mask(self, seed: int | None, sample_ids: torch.Tensor | None = None) -> None:
        """Masks from ``seed`` (non-negative; None: ordinary dropout), one per sample of the next
        batches when ``sample_ids`` (one integer < 2**32 per row of the input) is given."""
        self.mask_seed, self.mask_ids = seed, sample_ids

    def _keep_per_sample(self, shape: tuple, device: torch.device) -> torch.Tensor:
        """Keep-mask ``[B, *shape]``: element e of sample b is kept iff h(h(key ^ id_b) ^ h(e)) >= p * 2**32,
        h = ``hash32_``, key = h(h(seed_lo ^ GOLDEN32) ^ seed_hi): a counter-based Bernoulli(1 - p) draw."""
        seed = torch.tensor([(self.mask_seed & MASK32) ^ GOLDEN32, (self.mask_seed >> 32) & MASK32], device=device)
        key = hash32_(hash32_(seed[:1]) ^ seed[1:])
        sample_keys = hash32_(key ^ (self.mask_ids.to(device=device, dtype=torch.int64) & MASK32))
        elements = hash32_(torch.arange(math.prod(shape), device=device))
        bits = hash32_(sample_keys[:, None] ^ elements[None, :])
        return (bits >= round(self.p * 2**32)).view(-1, *shape)

    def forward(self, x):
        if not (self.training or self.mc_active) or self.p == 0:
            return x
        if self.mask_seed is None:
            return nn.functional.dropout2d(x, self.p, True) if self.channels else nn.functional.dropout(x, self.p, True)
        shape = (x.shape[1],) + (1,) * (x.dim() - 2) if self.channels else tuple(x.shape[1:])
        if self.mask_ids is not None:
            if len(self.mask_ids) != len(x):
                raise ValueError(f"{len(self.mask_ids)} sample ids for a batch of {len(x)}")
            keep = self._keep_per_sample(shape, x.device)
        else:
            generator = torch.Generator(device=x.device).manual_seed(self.mask_seed)
            keep = torch.rand(shape, generator=generator, device=x.device) >= self.p
        return x * keep.to(x.dtype) / (1 - self.p)

    def extra_repr(self):
        return f"p={self.p}, channels={self.channels}"

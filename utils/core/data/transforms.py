"""Normalisation and augmentation of whole uint8 batches on the training device."""


import torch
from torch import nn


class BatchTransform(nn.Module):
    """uint8 batch -> normalised float batch, with optional random crop (zero or reflect
    padding) and horizontal flip, drawn per sample from the global torch RNG, and an optional
    bilinear resize to ``size`` x ``size`` (for models made for another input size)."""

    def __init__(self, mean, std, crop_padding=0, flip=False, pad_mode="constant", size=None):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.crop_padding, self.flip, self.pad_mode, self.size = crop_padding, flip, pad_mode, size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255)
        n, _, h, w = x.shape
        if self.crop_padding:
            p = self.crop_padding
            padded = nn.functional.pad(x, (p, p, p, p), mode=self.pad_mode)
            offsets = torch.randint(0, 2 * p + 1, (2, n)).to(x.device)
            rows = (offsets[0, :, None] + torch.arange(h, device=x.device))[:, None, :, None]
            cols = (offsets[1, :, None] + torch.arange(w, device=x.device))[:, None, None, :]
            batch = torch.arange(n, device=x.device)[:, None, None, None]
            chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
            x = padded[batch, chans, rows, cols]
        if self.flip:
            flip = (torch.rand(n) < 0.5).to(x.device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if self.size and self.size != w:
            x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

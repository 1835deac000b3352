"""Contrastive pre-training of CCAL's encoders (spec 002 A.4, A.5): SimCLR and CSI views,
batched on-device augmentations, NT-Xent gathered across ranks, the warm-up + cosine schedule.

Every augmentation draws its random parameters per image from an explicit ``torch.Generator``
(``sample``), so a batch is reproducible from the generator's seed alone, and query-time views
can be drawn for any block of images independently of how the pool is sharded.
"""

import math
import warnings

import torch
import torch.distributed as torch_dist
import torch.nn.functional as F
from torch import nn
from torch.optim import lr_scheduler
from torchvision.transforms.v2 import functional as TF

# ----------------------------------------------------------------------------- views

def _uniform(n, generator, low=0.0, high=1.0, tries=None):
    shape = (n,) if tries is None else (n, tries)
    return low + (high - low) * torch.rand(shape, generator=generator, device=generator.device)


def hflip(x, generator):
    """Each image flipped horizontally with probability 1/2 (CSI's HorizontalFlipLayer)."""
    flip = (_uniform(len(x), generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], TF.horizontal_flip(x), x)


def rotate(x, k_shift):
    """[rot0(x), rot90(x), ...] for k = 0..k_shift-1 (row order: all images of k = 0, then k = 1, ...)
    and the rotation labels."""
    rows = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(k_shift)])
    return rows, torch.arange(k_shift, device=x.device).repeat_interleave(len(x))


def rgb_to_hsv(x):
    """[N, 3, H, W] RGB in [0, 1] -> HSV in [0, 1] (hue as a fraction of the circle)."""
    maxc, minc = x.max(1).values, x.min(1).values
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    r, g, b = ((maxc[:, None] - x) / safe[:, None]).unbind(1)
    red, green = x[:, 0] == maxc, x[:, 1] == maxc
    hue = torch.where(red, b - g, torch.where(green, 2 + r - b, 4 + g - r))
    hue = torch.where(delta > 0, (hue / 6) % 1.0, torch.zeros_like(hue))
    sat = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    return torch.stack([hue, sat, maxc], 1)


def hsv_to_rgb(x):
    """The inverse of :func:`rgb_to_hsv`: channel n of (R, G, B) = v - v s clamp(min(k, 4 - k), 0, 1)
    with k = (n + 6 h) mod 6 for n = 5, 3, 1."""
    h, s, v = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device).view(1, 3, 1, 1)
    k = (n + 6 * h) % 6
    return v - v * s * torch.minimum(k, 4 - k).clamp(0, 1)


HUE_SCALE = 255 / 360  # CSI shifts the hue (a fraction of the circle) by factor x 255/360: +-0.071 at HUE 0.1


class SimCLRAugment(nn.Module):
    """CSI's ``simclr_aug`` (A.4) on a float batch in [0, 1], every image with its own parameters:
    colour jitter with probability ``jitter['p']`` (a contrast step and an HSV step -- hue shift by
    U(-hue, hue) x HUE_SCALE of the colour circle as CSI, saturation and value scaling -- in random
    order), grayscale with probability ``gray_p``, and a
    random resized crop by grid sampling (area in ``scale``, or exactly ``scale[0]`` when ``fixed``;
    aspect ratio in ``ratio``; reflection padding), output at the input size."""

    def __init__(self, jitter, gray_p, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), fixed=False, tries=10):
        super().__init__()
        self.jitter, self.gray_p, self.tries = jitter, gray_p, tries
        self.scale, self.ratio, self.fixed = scale, ratio, fixed

    def sample(self, n, generator, device):
        """Parameters for ``n`` images drawn from ``generator``, on ``device``."""
        j = self.jitter
        params = {
            "jitter": _uniform(n, generator) < j["p"],
            "hsv_first": _uniform(n, generator) < 0.5,
            "brightness": _uniform(n, generator, 1 - j["brightness"], 1 + j["brightness"]),
            "contrast": _uniform(n, generator, 1 - j["contrast"], 1 + j["contrast"]),
            "saturation": _uniform(n, generator, 1 - j["saturation"], 1 + j["saturation"]),
            "hue": _uniform(n, generator, -j["hue"], j["hue"]),
            "gray": _uniform(n, generator) < self.gray_p,
            "crop": self._crop(n, generator),
        }
        return {key: value.to(device) for key, value in params.items()}

    def _crop(self, n, generator):
        """Affine maps [N, 2, 3] of random crops (in normalised coordinates): per image the first
        of ``tries`` (area, ratio) draws that fits in the image (the whole image if none does),
        centred uniformly where the crop fits, as torchvision's RandomResizedCrop."""
        if self.fixed:
            area = torch.full((n, self.tries), float(self.scale[0]), device=generator.device)
        else:
            area = _uniform(n, generator, *self.scale, tries=self.tries)
        ratio = torch.exp(_uniform(n, generator, math.log(self.ratio[0]), math.log(self.ratio[1]), tries=self.tries))
        w, h = torch.sqrt(area * ratio), torch.sqrt(area / ratio)
        fits = (w <= 1) & (h <= 1)
        first = fits.float().argmax(1, keepdim=True)
        w = torch.where(fits.any(1), w.gather(1, first)[:, 0], torch.ones(n, device=w.device))
        h = torch.where(fits.any(1), h.gather(1, first)[:, 0], torch.ones(n, device=h.device))
        cx, cy = (1 - w) * _uniform(n, generator, -1, 1), (1 - h) * _uniform(n, generator, -1, 1)
        zero = torch.zeros_like(w)
        return torch.stack([torch.stack([w, zero, cx], 1), torch.stack([zero, h, cy], 1)], 1)

    @staticmethod
    def _contrast(x, factor):
        gray = TF.rgb_to_grayscale(x) if x.shape[1] == 3 else x
        mean = gray.mean(dim=(1, 2, 3), keepdim=True)
        return (factor.view(-1, 1, 1, 1) * (x - mean) + mean).clamp(0, 1)

    @staticmethod
    def _hsv(x, hue, saturation, brightness):
        if x.shape[1] != 3:  # hue and saturation do not apply to one-channel images
            return (x * brightness.view(-1, 1, 1, 1)).clamp(0, 1)
        hsv = rgb_to_hsv(x)
        hsv = torch.stack([(hsv[:, 0] + HUE_SCALE * hue.view(-1, 1, 1)) % 1.0, hsv[:, 1] * saturation.view(-1, 1, 1),
                           hsv[:, 2] * brightness.view(-1, 1, 1)], 1).clamp(0, 1)
        return hsv_to_rgb(hsv)

    def forward(self, x, params):
        p = params
        hsv_then_contrast = self._contrast(self._hsv(x, p["hue"], p["saturation"], p["brightness"]), p["contrast"])
        contrast_then_hsv = self._hsv(self._contrast(x, p["contrast"]), p["hue"], p["saturation"], p["brightness"])
        jittered = torch.where(p["hsv_first"].view(-1, 1, 1, 1), hsv_then_contrast, contrast_then_hsv)
        x = torch.where(p["jitter"].view(-1, 1, 1, 1), jittered, x)
        if x.shape[1] == 3:
            x = torch.where(p["gray"].view(-1, 1, 1, 1), TF.rgb_to_grayscale(x, num_output_channels=3), x)
        grid = F.affine_grid(p["crop"].to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def training_views(x, augment, generator, k_shift):
    """The rows one contrastive step trains on (A.4) and their shift labels: two independently
    flipped copies of the batch, each rotated by k*90 degrees for k < k_shift (CSI's shifted
    instances; k_shift = 1 for SimCLR), then ``augment`` on every row. Rows: [view 1 (all rotations),
    view 2 (all rotations)], so row i of the first half pairs with row i of the second."""
    view1, view2 = hflip(x.repeat(2, 1, 1, 1), generator).chunk(2)
    (rows1, labels), (rows2, _) = rotate(view1, k_shift), rotate(view2, k_shift)
    rows = torch.cat([rows1, rows2])
    return augment(rows, augment.sample(len(rows), generator, x.device)), labels.repeat(2)


# ----------------------------------------------------------------------------- losses

def nt_xent(z1, z2, temperature=0.5, gather=False):
    """NT-Xent (SimCLR; A.4) of the pairs (z1[i], z2[i]): with s the cosine similarities of the
    2M rows, l_i = -log( exp(s_i,pos(i) / t) / sum_{j != i} exp(s_ij / t) ), averaged over the rows.

    With ``gather`` both halves are first all-gathered across ranks (differentiable; each half
    separately, so the pairing survives), so every rank computes the loss of the global batch;
    the all-gather's backward sums the ranks' gradients, and DDP's averaging then gives exactly
    the single-process gradient of that loss."""
    if gather:
        from torch.distributed.nn.functional import all_gather

        with warnings.catch_warnings():  # deprecated in torch 2.x for a private API; still differentiable and exact
            warnings.filterwarnings("ignore", "torch.distributed.nn.functional.all_gather is deprecated", FutureWarning)
            z1, z2 = torch.cat(all_gather(z1)), torch.cat(all_gather(z2))
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = (z @ z.T) / temperature
    logits = logits.masked_fill(torch.eye(len(z), dtype=torch.bool, device=z.device), float("-inf"))
    m = len(z1)
    positives = torch.cat([torch.arange(m, 2 * m), torch.arange(m)]).to(z.device)
    return F.cross_entropy(logits, positives)


def contrastive_losses(out, shift_labels, temperature, sim_lambda):
    """(sim_lambda * NT-Xent of the two halves, CE of the shift head against the rotation labels
    -- zero without a shift head) for the output of :func:`training_views`' rows."""
    gather = torch_dist.is_available() and torch_dist.is_initialized() and torch_dist.get_world_size() > 1
    z1, z2 = out.simclr.chunk(2)
    loss_sim = sim_lambda * nt_xent(z1, z2, temperature, gather)
    loss_shift = F.cross_entropy(out.shift, shift_labels) if out.shift is not None else loss_sim.new_zeros(())
    return loss_sim, loss_shift


# ----------------------------------------------------------------------------- schedule

def warmup_schedule(optimizer, epochs, steps_per_epoch, warmup, multiplier, kind="cosine", gamma=0.1):
    """The seed's GradualWarmupScheduler(multiplier, warmup) around cosine annealing (A.4), stepped
    every iteration: with the optimizer's lr set to the peak lr_init * multiplier, the lr rises
    linearly from lr_init to the peak over ``warmup`` epochs, then follows
    peak * (1 + cos(pi (e - warmup) / epochs)) / 2 (or, for 'step_decay', x``gamma`` after 50 % and
    75 % of ``epochs`` past the warm-up; CSI's gamma is 0.1 with SGD, 0.3 with Adam)."""
    total = epochs * steps_per_epoch
    if kind == "cosine":
        after = lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    else:
        after = lr_scheduler.MultiStepLR(optimizer, [int(0.5 * epochs) * steps_per_epoch,
                                                     int(0.75 * epochs) * steps_per_epoch], gamma=gamma)
    if not warmup:
        return after
    warm = lr_scheduler.LinearLR(optimizer, 1 / multiplier, 1.0, total_iters=warmup * steps_per_epoch)
    return lr_scheduler.SequentialLR(optimizer, [warm, after], milestones=[warmup * steps_per_epoch])

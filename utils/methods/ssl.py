"""Semi-supervised training of a round's network (``--ssl``): Pseudo-Label, FixMatch, FlexMatch, UDA
and MixMatch, as the cure-lab toolkit's SSL strategies (spec 003 section 5, its extras) and their
papers describe them, with any query strategy.

Two layers:

* small pure functions over tensors (each docstring cites the paper's equation), computed in float32:
  :func:`sharpen`, :func:`mixup`, :func:`soft_cross_entropy`, :func:`mixmatch_unlabeled_loss`,
  :func:`linear_rampup`, :func:`fixmatch_unlabeled_loss`, :func:`flexmatch_mapping`,
  :func:`flexmatch_thresholds`, :func:`uda_tsa_threshold`, :func:`uda_supervised_loss`,
  :func:`uda_unlabeled_loss`, :func:`pseudo_label_loss`, :func:`ema_update`, :func:`decay_weights`,
  :func:`cutout` and the strong view :class:`StrongAugment` / :func:`strong_augment`;
* one class per method (``SSL_METHODS``), built per round by :func:`make_ssl` from the settings
  (config/deepal.py ``ssl_keys``): ``loss(forward, x_l, y_l, u_images, u_pos, weak, strong, progress)``
  gives the step's total loss and a few logs (one host sync), ``after_step`` the EMA update,
  ``eval_model`` the network to test and query with.

A setting left at None takes the method's own value (``OWN`` of each class; the toolkit's where it
has one, else the paper's). Everything is vectorised (no loop over samples) and draws its random
numbers from the global torch RNG on the CPU (deterministic under the seed on any device).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.transforms import v2

from utils.core.distributed import unwrap
from utils.core.errors import UserError
from utils.core.registry import Registry

# ============================================================================ pure functions


def sharpen(p: torch.Tensor, T: float) -> torch.Tensor:
    """MixMatch's sharpening (Berthelot et al. 2019, Eq. 7): Sharpen(p, T)_i = p_i^(1/T) / sum_j p_j^(1/T),
    row-wise, computed in log space (softmax(log p / T)) so that a small T gives the one-hot argmax
    instead of 0/0. T = 1 is the identity; rows sum to 1."""
    return torch.softmax(torch.log(p.float()) / T, dim=-1)


def mixup(x: torch.Tensor, targets: torch.Tensor, alpha: float, perm: torch.Tensor | None = None,
          lam: float | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """MixMatch's MixUp (Berthelot et al. 2019, Eqs. 8-11): lambda ~ Beta(alpha, alpha), lambda' =
    max(lambda, 1 - lambda), x' = lambda' x + (1 - lambda') x[perm], p' = lambda' p + (1 - lambda') p[perm]
    with the same lambda' for inputs and targets, so each mix stays closer to its first input. One
    lambda and one random permutation of the whole batch (the toolkit's MixMatch, YU1ut-style); ``perm``
    and ``lam`` (before the max) may be given. Returns (x', p', lambda')."""
    if lam is None:
        lam = float(torch.distributions.Beta(float(alpha), float(alpha)).sample())
    lam = max(lam, 1.0 - lam)
    if perm is None:
        perm = torch.randperm(len(x)).to(x.device)
    targets = targets.float()
    return lam * x + (1 - lam) * x[perm], lam * targets + (1 - lam) * targets[perm], lam


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """MixMatch's labeled loss (Eq. 3): mean over the batch of H(p', softmax(z)) = -sum_c p'_c log softmax(z)_c."""
    return -(targets.float() * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def mixmatch_unlabeled_loss(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """MixMatch's unlabeled loss (Eq. 4): L_U = 1/(L |U'|) sum ||q - p_model||_2^2, the squared error
    averaged over samples and the L classes (the toolkit's mean over all 2B x C elements)."""
    return ((probs.float() - targets.float()) ** 2).mean()


def linear_rampup(current: float, length: float) -> float:
    """The linear ramp-up of MixMatch's lambda_u (Berthelot et al. 2019, section 4: "linearly ramp up
    lambda_u to its maximum value"): clip(current / length, 0, 1); a length of 0 is no ramp (1)."""
    if length <= 0:
        return 1.0
    return min(max(current / length, 0.0), 1.0)


def fixmatch_unlabeled_loss(logits_weak: torch.Tensor, logits_strong: torch.Tensor, threshold: float,
                            T: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """FixMatch's unlabeled loss (Sohn et al. 2020, Eq. 4): l_u = 1/(mu B) sum_b 1(max q_b >= tau)
    H(argmax q_b, p(y | A(u_b))), with q_b = softmax(z_weak / T) detached (T = 1 as the toolkit) and
    the mean over the whole unlabeled batch. Returns (l_u, mask as float)."""
    probs = torch.softmax(logits_weak.detach().float() / T, dim=-1)
    confidence, pseudo = probs.max(dim=-1)
    mask = (confidence >= threshold).float()
    return (F.cross_entropy(logits_strong.float(), pseudo, reduction="none") * mask).mean(), mask


def flexmatch_mapping(x: torch.Tensor) -> torch.Tensor:
    """FlexMatch's convex mapping (Zhang et al. 2021, Eq. 7): M(x) = x / (2 - x), M(0) = 0, M(1) = 1."""
    return x / (2 - x)


def flexmatch_thresholds(counts: torch.Tensor, unused: torch.Tensor | int, tau: float,
                         warmup: bool = True) -> torch.Tensor:
    """FlexMatch's class-wise thresholds (Zhang et al. 2021, Eqs. 5-7, 11): from the learning status
    sigma_c (``counts``: unlabeled samples whose latest prediction above tau is class c),
    beta_c = sigma_c / max_c' sigma_c' (Eq. 5), or with the threshold warm-up sigma_c /
    max(max_c' sigma_c', N - sum_c' sigma_c') (Eq. 11, ``unused`` = N - sum sigma: samples never
    predicted above tau), then T_c = M(beta_c) tau (Eq. 7). All-zero status gives thresholds 0."""
    counts = counts.float()
    denominator = counts.max()
    if warmup:
        denominator = torch.maximum(denominator, torch.as_tensor(unused, dtype=torch.float32,
                                                                 device=counts.device))
    beta = counts / denominator.clamp(min=1)
    return flexmatch_mapping(beta) * tau


def uda_tsa_threshold(progress: float, schedule: str, num_classes: int) -> float:
    """UDA's Training Signal Annealing threshold (Xie et al. 2020, section 3.2 and appendix):
    eta_t = alpha_t (1 - 1/K) + 1/K with t = ``progress`` (fraction of training) and alpha_t = 1 -
    exp(-5t) (log), t (linear) or exp(5(t - 1)) (exp); "none" gives 1 (no labeled sample masked)."""
    t = min(max(float(progress), 0.0), 1.0)
    alpha = {"none": 1.0, "log": 1 - math.exp(-5 * t), "linear": t, "exp": math.exp(5 * (t - 1))}[schedule]
    return alpha * (1 - 1 / num_classes) + 1 / num_classes


def uda_supervised_loss(logits: torch.Tensor, targets: torch.Tensor,
                        threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """UDA's supervised loss with TSA (Xie et al. 2020, section 3.2): labeled samples whose correct-class
    probability p*(y | x) = exp(-CE) exceeds eta_t leave the loss, which is the cross-entropy summed
    over the kept samples divided by max(kept, 1). Returns (loss, kept mask as float)."""
    ce = F.cross_entropy(logits.float(), targets, reduction="none")
    kept = (torch.exp(-ce.detach()) <= threshold).float()
    return (ce * kept).sum() / kept.sum().clamp(min=1), kept


def uda_unlabeled_loss(logits_weak: torch.Tensor, logits_strong: torch.Tensor, T: float = 1.0,
                       threshold: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """UDA's consistency loss (Xie et al. 2020, Eq. 1 with section 3.3's sharpening and confidence
    masking): mean over the unlabeled batch of 1(max p(u) > beta) KL(softmax(z_weak / tau) ||
    softmax(z_strong)), the target detached. The toolkit's tau = 1 and no mask (beta below 0); the
    paper's tau = 0.4, beta = 0.8. Returns (loss, mask as float)."""
    weak = logits_weak.detach().float()
    log_target = F.log_softmax(weak / T, dim=-1)
    mask = (torch.softmax(weak, dim=-1).max(dim=-1).values > threshold).float()
    kl = (log_target.exp() * (log_target - F.log_softmax(logits_strong.float(), dim=-1))).sum(-1)
    return (kl * mask).mean(), mask


def pseudo_label_loss(logits: torch.Tensor, threshold: float = 0.0,
                      T: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pseudo-Label's unlabeled term (Lee 2013, Eqs. 1 and 15): the class of the largest output is the
    target, CE(z_u, argmax z_u) averaged over the unlabeled batch, here only where the confidence
    max softmax(z_u / T) reaches ``threshold`` (the toolkit's 0.95; Lee's is 0). The gradient flows
    through z_u (only the argmax is constant), as in the paper and the toolkit. Returns (loss, mask)."""
    logits = logits.float()
    confidence, pseudo = torch.softmax(logits.detach() / T, dim=-1).max(dim=-1)
    mask = (confidence >= threshold).float()
    return (F.cross_entropy(logits, pseudo, reduction="none") * mask).mean(), mask


def _float_state(model: nn.Module) -> list[torch.Tensor]:
    return [t for t in model.state_dict().values() if t.is_floating_point()]


@torch.no_grad()
def ema_update(ema_model: nn.Module, model: nn.Module, decay: float) -> None:
    """The mean-teacher EMA of MixMatch's evaluation model (Berthelot et al. 2019, section 4; the
    toolkit's WeightEMA): theta_ema <- d theta_ema + (1 - d) theta for every floating-point entry of the
    state dict (parameters and BatchNorm running statistics; integer counters are left alone)."""
    for ema, current in zip(_float_state(ema_model), _float_state(model)):
        ema.mul_(decay).add_(current.detach(), alpha=1 - decay)


@torch.no_grad()
def decay_weights(model: nn.Module, wd: float) -> None:
    """The toolkit's (YU1ut's) extra decay after each EMA step: theta <- theta (1 - wd) on every
    floating-point state entry of the trained network (BatchNorm buffers included)."""
    for t in _float_state(model):
        t.mul_(1 - wd)


# ============================================================================ the strong view

def cutout(images: torch.Tensor, fraction: float, fill: int = 127) -> torch.Tensor:
    """FixMatch's Cutout (Sohn et al. 2020, appendix; DeVries & Taylor 2017) on a uint8 batch: per
    image a square of side floor(fraction x side) at a uniformly random centre, clipped at the borders,
    set to grey ``fill`` (the toolkit's RandAugmentMC: 0.5, grey 127)."""
    n, _, h, w = images.shape
    side = int(fraction * min(h, w))
    if side <= 0 or n == 0:
        return images
    centre = torch.stack([torch.randint(0, h, (n,)), torch.randint(0, w, (n,))]).to(images.device)
    top = (centre[0] - side // 2).clamp(min=0)
    left = (centre[1] - side // 2).clamp(min=0)
    rows = torch.arange(h, device=images.device)[None, :, None]
    cols = torch.arange(w, device=images.device)[None, None, :]
    inside = ((rows >= top[:, None, None]) & (rows < (top + side)[:, None, None]) &
              (cols >= left[:, None, None]) & (cols < (left + side)[:, None, None]))
    return images.masked_fill(inside[:, None], fill)


class StrongAugment(nn.Module):
    """The strong view on a uint8 batch [B, C, H, W] (any device) -> uint8, before the weak crop +
    flip and the normalisation (``strong(u) = train_transform(strong_augment(u))``).

    ``policy="randaugment"``: FixMatch's RandAugment (Sohn et al. 2020; the toolkit's RandAugmentMC
    n=2, m=10): ``num_ops`` ops drawn with replacement from torchvision's 14-op RandAugment space, each
    applied with probability ``prob`` at a magnitude level v ~ U{1..``max_level``} of 10 (torchvision
    RandAugment with 11 magnitude bins), then Cutout of ``cutout`` x side. ``policy="autoaugment"``: the
    AutoAugment CIFAR-10 policy (what the toolkit's UDA calls RandAugment), then Cutout if ``cutout``.

    torchvision v2 transforms draw one set of random parameters per call on a batched tensor, so the
    batch is cut into ``groups`` contiguous slices, each with its own draw (ops, magnitudes, policy):
    ``groups`` images-augmentations per batch instead of one per image, with a Python loop over the
    groups only (the unlabeled batch is shuffled, so slices are random subsets). Cutout is per image."""

    def __init__(self, policy: str = "randaugment", groups: int = 8, num_ops: int = 2, max_level: int = 9,
                 prob: float = 0.5, cutout: float = 0.5, fill: int = 127):
        super().__init__()
        self.policy, self.groups, self.num_ops, self.max_level = policy, groups, num_ops, max_level
        self.prob, self.cutout, self.fill = prob, cutout, fill
        if policy == "randaugment":
            self.op = v2.RandAugment(num_ops=1, magnitude=1, num_magnitude_bins=11, fill=fill)
        elif policy == "autoaugment":
            self.op = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10, fill=fill)
        else:
            raise ValueError(f"unknown strong augmentation policy {policy!r}")

    def _group(self, images: torch.Tensor) -> torch.Tensor:
        if self.policy == "autoaugment":
            return self.op(images)
        for _ in range(self.num_ops):
            apply, level = torch.rand(()) < self.prob, int(torch.randint(1, self.max_level + 1, ()))
            if apply:
                self.op.magnitude = level
                images = self.op(images)
        return images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            raise TypeError(f"strong augmentation expects a uint8 batch, got {images.dtype}")
        if len(images) == 0:
            return images
        x = torch.cat([self._group(chunk) for chunk in torch.tensor_split(images, min(self.groups, len(images)))])
        return cutout(x, self.cutout, self.fill) if self.cutout > 0 else x


def strong_augment(images: torch.Tensor, groups: int = 8, policy: str = "randaugment", num_ops: int = 2,
                   max_level: int = 9, prob: float = 0.5, cutout: float = 0.5) -> torch.Tensor:
    """FixMatch's strong view (RandAugment + Cutout) of a uint8 batch; see :class:`StrongAugment`."""
    return StrongAugment(policy, groups, num_ops, max_level, prob, cutout)(images)


# ============================================================================ the methods

ALWAYS = ("SSL_BATCH", "SSL_MU", "SSL_T", "SSL_EMA", "SSL_EARLY_STOP")  # read by every method
STRONG = ("SSL_STRONG", "SSL_STRONG_GROUPS", "SSL_CUTOUT", "SSL_RANDAUG_OPS", "SSL_RANDAUG_LEVEL", "SSL_RANDAUG_P")


def _explicit(cfg) -> set:
    """SSL_* keys given on the command line (not left at their defaults)."""
    return {k for k, s in cfg.sources.items() if k.startswith("SSL_") and s != "default"}


class SemiSupervised:
    """One round of semi-supervised training (built per round: FlexMatch keeps per-sample memory of
    the round's unlabeled array, MixMatch an EMA network).

    Attributes the training loop reads: ``batch_size`` (labeled batch), ``unlabeled_batch_size``,
    ``steps_per_epoch(labeled_size, pool_size)``, ``stop_early(previous, current)`` (the epoch's summed
    training loss), ``clamp_gradients`` (the toolkit clamps to +-GRAD_CLIP before the step, except in
    MixMatch where its clamp after the step does nothing), ``strong_augment`` (uint8 -> uint8).
    ``OWN`` holds the method's values of the settings left at None; ``USES`` the other keys it reads."""

    NAME = ""
    OWN: dict = {}
    USES: tuple = ()
    clamp_gradients = True

    def __init__(self, cfg, num_classes: int, unlabeled_size: int, device: torch.device):
        unread = sorted(k for k in _explicit(cfg) if k not in (*ALWAYS, *self.OWN, *self.USES, "SSL_EMA_WD"))
        if unread:
            raise UserError(f"--ssl {self.NAME} does not read {', '.join(unread)}; leave "
                            f"{'it' if len(unread) == 1 else 'them'} out")
        self.cfg, self.num_classes, self.unlabeled_size, self.device = cfg, num_classes, unlabeled_size, device
        self.epochs = cfg.N_EPOCH
        self.batch_size = cfg.SSL_BATCH or self.OWN.get("SSL_BATCH") or cfg.BATCH_SIZE
        self.mu = self.own(cfg.SSL_MU, "SSL_MU")
        self.unlabeled_batch_size = max(1, round(self.mu * self.batch_size))
        self.T = self.own(cfg.SSL_T, "SSL_T")
        self.ema_decay = self.own(cfg.SSL_EMA, "SSL_EMA")
        self.ema_wd = cfg.SSL_EMA_WD
        self.early_stop = self.own(cfg.SSL_EARLY_STOP, "SSL_EARLY_STOP")
        if self.ema_decay == 0 and "SSL_EMA_WD" in _explicit(cfg):
            raise UserError("SSL_EMA_WD is the extra decay of the EMA step; it needs SSL_EMA > 0")
        self.ema = None
        self.strong_augment = None
        if "SSL_STRONG" in self.USES:
            self.strong_augment = StrongAugment(self.own(cfg.SSL_STRONG, "SSL_STRONG"), cfg.SSL_STRONG_GROUPS,
                                                cfg.SSL_RANDAUG_OPS, cfg.SSL_RANDAUG_LEVEL, cfg.SSL_RANDAUG_P,
                                                self.own(cfg.SSL_CUTOUT, "SSL_CUTOUT"))

    def own(self, value, key: str):
        """A setting's value: the given one, else (None) the method's own, ``OWN[key]``."""
        return self.OWN[key] if value is None else value

    # ------------------------------------------------------------------ the loop's questions
    def steps_per_epoch(self, labeled_size: int, pool_size: int) -> int:
        """One step per labeled batch, ceil(|L| / B) (the toolkit's fixmatch, flexmatch, uda, pseudolabel)."""
        return max(1, math.ceil(labeled_size / self.batch_size))

    def stop_early(self, previous: float | None, current: float) -> bool:
        """The toolkit's stop: |previous - current| summed epoch training loss < SSL_EARLY_STOP (0: never)."""
        return self.early_stop > 0 and previous is not None and abs(previous - current) < self.early_stop

    # ------------------------------------------------------------------ training
    def loss(self, forward, x_l, y_l, u_images, u_pos, weak, strong, progress: float):
        raise NotImplementedError

    def start(self, model) -> None:
        """Before the round's first step: the EMA network starts as a copy of the initial one."""
        if self.ema_decay > 0:
            self.ema = copy.deepcopy(unwrap(model))
            for p in self.ema.parameters():
                p.requires_grad_(False)

    def after_step(self, model, lr: float | None = None) -> None:
        """After each optimizer step: the EMA update (an EMA method whose ``start`` was not called
        starts from the model after the first step), then the toolkit's extra decay of the trained
        network by 1 - SSL_EMA_WD x lr when ``lr`` is given."""
        if self.ema_decay <= 0:
            return
        model = unwrap(model)
        if self.ema is None:
            self.start(model)
        else:
            ema_update(self.ema, model, self.ema_decay)
        if lr is not None and self.ema_wd > 0:
            decay_weights(model, self.ema_wd * lr)

    def eval_model(self, model):
        """The network to test and query with: the EMA copy when the method keeps one (MixMatch, as the
        toolkit), else ``model``."""
        return self.ema if self.ema is not None else model

    @staticmethod
    def logs(**values) -> dict[str, float]:
        """Float logs with one host sync (``loss``, the step's total, among them: the loop reads it there)."""
        tensors = {k: v.detach().float().reshape(()) for k, v in values.items() if torch.is_tensor(v)}
        synced = dict(zip(tensors, torch.stack(list(tensors.values())).tolist())) if tensors else {}
        return {k: synced[k] if k in synced else float(v) for k, v in values.items()}


def _split(logits: torch.Tensor, *sizes: int) -> tuple:
    return torch.split(logits.float(), list(sizes))


def _weak_and_strong(forward, x_l, u_images, weak, strong) -> tuple:
    """(labeled, weak-view, strong-view) logits from one forward over [x_l; weak(u); strong(u)]."""
    n, m = len(x_l), len(u_images)
    return _split(forward(torch.cat([x_l, weak(u_images), strong(u_images)])), n, m, m)


class FixMatch(SemiSupervised):
    """FixMatch (Sohn et al. 2020): CE on the labeled batch + lambda_u x the thresholded hard
    pseudo-label CE of the strong view against the weak view (Eq. 4), one forward over
    [x_l; weak(u); strong(u)]. The toolkit's: tau 0.95, lambda_u 1, labeled batch 250, unlabeled 1350
    (mu 5.4; the paper's 7), no EMA (the paper evaluates an EMA)."""

    NAME = "fixmatch"
    OWN = {"SSL_BATCH": 250, "SSL_MU": 5.4, "SSL_THRESHOLD": 0.95, "SSL_LAMBDA_U": 1.0, "SSL_T": 1.0, "SSL_EMA": 0.0,
           "SSL_EARLY_STOP": 5e-4, "SSL_STRONG": "randaugment", "SSL_CUTOUT": 0.5}
    USES = STRONG

    def __init__(self, cfg, num_classes, unlabeled_size, device):
        super().__init__(cfg, num_classes, unlabeled_size, device)
        self.threshold = self.own(cfg.SSL_THRESHOLD, "SSL_THRESHOLD")
        self.lambda_u = self.own(cfg.SSL_LAMBDA_U, "SSL_LAMBDA_U")

    def unlabeled_mask_loss(self, logits_weak, logits_strong, u_pos):
        return fixmatch_unlabeled_loss(logits_weak, logits_strong, self.threshold, self.T)

    def loss(self, forward, x_l, y_l, u_images, u_pos, weak, strong, progress):
        z_l, z_w, z_s = _weak_and_strong(forward, x_l, u_images, weak, strong)
        sup = F.cross_entropy(z_l, y_l)
        unsup, mask = self.unlabeled_mask_loss(z_w, z_s, u_pos)
        loss = sup + self.lambda_u * unsup
        return loss, self.logs(loss=loss, sup_loss=sup, unsup_loss=unsup, mask=mask.mean())


class FlexMatch(FixMatch):
    """FlexMatch (Zhang et al. 2021): FixMatch with the class-wise thresholds of Curriculum Pseudo
    Labeling, from a per-sample memory of the latest prediction above tau over the round's unlabeled
    array (``u_pos``), the convex mapping and the threshold warm-up. The toolkit's copy is broken (its
    thresholds are always 0: every unlabeled sample is used; SSL_THRESHOLD=0 reproduces that); this is
    the paper's, tau 0.95, with the toolkit's batches (250 labeled, mu 7) and lambda_u 1."""

    NAME = "flexmatch"
    OWN = {**FixMatch.OWN, "SSL_MU": 7.0}
    USES = (*STRONG, "SSL_FLEX_WARMUP")

    def __init__(self, cfg, num_classes, unlabeled_size, device):
        super().__init__(cfg, num_classes, unlabeled_size, device)
        self.warmup = cfg.SSL_FLEX_WARMUP
        self.selected = torch.full((unlabeled_size,), -1, dtype=torch.long, device=device)  # -1: unused

    def class_thresholds(self) -> torch.Tensor:
        counts = torch.bincount(self.selected + 1, minlength=self.num_classes + 1)
        return flexmatch_thresholds(counts[1:], counts[0], self.threshold, self.warmup)

    def unlabeled_mask_loss(self, logits_weak, logits_strong, u_pos):
        probs = torch.softmax(logits_weak.detach().float() / self.T, dim=-1)
        confidence, pseudo = probs.max(dim=-1)
        mask = (confidence >= self.class_thresholds()[pseudo]).float()
        unsup = (F.cross_entropy(logits_strong.float(), pseudo, reduction="none") * mask).mean()
        u_pos = u_pos.to(self.selected.device)
        self.selected[u_pos] = torch.where(confidence >= self.threshold, pseudo, self.selected[u_pos])
        return unsup, mask


class UDA(SemiSupervised):
    """UDA (Xie et al. 2020): supervised CE with TSA + lambda_u x KL(p(weak) || p(strong)), one forward
    over [x_l; weak(u); strong(u)]. The toolkit's: the dataset's batch for both streams (mu 1), AutoAugment's
    CIFAR-10 policy as the strong view, no sharpening (T 1), no confidence mask, no TSA, lambda_u 1; the
    paper's T 0.4, confidence 0.8 and a TSA schedule are settings."""

    NAME = "uda"
    OWN = {"SSL_BATCH": None, "SSL_MU": 1.0, "SSL_THRESHOLD": 0.0, "SSL_LAMBDA_U": 1.0, "SSL_T": 1.0, "SSL_EMA": 0.0,
           "SSL_EARLY_STOP": 5e-4, "SSL_STRONG": "autoaugment", "SSL_CUTOUT": 0.0}
    USES = (*STRONG, "SSL_TSA")

    def __init__(self, cfg, num_classes, unlabeled_size, device):
        super().__init__(cfg, num_classes, unlabeled_size, device)
        self.threshold = self.own(cfg.SSL_THRESHOLD, "SSL_THRESHOLD")
        self.lambda_u, self.tsa = self.own(cfg.SSL_LAMBDA_U, "SSL_LAMBDA_U"), cfg.SSL_TSA

    def loss(self, forward, x_l, y_l, u_images, u_pos, weak, strong, progress):
        z_l, z_w, z_s = _weak_and_strong(forward, x_l, u_images, weak, strong)
        sup, kept = uda_supervised_loss(z_l, y_l, uda_tsa_threshold(progress, self.tsa, self.num_classes))
        unsup, mask = uda_unlabeled_loss(z_w, z_s, self.T, self.threshold)
        loss = sup + self.lambda_u * unsup
        return loss, self.logs(loss=loss, sup_loss=sup, unsup_loss=unsup, mask=mask.mean(),
                                                      tsa_kept=kept.mean())


class PseudoLabel(SemiSupervised):
    """Pseudo-Label (Lee 2013): CE on the labeled batch + lambda(t) x CE of the unlabeled batch's weak view
    against its own argmax where confident. The toolkit's: labeled batch 250, mu 7, threshold 0.95,
    weight 1 without ramp-up (Lee: alpha_f 3 ramped up), two forward passes (here one over [x_l; weak(u)])."""

    NAME = "pseudolabel"
    OWN = {"SSL_BATCH": 250, "SSL_MU": 7.0, "SSL_THRESHOLD": 0.95, "SSL_LAMBDA_U": 1.0, "SSL_T": 1.0, "SSL_EMA": 0.0,
           "SSL_EARLY_STOP": 5e-4, "SSL_RAMPUP": 0.0}

    def __init__(self, cfg, num_classes, unlabeled_size, device):
        super().__init__(cfg, num_classes, unlabeled_size, device)
        self.threshold, self.lambda_u = self.own(cfg.SSL_THRESHOLD, "SSL_THRESHOLD"), self.own(cfg.SSL_LAMBDA_U,
                                                                                                "SSL_LAMBDA_U")
        self.rampup = self.own(cfg.SSL_RAMPUP, "SSL_RAMPUP")

    def loss(self, forward, x_l, y_l, u_images, u_pos, weak, strong, progress):
        n, m = len(x_l), len(u_images)
        z_l, z_u = _split(forward(torch.cat([x_l, weak(u_images)])), n, m)
        sup = F.cross_entropy(z_l, y_l)
        unsup, mask = pseudo_label_loss(z_u, self.threshold, self.T)
        weight = self.lambda_u * linear_rampup(progress * self.epochs, self.rampup)
        loss = sup + weight * unsup
        return loss, self.logs(loss=loss, sup_loss=sup, unsup_loss=unsup, mask=mask.mean(), weight=weight)


class MixMatch(SemiSupervised):
    """MixMatch (Berthelot et al. 2019), as the toolkit's ssl_* strategies: two weak views of each
    unlabeled image, the guess sharpen(mean softmax, T 0.5) under no_grad with the network in train mode
    (its own forward), MixUp (alpha 0.75) of [x_l; u1; u2] with one permutation, then soft CE on the
    mixed labeled part + lambda_u (100, ramped up linearly over 200 epochs: 50 at the end of a 100-epoch
    round) x the squared error on the mixed unlabeled part, in one forward (the toolkit interleaves three
    forwards of B). Tested and queried with the EMA network (0.999); the same batch for both streams;
    int(N / B) steps per epoch over the whole pool N."""

    NAME = "mixmatch"
    OWN = {"SSL_BATCH": None, "SSL_MU": 1.0, "SSL_LAMBDA_U": 100.0, "SSL_T": 0.5, "SSL_EMA": 0.999,
           "SSL_EARLY_STOP": 0.0, "SSL_RAMPUP": 200.0}
    USES = ("SSL_ALPHA",)
    clamp_gradients = False

    def __init__(self, cfg, num_classes, unlabeled_size, device):
        super().__init__(cfg, num_classes, unlabeled_size, device)
        self.lambda_u, self.rampup = self.own(cfg.SSL_LAMBDA_U, "SSL_LAMBDA_U"), self.own(cfg.SSL_RAMPUP, "SSL_RAMPUP")
        self.alpha = cfg.SSL_ALPHA

    def steps_per_epoch(self, labeled_size: int, pool_size: int) -> int:
        """The toolkit's train_iteration = int(N / B), N the whole pool (labeled + unlabeled)."""
        return max(1, int(pool_size / self.batch_size))

    def loss(self, forward, x_l, y_l, u_images, u_pos, weak, strong, progress):
        n, m = len(x_l), len(u_images)
        u1, u2 = weak(u_images), weak(u_images)
        with torch.no_grad():
            p1, p2 = torch.softmax(forward(torch.cat([u1, u2])).float(), dim=-1).split([m, m])
            guess = sharpen((p1 + p2) / 2, self.T)
        targets = torch.cat([F.one_hot(y_l, self.num_classes).float(), guess, guess])
        mixed_x, mixed_t, _ = mixup(torch.cat([x_l, u1, u2]), targets, self.alpha)
        z_l, z_u = _split(forward(mixed_x), n, 2 * m)
        sup = soft_cross_entropy(z_l, mixed_t[:n])
        unsup = mixmatch_unlabeled_loss(torch.softmax(z_u, dim=-1), mixed_t[n:])
        weight = self.lambda_u * linear_rampup(progress * self.epochs, self.rampup)
        loss = sup + weight * unsup
        return loss, self.logs(loss=loss, sup_loss=sup, unsup_loss=unsup, weight=weight)


SSL_METHODS = Registry("semi-supervised method")
for _method in (PseudoLabel, FixMatch, FlexMatch, UDA, MixMatch):
    SSL_METHODS.add(_method.NAME, _method)


def make_ssl(cfg, method: str, num_classes: int, unlabeled_size: int, device) -> SemiSupervised | None:
    """The round's ``method`` (--ssl, or what a toolkit strategy name stands for; None for "none":
    plain supervised training, and SSL_* settings given then are refused, since nothing would read them)."""
    if method == "none":
        given = sorted(_explicit(cfg))
        if given:
            raise UserError(f"{', '.join(given)} set semi-supervised training; choose a method with --ssl")
        return None
    return SSL_METHODS.find(method, list(SSL_METHODS))(cfg, num_classes, unlabeled_size, device)

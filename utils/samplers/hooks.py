"""Training that a strategy adds to the task model's, round by round (VAAL, WAAL, learning loss).

A protocol's training step calls, for every batch x (with labels y) of the task model:

    out  = net(x)
    loss = task loss + hook.extra_loss(net, out, x, y, epoch)
    hook.zero_grad(); optimizer.zero_grad()
    precision.minimize(loss, optimizer, before_update=lambda: hook.step(out, epoch))

with ``hook.set_lr(lr)`` whenever the task learning rate changes; the task model trains on
``hook.train_indices(labeled_idx)``; after the round ``hook.extras()`` go to the query.
Under --amp fp16 the loss is scaled (utils/core/precision.py), so a hook steps its optimizers with
``precision.backward``/``step``, never ``update``, once per task step; a hook that steps an optimizer more
often (VAAL) trains with a scaler of its own (``Precision.own_scaler``) and updates it after each of its
steps. Its networks' forwards run under --amp's autocast,
except WAAL's critic (a small MLP whose gradient penalty differentiates twice: float32).
A hook is built fresh every round, as the networks of these methods are. Hooks see tensors, not
datasets: the protocol hands them ``stream(indices)``, endless augmented batches (x, y) on the
training device, and the image geometry in :class:`HookSettings`.
"""

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import torch
from torch import nn

from models import build_model
from models.vaal import VAE, LatentDiscriminator
from models.waal import Critic, critic_input, critic_input_dim
from utils.core.config import SCRIPT_EPOCHS, Key
from utils.core.precision import Precision
from utils.methods.losses import ranking_loss

Stream = Callable[[np.ndarray], Iterator[tuple[torch.Tensor, torch.Tensor]]]


@dataclass(frozen=True)
class HookSettings:
    """What a hook needs from the protocol: the task optimiser's settings (its own optimisers
    follow them), gradient clipping (None: off), the geometry and device of the task model's
    inputs, --amp/--channels-last, and the resolved values of the hook's own settings (``params``,
    its ``PARAMS`` keys: the learning-loss detach epoch, VAAL's VAE width)."""

    lr: float
    momentum: float
    weight_decay: float
    grad_clip: float | None
    in_channels: int
    image_size: int
    device: torch.device
    precision: Precision = field(default_factory=Precision)
    params: Mapping = field(default_factory=dict)

    def param(self, key: str, hook: type):
        """The value of the hook's setting ``key`` (its default when the protocol gave none)."""
        return self.params[key] if key in self.params else hook.PARAMS[key].default


class TrainingHook:
    PARAMS: Mapping = MappingProxyType({})  # the hook's settings keys (in the trees of scripts that run hooks)

    def __init__(self, model: nn.Module, labeled_idx: np.ndarray, pool_idx: np.ndarray, stream: Stream,
                 settings: HookSettings):
        self.model, self.stream, self.settings = model, stream, settings
        self.labeled_idx, self.pool_idx = np.asarray(labeled_idx), np.asarray(pool_idx)
        self.optimizers = []
        self.scheduled = []  # optimizers whose learning rate follows the task model's

    def sgd(self, module: nn.Module) -> torch.optim.Optimizer:
        s = self.settings
        return torch.optim.SGD(module.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)

    def train_indices(self, labeled_idx: np.ndarray) -> np.ndarray:
        return labeled_idx

    def extra_loss(self, net: nn.Module, out, x: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor | float:
        return 0.0

    def zero_grad(self) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)

    def step(self, out, epoch: int) -> None:
        pass

    def set_lr(self, lr: float) -> None:
        for optimizer in self.scheduled:
            for group in optimizer.param_groups:
                group["lr"] = lr

    def extras(self) -> dict:
        return {}


class LossPredictionHook(TrainingHook):
    """Learning loss (Yoo & Kweon, CVPR'19) as the toolkit trains it: a loss module on the stage
    features, loss = CE + 1.0 x ranking loss (margin 1), its own SGD with the task's settings and
    schedule, the module's gradient into the backbone cut after epoch LL_DETACH_EPOCH."""

    PARAMS = MappingProxyType({"LL_DETACH_EPOCH": Key(
        120, "learning loss: the module's gradient into the backbone stops after this epoch", minimum=0,
        per_epochs=SCRIPT_EPOCHS)})

    def __init__(self, model: nn.Module, labeled_idx: np.ndarray, pool_idx: np.ndarray, stream: Stream,
                 settings: HookSettings):
        super().__init__(model, labeled_idx, pool_idx, stream, settings)
        self.module = build_model("lossnet", None, stage_channels=model.stage_channels).to(settings.device)
        self.optimizers = self.scheduled = [self.sgd(self.module)]

    def extra_loss(self, net: nn.Module, out, x: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        target_loss = nn.functional.cross_entropy(out.logits, y, reduction="none", ignore_index=-1)
        attached = epoch <= self.settings.param("LL_DETACH_EPOCH", type(self))
        stages = out.stages if attached else [s.detach() for s in out.stages]
        self.module.train()
        return ranking_loss(self.module(stages), target_loss, margin=1.0)

    def step(self, out, epoch: int) -> None:
        precision = self.settings.precision
        precision.unscale(self.optimizers[0])
        if self.settings.grad_clip:
            nn.utils.clip_grad_value_(self.module.parameters(), self.settings.grad_clip)
        precision.step(self.optimizers[0])

    def extras(self) -> dict:
        return {"loss_module": self.module}


class VAALHook(TrainingHook):
    """VAAL (Sinha et al., ICCV'19, Alg. 1): after every task step, 2 VAE steps and 1 discriminator
    step (Adam 5e-4 each) on fresh labeled and unlabeled batches. VAE objective: reconstruction
    MSE + beta KL on both batches + lambda BCE making the discriminator call both 'labeled';
    discriminator objective: BCE(D(mu_L), 1) + BCE(D(mu_U), 0). beta = lambda = 1."""

    PARAMS = MappingProxyType({"VAE_WIDTH": Key(
        128, "channels of the first layer of VAAL's VAE (the paper's 128 takes about 3 s per batch of 64 on 2 CPU "
        "cores; 32 is about 16x cheaper)", minimum=1)})
    VAE_STEPS, BETA, ADVERSARY_WEIGHT, LR = 2, 1.0, 1.0, 5e-4

    def __init__(self, model: nn.Module, labeled_idx: np.ndarray, pool_idx: np.ndarray, stream: Stream,
                 settings: HookSettings):
        super().__init__(model, labeled_idx, pool_idx, stream, settings)
        self.size = vae_input_size(settings.image_size)
        z_dim = self.size  # z = the VAE's input side (32 for CIFAR, as VAAL)
        width = settings.param("VAE_WIDTH", type(self))
        self.vae = VAE(settings.in_channels, self.size, z_dim, width).to(settings.device)
        self.discriminator = LatentDiscriminator(z_dim).to(settings.device)
        self.optimizers = [torch.optim.Adam(self.vae.parameters(), lr=self.LR),
                           torch.optim.Adam(self.discriminator.parameters(), lr=self.LR)]
        self.labeled, self.unlabeled = self.stream(self.labeled_idx), self.stream(self.pool_idx)
        self.precision = settings.precision.own_scaler()  # (VAE_STEPS steps of one optimizer per task step)

    def vae_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        recon, _, mu, logvar = self.settings.precision.forward(self.vae, x)
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return nn.functional.mse_loss(recon, x) + self.BETA * kl, mu

    def step(self, out, epoch: int) -> None:
        for _ in range(self.VAE_STEPS):
            x_l, x_u = resize(next(self.labeled)[0], self.size), resize(next(self.unlabeled)[0], self.size)
            self.vae_step(x_l, x_u)
        self.discriminator_step(x_l, x_u)

    def vae_step(self, x_l: torch.Tensor, x_u: torch.Tensor) -> None:
        self.vae.train()
        bce = nn.functional.binary_cross_entropy
        loss_l, mu_l = self.vae_loss(x_l)
        loss_u, mu_u = self.vae_loss(x_u)
        d_l, d_u = self.discriminate(mu_l), self.discriminate(mu_u)
        fooled = bce(d_l, torch.ones_like(d_l)) + bce(d_u, torch.ones_like(d_u))
        loss = loss_l + loss_u + self.ADVERSARY_WEIGHT * fooled
        self.optimizers[0].zero_grad(set_to_none=True)
        self.own_step(loss, self.optimizers[0])

    def own_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """backward, step and (fp16) the scale's update of the hook's own scaler."""
        self.precision.backward(loss)
        self.precision.step(optimizer)
        self.precision.update()

    def discriminate(self, mu: torch.Tensor) -> torch.Tensor:
        return self.settings.precision.forward(self.discriminator, mu)

    def discriminator_step(self, x_l: torch.Tensor, x_u: torch.Tensor) -> None:
        self.discriminator.train()
        with torch.no_grad():
            encode = self.settings.precision.forward
            mu_l, mu_u = encode(self.vae.encode, x_l)[0], encode(self.vae.encode, x_u)[0]
        d_l, d_u = self.discriminate(mu_l), self.discriminate(mu_u)
        loss = nn.functional.binary_cross_entropy(d_l, torch.ones_like(d_l)) + \
            nn.functional.binary_cross_entropy(d_u, torch.zeros_like(d_u))
        self.optimizers[1].zero_grad(set_to_none=True)
        self.own_step(loss, self.optimizers[1])

    def extras(self) -> dict:
        return {"vae": self.vae, "discriminator": self.discriminator, "vae_size": self.size}


class WAALHook(TrainingHook):
    """WAAL (Shui et al., AISTATS'20) as the toolkit trains it: the labeled set is cycled to the
    size of the pool ("redundant trick"), every task step adds alpha [mean D(f(x_U)) - gamma mean
    D(f(x_L))] (gamma = |L|/|U|), then the critic D takes one step on
    -alpha [mean D(z_U) - gamma mean D(z_L)] - 2 alpha GP, with the authors' sign on the gradient
    penalty GP = mean (||grad D(z)|| - 1)^2 over interpolates and both batches. alpha = 2e-3.
    f is the feature extractor (``models.waal.critic_input``: LeNet's 320-d conv features)."""

    ALPHA = 2e-3

    def __init__(self, model: nn.Module, labeled_idx: np.ndarray, pool_idx: np.ndarray, stream: Stream,
                 settings: HookSettings):
        super().__init__(model, labeled_idx, pool_idx, stream, settings)
        self.critic = Critic(critic_input_dim(model)).to(settings.device)
        self.optimizers = self.scheduled = [self.sgd(self.critic)]
        self.gamma = len(self.labeled_idx) / max(1, len(self.pool_idx))
        self.unlabeled = self.stream(self.pool_idx)
        self.features = None

    def train_indices(self, labeled_idx: np.ndarray) -> np.ndarray:
        order = np.random.permutation(labeled_idx)
        return np.resize(order, max(len(labeled_idx), len(self.pool_idx)))

    def extra_loss(self, net: nn.Module, out, x: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        z_l, z_u = critic_input(self.model, out), critic_input(self.model, net(next(self.unlabeled)[0]))
        self.features = (z_l.detach(), z_u.detach())
        self.critic.train()
        return self.ALPHA * (self.critic(z_u).mean() - self.gamma * self.critic(z_l).mean())

    def step(self, out, epoch: int) -> None:
        z_l, z_u = self.features
        loss = -self.ALPHA * (self.critic(z_u).mean() - self.gamma * self.critic(z_l).mean())
        loss = loss - 2 * self.ALPHA * self.gradient_penalty(z_l, z_u)
        self.optimizers[0].zero_grad(set_to_none=True)
        self.settings.precision.backward(loss)
        self.settings.precision.step(self.optimizers[0])

    def gradient_penalty(self, z_l: torch.Tensor, z_u: torch.Tensor) -> torch.Tensor:
        n = min(len(z_l), len(z_u))
        mix = torch.rand(n, 1, device=z_l.device)
        points = torch.cat([z_u[:n] + mix * (z_l[:n] - z_u[:n]), z_u, z_l]).requires_grad_()
        grad = torch.autograd.grad(self.critic(points).sum(), points, create_graph=True)[0]
        return (grad.norm(dim=1) - 1).pow(2).mean()

    def extras(self) -> dict:
        return {"critic": self.critic}


def vae_input_size(side: int) -> int:
    """The VAE's input side: the image side rounded up to a multiple of 16 (32 for digits, CIFAR)."""
    return max(32, -(-side // 16) * 16)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    return x if x.shape[-1] == size else nn.functional.interpolate(x, size=(size, size), mode="bilinear",
                                                                   align_corners=False)

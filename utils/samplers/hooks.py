"""Training that a strategy adds to the task model's, round by round (VAAL, WAAL, learning loss).

A protocol's training step calls, for every batch x (with labels y) of the task model:

    out  = net(x)
    loss = task loss + hook.extra_loss(net, out, x, y, epoch)
    hook.zero_grad(); optimizer.zero_grad(); loss.backward(); optimizer.step(); hook.step(out, epoch)

with ``hook.set_lr(lr)`` whenever the task learning rate changes; the task model trains on
``hook.train_indices(labeled_idx)``; after the round ``hook.extras()`` go to the query.
A hook is built fresh every round, as the networks of these methods are.
"""

import numpy as np
import torch
from torch import nn

from models import LossNet
from models.vaal import VAE, LatentDiscriminator
from models.waal import Critic
from utils.core.data import forever, make_loader
from utils.methods.losses import ranking_loss


class TrainingHook:
    PROVIDES = ()  # the QueryContext extras this hook fills

    def __init__(self, model, data, labeled_idx, pool_idx, dist, settings):
        """``settings``: lr, momentum, weight_decay, batch_size, workers, grad_clip (or None),
        epoch_l (learning loss), and the method's own values."""
        self.model, self.data, self.dist, self.settings = model, data, dist, settings
        self.labeled_idx, self.pool_idx = np.asarray(labeled_idx), np.asarray(pool_idx)
        self.optimizers = []
        self.scheduled = []  # optimizers whose learning rate follows the task model's

    def stream(self, indices):
        """Endless augmented batches of ``indices`` (the method's own draws)."""
        seed = np.random.randint(2**31)
        loader = make_loader(self.data.train, indices, self.settings["batch_size"], True, seed, self.dist,
                             self.settings.get("workers", 0))
        for images, targets, _ in forever(loader):
            yield self.data.train_transform(images.to(self.dist.device)), targets.to(self.dist.device)

    def sgd(self, module):
        s = self.settings
        return torch.optim.SGD(module.parameters(), lr=s["lr"], momentum=s["momentum"], weight_decay=s["weight_decay"])

    def train_indices(self, labeled_idx):
        return labeled_idx

    def extra_loss(self, net, out, x, y, epoch):
        return 0.0

    def zero_grad(self):
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)

    def step(self, out, epoch):
        pass

    def set_lr(self, lr):
        for optimizer in self.scheduled:
            for group in optimizer.param_groups:
                group["lr"] = lr

    def extras(self):
        return {}


class LossPredictionHook(TrainingHook):
    """Learning loss (Yoo & Kweon, CVPR'19) as the toolkit trains it: a loss module on the stage
    features, loss = CE + 1.0 x ranking loss (margin 1), its own SGD with the task's settings and
    schedule, the module's gradient into the backbone cut after epoch ``epoch_l``."""

    PROVIDES = ("loss_module",)

    def __init__(self, model, data, labeled_idx, pool_idx, dist, settings):
        super().__init__(model, data, labeled_idx, pool_idx, dist, settings)
        self.module = LossNet(model.stage_channels).to(dist.device)
        self.optimizers = self.scheduled = [self.sgd(self.module)]

    def extra_loss(self, net, out, x, y, epoch):
        target_loss = nn.functional.cross_entropy(out.logits, y, reduction="none", ignore_index=-1)
        stages = out.stages if epoch <= self.settings.get("epoch_l", 120) else [s.detach() for s in out.stages]
        self.module.train()
        return ranking_loss(self.module(stages), target_loss, margin=1.0)

    def step(self, out, epoch):
        if self.settings.get("grad_clip"):
            nn.utils.clip_grad_value_(self.module.parameters(), self.settings["grad_clip"])
        self.optimizers[0].step()

    def extras(self):
        return {"loss_module": self.module}


class VAALHook(TrainingHook):
    """VAAL (Sinha et al., ICCV'19, Alg. 1): after every task step, 2 VAE steps and 1 discriminator
    step (Adam 5e-4 each) on fresh labeled and unlabeled batches. VAE objective: reconstruction
    MSE + beta KL on both batches + lambda BCE making the discriminator call both 'labeled';
    discriminator objective: BCE(D(mu_L), 1) + BCE(D(mu_U), 0). beta = lambda = 1."""

    PROVIDES = ("vae", "discriminator")
    VAE_STEPS, BETA, ADVERSARY_WEIGHT, LR = 2, 1.0, 1.0, 5e-4

    def __init__(self, model, data, labeled_idx, pool_idx, dist, settings):
        super().__init__(model, data, labeled_idx, pool_idx, dist, settings)
        self.size = vae_input_size(data.image_size)
        z_dim = settings.get("z_dim", self.size)
        self.vae = VAE(data.in_channels, self.size, z_dim, settings.get("vae_width", 128)).to(dist.device)
        self.discriminator = LatentDiscriminator(z_dim).to(dist.device)
        self.optimizers = [torch.optim.Adam(self.vae.parameters(), lr=self.LR),
                           torch.optim.Adam(self.discriminator.parameters(), lr=self.LR)]
        self.labeled, self.unlabeled = self.stream(self.labeled_idx), self.stream(self.pool_idx)

    def vae_loss(self, x):
        recon, _, mu, logvar = self.vae(x)
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return nn.functional.mse_loss(recon, x) + self.BETA * kl, mu

    def step(self, out, epoch):
        for _ in range(self.VAE_STEPS):
            x_l, x_u = resize(next(self.labeled)[0], self.size), resize(next(self.unlabeled)[0], self.size)
            self.vae_step(x_l, x_u)
        self.discriminator_step(x_l, x_u)

    def vae_step(self, x_l, x_u):
        self.vae.train()
        bce = nn.functional.binary_cross_entropy
        loss_l, mu_l = self.vae_loss(x_l)
        loss_u, mu_u = self.vae_loss(x_u)
        d_l, d_u = self.discriminator(mu_l), self.discriminator(mu_u)
        fooled = bce(d_l, torch.ones_like(d_l)) + bce(d_u, torch.ones_like(d_u))
        loss = loss_l + loss_u + self.ADVERSARY_WEIGHT * fooled
        self.optimizers[0].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers[0].step()

    def discriminator_step(self, x_l, x_u):
        self.discriminator.train()
        with torch.no_grad():
            mu_l, mu_u = self.vae.encode(x_l)[0], self.vae.encode(x_u)[0]
        d_l, d_u = self.discriminator(mu_l), self.discriminator(mu_u)
        loss = nn.functional.binary_cross_entropy(d_l, torch.ones_like(d_l)) + \
            nn.functional.binary_cross_entropy(d_u, torch.zeros_like(d_u))
        self.optimizers[1].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers[1].step()

    def extras(self):
        return {"vae": self.vae, "discriminator": self.discriminator, "vae_size": self.size}


class WAALHook(TrainingHook):
    """WAAL (Shui et al., AISTATS'20) as the toolkit trains it: the labeled set is cycled to the
    size of the pool ("redundant trick"), every task step adds alpha [mean D(f(x_U)) - gamma mean
    D(f(x_L))] (gamma = |L|/|U|), then the critic D takes one step on
    -alpha [mean D(z_U) - gamma mean D(z_L)] - 2 alpha GP, with the authors' sign on the gradient
    penalty GP = mean (||grad D(z)|| - 1)^2 over interpolates and both batches. alpha = 2e-3."""

    PROVIDES = ("critic",)
    ALPHA = 2e-3

    def __init__(self, model, data, labeled_idx, pool_idx, dist, settings):
        super().__init__(model, data, labeled_idx, pool_idx, dist, settings)
        self.critic = Critic(model.feature_dim).to(dist.device)
        self.optimizers = self.scheduled = [self.sgd(self.critic)]
        self.gamma = len(self.labeled_idx) / max(1, len(self.pool_idx))
        self.unlabeled = self.stream(self.pool_idx)
        self.features = None

    def train_indices(self, labeled_idx):
        order = np.random.permutation(labeled_idx)
        return np.resize(order, max(len(labeled_idx), len(self.pool_idx)))

    def extra_loss(self, net, out, x, y, epoch):
        z_u = net(next(self.unlabeled)[0]).features
        self.features = (out.features.detach(), z_u.detach())
        self.critic.train()
        return self.ALPHA * (self.critic(z_u).mean() - self.gamma * self.critic(out.features).mean())

    def step(self, out, epoch):
        z_l, z_u = self.features
        loss = -self.ALPHA * (self.critic(z_u).mean() - self.gamma * self.critic(z_l).mean())
        loss = loss - 2 * self.ALPHA * self.gradient_penalty(z_l, z_u)
        self.optimizers[0].zero_grad(set_to_none=True)
        loss.backward()
        self.optimizers[0].step()

    def gradient_penalty(self, z_l, z_u):
        n = min(len(z_l), len(z_u))
        mix = torch.rand(n, 1, device=z_l.device)
        points = torch.cat([z_u[:n] + mix * (z_l[:n] - z_u[:n]), z_u, z_l]).requires_grad_()
        grad = torch.autograd.grad(self.critic(points).sum(), points, create_graph=True)[0]
        return (grad.norm(dim=1) - 1).pow(2).mean()

    def extras(self):
        return {"critic": self.critic}


def vae_input_size(side):
    """The VAE's input side: the image side rounded up to a multiple of 16 (32 for digits, CIFAR)."""
    return max(32, -(-side // 16) * 16)


def resize(x, size):
    return x if x.shape[-1] == size else nn.functional.interpolate(x, size=(size, size), mode="bilinear",
                                                                   align_corners=False)

"""Center loss (Wen et al., ECCV'16) as LfOSA's ``center_loss.py`` uses it (spec 004 B.3).

L_c = (1/B) sum_i ||f_i - c_{y_i}||^2 over the batch; samples labelled with the unknown class K
have no center and add nothing (but count in B). The centers (randn init) have their own SGD at
``--lr-cent``; their gradients are divided by the loss weight before each step, so the weight
scales the network's gradient only. Weight 0 (the README runs) switches the loss off.
"""

import torch
import torch.distributed as torch_dist
from torch import nn


class CenterLoss(nn.Module):
    """One learnable center per known class in the ``feat_dim``-d feature space."""

    def __init__(self, num_classes, feat_dim=2):
        super().__init__()
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def forward(self, features, labels):
        known = labels < len(self.centers)
        diff = features[known] - self.centers[labels[known]]
        return diff.pow(2).sum() / len(labels)


class CenterLossTerm:
    """``weight`` x center loss with the centers' own SGD (lr ``lr``); one instance can serve
    several networks (LfOSA's detector and classifier share theirs). Under torch.distributed
    the center gradients are averaged over the ranks before a step."""

    def __init__(self, num_classes, feat_dim, weight, lr, dist):
        self.weight, self.dist = weight, dist
        self.loss = CenterLoss(num_classes, feat_dim).to(dist.device)
        self.optimizer = torch.optim.SGD(self.loss.parameters(), lr=lr)

    def __call__(self, features, labels):
        """The weighted loss to add to the network's (0 when the weight is 0)."""
        if self.weight == 0:
            return features.new_zeros(())
        self.optimizer.zero_grad(set_to_none=True)
        return self.weight * self.loss(features, labels)

    def step(self):
        """After ``backward``: undo the weight on the center gradients and step the centers."""
        if self.weight == 0:
            return
        grad = self.loss.centers.grad
        if self.dist.enabled:
            torch_dist.all_reduce(grad)
            grad /= self.dist.world_size
        # --amp fp16 scales the loss: unscaled after the all-reduce, so that every rank sees the same overflow and
        # skips (or takes) the same step
        self.dist.precision.unscale(self.optimizer)
        grad /= self.weight
        self.dist.precision.step(self.optimizer)

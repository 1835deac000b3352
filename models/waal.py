"""WAAL's critic (Shui et al., AISTATS'20), as the authors and the toolkit build it on the feature
extractor's output: in -> 50 -> 1 with ReLU, dropout 0.5 and a sigmoid. That output is what the
classifier head reads: LeNet's 320-d conv features (the authors' Net1_fea, the toolkit's
``LeNet.feature_extractor``; its 50-d embedding is inside the head), a ResNet's pooled embedding (the
toolkit's ``resnet_fea``, followed by the linear classifier alone)."""

import torch
from torch import nn

from models.output import ModelOutput


class Critic(nn.Module):
    def __init__(self, in_features: int, hidden: int = 50):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(True), nn.Dropout(0.5), nn.Linear(hidden, 1),
                                 nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).squeeze(1)


def critic_input_dim(model: nn.Module) -> int:
    """The width of what the critic reads for ``model`` (320 for LeNet on 28x28, else the embedding's)."""
    return getattr(model, "conv_feature_dim", model.feature_dim)


def critic_input(model: nn.Module, out: ModelOutput) -> torch.Tensor:
    """What the critic reads from ``model``'s forward ``out``: the conv features where the model has a
    feature extractor before a hidden layer (LeNet's ``conv_features``), else the embedding."""
    conv_features = getattr(model, "conv_features", None)
    return out.features if conv_features is None else conv_features(out)

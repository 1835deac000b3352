"""WAAL's critic (Shui et al., AISTATS'20), as the toolkit builds it on the embedding:
emb -> 50 -> 1 with ReLU, dropout 0.5 and a sigmoid."""

from torch import nn


class Critic(nn.Module):
    def __init__(self, in_features, hidden=50):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(True), nn.Dropout(0.5), nn.Linear(hidden, 1),
                                 nn.Sigmoid())

    def forward(self, z):
        return self.net(z).squeeze(1)

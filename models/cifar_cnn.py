"""The 13-layer ConvNet of Laine & Aila / Mean Teacher, as Rethinking deep AL uses it
(``cifar_cnn``; spec B.3): weight-normalised convolutions, each followed by BatchNorm and
LeakyReLU(0.1), three blocks, a 128-d feature that is L2-normalised before a weight-normalised
linear classifier. Made for 32x32 inputs."""

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from models.layers import ConsistentDropout
from models.output import ModelOutput
from models.registry import register_model


def _conv(cin, cout, kernel, padding):
    return [weight_norm(nn.Conv2d(cin, cout, kernel, padding=padding)), nn.BatchNorm2d(cout), nn.LeakyReLU(0.1)]


@register_model("cifar_cnn")
class CifarCNN(nn.Module):
    HEADS = ("fc2",)  # the classifier; the seed's unused second head fc1 is left out

    def __init__(self, num_classes=10, in_channels=3, l2_normalize=True):
        super().__init__()
        self.block1 = nn.Sequential(*_conv(in_channels, 128, 3, 1), *_conv(128, 128, 3, 1), *_conv(128, 128, 3, 1),
                                    nn.MaxPool2d(2))
        self.drop1 = ConsistentDropout(0.5)
        self.block2 = nn.Sequential(*_conv(128, 256, 3, 1), *_conv(256, 256, 3, 1), *_conv(256, 256, 3, 1),
                                    nn.MaxPool2d(2))
        self.drop2 = ConsistentDropout(0.5)
        self.block3 = nn.Sequential(*_conv(256, 512, 3, 0), *_conv(512, 256, 1, 0), *_conv(256, 128, 1, 0))
        self.l2_normalize = l2_normalize
        self.fc2 = weight_norm(nn.Linear(128, num_classes))
        self.feature_dim = 128
        self.stage_channels = (128, 256, 128)

    def reset_heads(self, num_classes):
        """A fresh classifier with ``num_classes`` outputs (DeepCluster re-creates it per clustering)."""
        self.fc2 = weight_norm(nn.Linear(128, num_classes))

    def mc_trunk(self, x):
        """The part before the first dropout (computed once for K MC-dropout passes)."""
        return self.block1(x)

    def mc_head(self, h):
        h2 = self.block2(self.drop1(h))
        h3 = self.block3(self.drop2(h2))
        features = torch.flatten(nn.functional.adaptive_avg_pool2d(h3, 1), 1)
        if self.l2_normalize:
            features = nn.functional.normalize(features, dim=1)
        return ModelOutput(self.fc2(features), features, None, [h, h2, h3])

    def forward(self, x):
        return self.mc_head(self.mc_trunk(x))

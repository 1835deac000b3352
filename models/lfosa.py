"""LfOSA's network (spec 004 B.3): a CIFAR ResNet whose classifier goes through a 2-d bottleneck,
fc2(fc1(h)) with fc1: 512 -> 2 and no nonlinearity in between, as in the center-loss demo the
seed's ``resnet.py`` comes from. ``features`` is the 2-d vector (the center loss pulls it)."""

from torch import nn

from models.output import ModelOutput
from models.registry import register_model
from models.resnet import RESNET18_BLOCKS, RESNET34_BLOCKS, CifarResNet


class BottleneckResNet(CifarResNet):
    """``CifarResNet`` (``blocks`` BasicBlocks per stage) with ``linear`` = fc2 reading the
    ``bottleneck``-d output of ``fc1``; ``dropout`` > 0 drops the pooled feature before fc1
    (MC-dropout strategies), so ``mc_trunk``/``mc_head`` split there."""

    def __init__(self, blocks, num_classes, in_channels=3, width=64, bottleneck=2, dropout=0.0):
        super().__init__(blocks, num_classes, in_channels, width, consistency_head=False, dropout=dropout)
        self.fc1 = nn.Linear(self.feature_dim, bottleneck)
        self.linear = nn.Linear(bottleneck, num_classes)  # the seed's fc2

    def _heads(self, pooled, stages=None):
        feature = self.fc1(self.dropout(pooled) if self.dropout is not None else pooled)
        return ModelOutput(self.linear(feature), feature, None, stages)


@register_model("lfosa_resnet18")
def lfosa_resnet18(num_classes: int, in_channels: int = 3, width: int = 64, bottleneck: int = 2,
                   dropout: float = 0.0) -> BottleneckResNet:
    """LfOSA's ResNet-18 (2-2-2-2 BasicBlocks)."""
    return BottleneckResNet(RESNET18_BLOCKS, num_classes, in_channels, width, bottleneck, dropout)


@register_model("lfosa_resnet34")
def lfosa_resnet34(num_classes: int, in_channels: int = 3, width: int = 64, bottleneck: int = 2,
                   dropout: float = 0.0) -> BottleneckResNet:
    """LfOSA's ResNet-34 (3-4-6-3 BasicBlocks)."""
    return BottleneckResNet(RESNET34_BLOCKS, num_classes, in_channels, width, bottleneck, dropout)

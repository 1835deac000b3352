"""The loss-prediction module of LL4AL (Yoo & Kweon, CVPR'19, Fig. 3)."""

import torch
from torch import nn

from models.registry import register_model


class LossNet(nn.Module):
    """Per stage: global average pool -> Linear(C_i -> hidden) -> ReLU; concatenate; Linear -> 1.

    LL4AL pools with fixed kernels sized for 32x32 inputs; global pooling is the same there and
    also right for other input sizes.
    """

    def __init__(self, stage_channels=(64, 128, 256, 512), hidden=128):
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(c, hidden) for c in stage_channels)
        self.linear = nn.Linear(hidden * len(stage_channels), 1)

    def forward(self, stages):
        pooled = [torch.relu(fc(torch.flatten(nn.functional.adaptive_avg_pool2d(f, 1), 1)))
                  for fc, f in zip(self.fcs, stages)]
        return self.linear(torch.cat(pooled, 1)).squeeze(1)


@register_model("lossnet", kind="head")
def lossnet(num_classes: int | None = None, in_channels: int | None = None, *,
            stage_channels: tuple[int, ...] = (64, 128, 256, 512), hidden: int = 128) -> LossNet:
    """LossNet over a trunk's stages (pass the trunk's ``stage_channels``; the default is a
    width-64 ResNet's); ``num_classes`` and ``in_channels`` are unused."""
    return LossNet(stage_channels, hidden)

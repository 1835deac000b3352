"""The loss-prediction module of LL4AL (Yoo & Kweon, CVPR'19, Fig. 3)."""

import torch
from torch import nn


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

"""LeNet as in the 20-strategy toolkit (spec 003, section 3): conv 5x5 (10) -> max-pool -> ReLU ->
conv 5x5 (20) -> channel dropout 0.5 -> max-pool -> ReLU -> fc 50 -> ReLU -> dropout 0.5 -> fc C.
The 50-d hidden layer is the embedding. Made for 28x28 inputs (320 features after the convs);
other sizes work as long as the second conv still fits (>= 16x16). The flattened conv output, the
toolkit's and WAAL's ``feature_extractor`` (Net1_fea), is what WAAL's critic reads (``conv_features``)."""

import torch
from torch import nn

from models.layers import ConsistentDropout
from models.output import ModelOutput
from models.registry import register_model


@register_model("lenet")
class LeNet(nn.Module):
    HEADS = ("fc2",)

    def __init__(self, num_classes=10, in_channels=1, image_size=28):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 10, 5)
        self.conv2 = nn.Conv2d(10, 20, 5)
        self.conv2_drop = ConsistentDropout(0.5, channels=True)
        side = ((image_size - 4) // 2 - 4) // 2
        self.fc1 = nn.Linear(20 * side * side, 50)
        self.fc_drop = ConsistentDropout(0.5)
        self.fc2 = nn.Linear(50, num_classes)
        self.feature_dim = 50
        self.conv_feature_dim = 20 * side * side
        self.stage_channels = (10, 20)

    def reset_heads(self, num_classes):
        self.fc2 = nn.Linear(50, num_classes)

    def mc_trunk(self, x):
        """The deterministic part before the first dropout (computed once for K MC passes)."""
        return torch.relu(nn.functional.max_pool2d(self.conv1(x), 2))

    def mc_head(self, h):
        h2 = torch.relu(nn.functional.max_pool2d(self.conv2_drop(self.conv2(h)), 2))
        features = torch.relu(self.fc1(torch.flatten(h2, 1)))
        return ModelOutput(self.fc2(self.fc_drop(features)), features, None, [h, h2])

    def forward(self, x):
        return self.mc_head(self.mc_trunk(x))

    @staticmethod
    def conv_features(out: ModelOutput) -> torch.Tensor:
        """The flattened output of the convolutions (after conv2's dropout, pooling and ReLU), [B, 320] on
        28x28 inputs: the input of fc1, read from a forward pass's last stage."""
        return torch.flatten(out.stages[-1], 1)

"""ResNets used by the TOD and LL4AL scripts (and by any later script that needs them).

* ``CifarResNet``: 3x3 stem, no max-pool, four stages of BasicBlocks (He et al., 2016, in the
  CIFAR form used by TOD and LL4AL). Two linear heads on the pooled feature: ``linear`` (the
  classifier) and ``linear1`` (TOD's consistency head, used only by the COD auxiliary loss).
* ``ImageNetResNet18``: the torchvision ImageNet ResNet-18 trunk used for Caltech-101, with the
  same two heads; ``load_imagenet_trunk`` copies the stem and layer1-3 of the published weights.

Both return a :class:`models.ModelOutput` (logits, pooled feature, consistency logits, the four
stage outputs).
"""

import os

import torch
from torch import nn
from torchvision.models import resnet18 as tv_resnet18
from torchvision.models.resnet import BasicBlock

from models.layers import ConsistentDropout
from models.output import ModelOutput
from models.registry import register_model
from utils.core.errors import UserError
from utils.core.results import load_tensors

IMAGENET_RESNET18_URL = "https://download.pytorch.org/models/resnet18-5c106cde.pth"
RESNET18_BLOCKS = (2, 2, 2, 2)  # BasicBlocks per stage
RESNET34_BLOCKS = (3, 4, 6, 3)
WHOLE_TRUNK = ("layer1", "layer2", "layer3", "layer4")


def _stage(inplanes, planes, blocks, stride):
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
        )
    layers = [BasicBlock(inplanes, planes, stride, downsample)]
    layers += [BasicBlock(planes, planes) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class _TwoHeadResNet(nn.Module):
    """Shared forward: stem -> layer1..4 -> average pool -> [dropout] -> heads. ``pool`` None is
    global average pooling; an int is a fixed kernel (the toolkit's ResNet18_64). Subclasses
    set ``stem``, ``layer1..4``, ``pool``, ``dropout``, ``linear`` and ``linear1``."""

    HEADS = ("linear", "linear1")

    def reset_heads(self, num_classes):
        """Fresh heads with ``num_classes`` outputs (DeepCluster re-creates them per clustering)."""
        self.linear = nn.Linear(self.feature_dim, num_classes)
        if self.linear1 is not None:
            self.linear1 = nn.Linear(self.feature_dim, num_classes)

    def _pool(self, x):
        if self.pool is None:
            return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return torch.flatten(nn.functional.avg_pool2d(x, self.pool), 1)

    def _heads(self, features, stages=None):
        hidden = self.dropout(features) if self.dropout is not None else features
        cons_logits = self.linear1(features) if self.linear1 is not None else None
        return ModelOutput(self.linear(hidden), features, cons_logits, stages)

    def mc_trunk(self, x):
        """Everything before the dropout: computed once for K MC-dropout passes."""
        for layer in (self.stem, self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
        return self._pool(x)

    def mc_head(self, features):
        return self._heads(features)

    def forward(self, x):
        x = self.stem(x)
        stages = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            stages.append(x)
        return self._heads(self._pool(x), stages)


class CifarResNet(_TwoHeadResNet):
    """CIFAR ResNet; ``width`` is the channel count of the first stage (64 in the paper, 16 in
    the toolkit's slim ResNets); ``dropout`` > 0 adds dropout before the classifier (MC-dropout
    strategies); ``pool`` (with ``image_size``) fixes the pooling kernel."""

    def __init__(self, blocks, num_classes, in_channels=3, width=64, consistency_head=True, dropout=0.0,
                 pool=None, image_size=32):
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )
        self.layer1 = _stage(width, widths[0], blocks[0], 1)
        self.layer2 = _stage(widths[0], widths[1], blocks[1], 2)
        self.layer3 = _stage(widths[1], widths[2], blocks[2], 2)
        self.layer4 = _stage(widths[2], widths[3], blocks[3], 2)
        self.stage_channels = widths
        self.pool = pool
        self.feature_dim = widths[3] * (max(1, image_size // 8 // pool) ** 2 if pool else 1)
        self.dropout = ConsistentDropout(dropout) if dropout else None
        self.linear = nn.Linear(self.feature_dim, num_classes)
        self.linear1 = nn.Linear(self.feature_dim, num_classes) if consistency_head else None


class ImageNetResNet18(_TwoHeadResNet):
    """torchvision's ImageNet ResNet-18 trunk (7x7 stem + max-pool) with the two TOD heads;
    ``dropout`` > 0 adds dropout before the classifier (MC-dropout strategies)."""

    def __init__(self, num_classes, in_channels=3, consistency_head=True, dropout=0.0):
        super().__init__()
        trunk = tv_resnet18()  # Kaiming-normal(fan_out) convs, BN weight 1 / bias 0
        if in_channels != 3:
            trunk.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.stem = nn.Sequential(trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4
        self.stage_channels = [64, 128, 256, 512]
        self.feature_dim = 512
        self.pool, self.dropout = None, ConsistentDropout(dropout) if dropout else None
        self.linear = nn.Linear(512, num_classes)
        self.linear1 = nn.Linear(512, num_classes) if consistency_head else None

    def load_imagenet_trunk(self, path, stages=("layer1", "layer2", "layer3")):
        """Copy the stem and ``stages`` (BN running statistics included) from torchvision's
        ``resnet18-5c106cde.pth``; the default leaves layer4 and both heads at their random init, as
        TOD does. Returns the names of the loaded tensors."""
        if not os.path.isfile(path):
            raise UserError(
                f"ImageNet ResNet-18 weights not found at {path}: download {IMAGENET_RESNET18_URL} "
                "and put it there (or pass --set PRETRAINED=PATH)"
            )
        state = load_tensors(path, "ImageNet weights file", f"download it again from {IMAGENET_RESNET18_URL}")
        renames = {"conv1.": "stem.0.", "bn1.": "stem.1."}
        own = self.state_dict()
        loaded = {}
        for key, value in state.items():
            if not key.startswith(("conv1.", "bn1.", *(f"{stage}." for stage in stages))):
                continue
            for old, new in renames.items():
                if key.startswith(old):
                    key = new + key[len(old):]
            if key in own and own[key].shape == value.shape:
                loaded[key] = value
        if not loaded:
            raise UserError(f"{path} holds no ResNet-18 trunk weights; download {IMAGENET_RESNET18_URL}")
        self.load_state_dict(loaded, strict=False)
        return sorted(loaded)


@register_model("resnet18")
def resnet18(num_classes: int, in_channels: int = 3, width: int = 64, consistency_head: bool = True,
             **options) -> CifarResNet:
    """CIFAR ResNet-18; ``options``: ``dropout``, ``pool``, ``image_size`` (see CifarResNet)."""
    return CifarResNet(RESNET18_BLOCKS, num_classes, in_channels, width, consistency_head, **options)


@register_model("resnet34")
def resnet34(num_classes: int, in_channels: int = 3, width: int = 64, consistency_head: bool = True,
             **options) -> CifarResNet:
    """CIFAR ResNet-34; ``options`` as for resnet18."""
    return CifarResNet(RESNET34_BLOCKS, num_classes, in_channels, width, consistency_head, **options)


@register_model("imagenet_resnet18")
def imagenet_resnet18(num_classes: int, in_channels: int = 3, width: int | None = None,
                      consistency_head: bool = True, dropout: float = 0.0) -> ImageNetResNet18:
    """ImageNet ResNet-18; ``width`` is accepted (configs pass it) but does not apply."""
    return ImageNetResNet18(num_classes, in_channels, consistency_head, dropout)

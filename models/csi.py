"""CSI's ResNet-18 (Tack et al., NeurIPS'20), the encoder of CCAL (spec 002 A.3).

The CIFAR ResNet-18 trunk of ``models.resnet`` on inputs mapped to (x - 0.5) / 0.5, the pooled
feature h (512-d), a projection head z = W2 ReLU(W1 h) (512 -> 512 -> 128) and, for the
distinctive encoder, a shift classifier with K_shift outputs (4 rotations).
"""

from typing import NamedTuple

import torch
from torch import nn

from models.registry import register_model
from models.resnet import RESNET18_BLOCKS, CifarResNet
from utils.core.errors import UserError


class CSIOutput(NamedTuple):
    features: torch.Tensor  # h, [B, 512]
    simclr: torch.Tensor  # z, [B, simclr_dim], not normalised
    shift: torch.Tensor | None  # [B, K_shift] shift logits (None without a shift head)


class CSIResNet(CifarResNet):
    def __init__(self, in_channels=3, width=64, simclr_dim=128, k_shift=1):
        super().__init__(RESNET18_BLOCKS, 1, in_channels, width, consistency_head=False)
        self.linear = None  # CSI's linear probe is not trained here (see the README's fidelity notes)
        self.simclr_layer = nn.Sequential(nn.Linear(self.feature_dim, self.feature_dim), nn.ReLU(),
                                          nn.Linear(self.feature_dim, simclr_dim))
        self.shift_cls_layer = nn.Linear(self.feature_dim, k_shift) if k_shift > 1 else None

    def forward(self, x):
        h = self.mc_trunk((x - 0.5) / 0.5)  # stem, layer1-4, global average pooling
        shift = self.shift_cls_layer(h) if self.shift_cls_layer is not None else None
        return CSIOutput(h, self.simclr_layer(h), shift)

    @classmethod
    def from_state_dict(cls, state, path):
        """The encoder a contrast_main.py checkpoint holds (shapes read from the weights)."""
        try:
            stem = state["stem.0.weight"]
            model = cls(stem.shape[1], stem.shape[0], state["simclr_layer.2.weight"].shape[0],
                        state["shift_cls_layer.weight"].shape[0] if "shift_cls_layer.weight" in state else 1)
            model.load_state_dict(state)
        except (KeyError, RuntimeError, AttributeError, IndexError) as exc:
            raise UserError(f"{path} is not an encoder saved by contrast_main.py ({str(exc).splitlines()[0]}); "
                            "train one with contrast_main.py") from None
        return model


@register_model("csi_resnet18", kind="encoder")
def csi_resnet18(num_classes: int | None, in_channels: int = 3, width: int = 64, simclr_dim: int = 128,
                 k_shift: int = 1) -> CSIResNet:
    """CSI's encoder; ``num_classes`` is ignored (no class head: it returns a CSIOutput)."""
    return CSIResNet(in_channels, width, simclr_dim, k_shift)

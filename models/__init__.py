"""The networks and their registry: ``build_model(name, num_classes, in_channels, **options)``,
``list_models(kind)``, ``@register_model(name, kind=...)`` (see models.registry)."""

from torch import nn

from models import cifar_cnn, csi, lenet, lfosa, lossnet, resnet  # noqa: F401 (their builders register on import)
from models.cifar_cnn import CifarCNN
from models.layers import ConsistentDropout
from models.lenet import LeNet
from models.lossnet import LossNet
from models.output import ModelOutput
from models.registry import MODEL_KINDS, build_model, list_models, register_model


def model_from_config(cfg, data, consistency_head: bool = True, pretrained: bool = False) -> nn.Module:
    """The classifier a TOD-style config names (MODEL, WIDTH; PRETRAINED when ``pretrained``)
    for ``data``'s classes and input channels; ``cfg``: the settings (or any mapping with those keys)."""
    return build_model(cfg["MODEL"], data.num_classes, data.in_channels, cfg["PRETRAINED"] if pretrained else None,
                       width=cfg["WIDTH"], consistency_head=consistency_head)


__all__ = ["MODEL_KINDS", "CifarCNN", "ConsistentDropout", "LeNet", "LossNet", "ModelOutput", "build_model",
           "list_models", "model_from_config", "register_model"]

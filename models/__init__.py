"""Model registry: ``build_model(name, num_classes, in_channels, **options)``."""

from models.cifar_cnn import CifarCNN
from models.layers import ConsistentDropout
from models.lenet import LeNet
from models.lossnet import LossNet
from models.output import ModelOutput
from models.resnet import ImageNetResNet18, resnet18, resnet34
from utils.core.cli import UserError

MODELS = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "imagenet_resnet18": lambda num_classes, in_channels=3, width=None, consistency_head=True:
        ImageNetResNet18(num_classes, in_channels, consistency_head),  # width does not apply
    "lenet": lambda num_classes, in_channels=1, image_size=28: LeNet(num_classes, in_channels, image_size),
    "cifar_cnn": lambda num_classes, in_channels=3, l2_normalize=True: CifarCNN(num_classes, in_channels, l2_normalize),
}


def list_models():
    return sorted(MODELS)


def build_model(name, num_classes, in_channels=3, pretrained=None, **options):
    """Model ``name``; ``pretrained``: ImageNet weights for the trunk (imagenet_resnet18)."""
    key = name.lower()
    if key not in MODELS:
        raise UserError(f"unknown model {name!r}; choose from {', '.join(list_models())}")
    model = MODELS[key](num_classes, in_channels, **options)
    if pretrained:
        if not hasattr(model, "load_imagenet_trunk"):
            raise UserError(f"model {name} takes no ImageNet weights; unset PRETRAINED")
        model.load_imagenet_trunk(pretrained)
    return model


def model_from_config(cfg, data, consistency_head=True, pretrained=False):
    """The classifier a TOD-style config names (MODEL, WIDTH; PRETRAINED when ``pretrained``)
    for ``data``'s classes and input channels."""
    return build_model(cfg["MODEL"], data.num_classes, data.in_channels, cfg["PRETRAINED"] if pretrained else None,
                       width=cfg["WIDTH"], consistency_head=consistency_head)


__all__ = ["CifarCNN", "ConsistentDropout", "LeNet", "LossNet", "ModelOutput", "build_model", "list_models",
           "model_from_config"]

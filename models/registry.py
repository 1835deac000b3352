"""The model registry: networks register a builder next to their definition with
``@register_model(name, kind=...)``; scripts build them by name with ``build_model``.

A builder is called as ``builder(num_classes, in_channels, **options)`` and returns the
network. Kinds: ``classifier`` (returns a :class:`models.ModelOutput`), ``encoder`` (no class
head; ``num_classes`` is ignored) and ``head`` (reads another network's output; ``num_classes``
and ``in_channels`` are ignored).
"""

from collections.abc import Callable
from typing import NamedTuple, TypeVar

from torch import nn

from utils.core.errors import UserError
from utils.core.registry import Registry

MODEL_KINDS = ("classifier", "encoder", "head")

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])


class _Entry(NamedTuple):
    builder: Callable[..., nn.Module]
    kind: str


_REGISTRY = Registry("model")


def _check_kind(kind: str) -> None:
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; choose from {', '.join(MODEL_KINDS)}")


def register_model(name: str, *, kind: str = "classifier") -> Callable[[Builder], Builder]:
    """Register the decorated builder (a function or class) under ``name`` (lower-cased);
    a name registered twice raises ValueError. The builder is returned unchanged."""
    _check_kind(kind)
    key = name.lower()

    def decorate(builder: Builder) -> Builder:
        _REGISTRY.add(key, _Entry(builder, kind))
        return builder
    return decorate


def list_models(kind: str | None = None) -> list[str]:
    """The registered names (sorted), only those of ``kind`` if given."""
    if kind is not None:
        _check_kind(kind)
    return sorted(key for key, entry in _REGISTRY.items() if kind is None or entry.kind == kind)


def build_model(name: str, num_classes: int | None, in_channels: int = 3, pretrained: str | None = None,
                **options) -> nn.Module:
    """Model ``name`` (any case) built with ``options``; ``pretrained``: ImageNet weights for the
    trunk of models that have ``load_imagenet_trunk`` (imagenet_resnet18)."""
    model = _REGISTRY.find(name, list_models()).builder(num_classes, in_channels, **options)
    if pretrained:
        if not hasattr(model, "load_imagenet_trunk"):
            raise UserError(f"model {name} takes no ImageNet weights; unset PRETRAINED")
        model.load_imagenet_trunk(pretrained)
    return model

"""Model shapes, heads, the ImageNet trunk loading and the loss-prediction module."""

import pytest
import torch
from conftest import make_imagenet_weights

from models import LossNet, build_model, list_models
from utils.core.cli import UserError


def test_cifar_resnet18_returns_logits_features_consistency_and_stages():
    model = build_model("resnet18", num_classes=10).eval()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.logits.shape == (2, 10) and out.cons_logits.shape == (2, 10) and out.features.shape == (2, 512)
    assert [tuple(s.shape[1:]) for s in out.stages] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]
    assert not torch.equal(out.logits, out.cons_logits)  # two independent heads
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(11.18e6, rel=0.01)


def test_inputs_follow_the_dataset_and_heads_are_optional():
    model = build_model("resnet34", 7, in_channels=1, width=8, consistency_head=False).eval()
    out = model(torch.randn(3, 1, 8, 8))
    assert out.logits.shape == (3, 7) and out.cons_logits is None and out.features.shape == (3, 64)
    assert "resnet34" in list_models()
    with pytest.raises(UserError, match="choose from"):
        build_model("vgg11", 10)


def test_imagenet_resnet18_loads_stem_and_layers_1_to_3_only(tmp_path):
    weights = make_imagenet_weights(str(tmp_path / "resnet18-5c106cde.pth"))
    reference = torch.load(weights, weights_only=True)
    model = build_model("imagenet_resnet18", 101, pretrained=weights)
    state = model.state_dict()
    assert torch.equal(state["stem.0.weight"], reference["conv1.weight"])
    assert torch.equal(state["layer3.1.bn2.running_var"], reference["layer3.1.bn2.running_var"])
    assert not torch.equal(state["layer4.0.conv1.weight"], reference["layer4.0.conv1.weight"])  # random, as TOD
    out = model.eval()(torch.randn(1, 3, 224, 224))
    assert out.logits.shape == (1, 101) and [s.shape[-1] for s in out.stages] == [56, 28, 14, 7]


def test_missing_or_broken_imagenet_weights_say_where_to_put_them(tmp_path):
    with pytest.raises(UserError, match="resnet18-5c106cde.pth"):
        build_model("imagenet_resnet18", 10, pretrained=str(tmp_path / "resnet18-5c106cde.pth"))
    broken = tmp_path / "broken.pth"
    broken.write_text("<html>not found</html>")
    with pytest.raises(UserError, match="download it again"):
        build_model("imagenet_resnet18", 10, pretrained=str(broken))


def test_lossnet_pools_stage_maps_of_any_size():
    module = LossNet((4, 8))
    small = module([torch.randn(6, 4, 8, 8), torch.randn(6, 8, 4, 4)])
    large = module([torch.randn(6, 4, 56, 56), torch.randn(6, 8, 28, 28)])
    assert small.shape == large.shape == (6,)
    constant = [torch.ones(1, 4, 8, 8), torch.ones(1, 8, 4, 4)]
    assert torch.allclose(module(constant), module([c[..., :2, :2] for c in constant]))  # global average

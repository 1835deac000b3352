"""Model shapes, heads, the ImageNet trunk loading and the loss-prediction module."""

from types import SimpleNamespace

import pytest
import torch
from conftest import make_imagenet_weights

from models import MODEL_KINDS, LossNet, build_model, list_models, model_from_config, register_model
from models.lfosa import BottleneckResNet
from models.resnet import CifarResNet
from utils.core.errors import UserError

# Every registered model needs a row: its input [C, H, W] (None for heads: they read the stages
# of a resnet18 forward pass) and its build options (small widths keep the test fast).
FORWARD_INPUTS = {
    "resnet18": ((3, 32, 32), {"width": 8}),
    "resnet34": ((3, 32, 32), {"width": 8}),
    "imagenet_resnet18": ((3, 32, 32), {}),
    "lenet": ((1, 28, 28), {}),
    "cifar_cnn": ((3, 32, 32), {}),
    "csi_resnet18": ((3, 32, 32), {"width": 8, "simclr_dim": 16, "k_shift": 4}),
    "lfosa_resnet18": ((3, 32, 32), {"width": 8}),
    "lfosa_resnet34": ((3, 32, 32), {"width": 8, "dropout": 0.2}),
    "lossnet": (None, {}),
}


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


def _kind(name):
    return next(kind for kind in MODEL_KINDS if name in list_models(kind))


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_runs_a_forward_pass(name):
    assert name in FORWARD_INPUTS, (f"model {name!r} is registered but has no row in FORWARD_INPUTS "
                                    "(tests/test_models.py): add its input shape and options")
    shape, options = FORWARD_INPUTS[name]
    torch.manual_seed(0)
    kind = _kind(name)
    if kind == "head":
        stages = build_model("resnet18", 10).eval()(torch.randn(2, 3, 32, 32)).stages
        assert build_model(name, None, **options).eval()(stages).shape == (2,)
        return
    out = build_model(name, 10, shape[0], **options).eval()(torch.randn(2, *shape))
    assert out.features.ndim == 2 and out.features.shape[0] == 2
    if kind == "classifier":
        assert out.logits.shape == (2, 10)
    else:  # encoder: the projection output (and the shift logits CSI was asked for)
        assert out.simclr.shape == (2, options["simclr_dim"]) and out.shift.shape == (2, options["k_shift"])


@pytest.mark.parametrize("name, direct", [
    ("resnet18", lambda: CifarResNet([2, 2, 2, 2], 10)),
    ("lfosa_resnet18", lambda: BottleneckResNet([2, 2, 2, 2], 10)),
])
def test_registry_builds_the_same_weights_as_the_class(name, direct):
    torch.manual_seed(3)
    built = build_model(name, 10).state_dict()
    torch.manual_seed(3)
    expected = direct().state_dict()
    assert list(built) == list(expected)
    assert all(torch.equal(built[key], expected[key]) for key in expected)


def test_duplicate_names_and_unknown_kinds_are_refused():
    with pytest.raises(ValueError, match="registered twice"):
        register_model("ResNet18")(CifarResNet)  # names ignore case
    with pytest.raises(ValueError, match="unknown model kind"):
        register_model("some_net", kind="backbone")
    assert "some_net" not in list_models()


def test_unknown_model_lists_every_name_and_lookup_ignores_case():
    with pytest.raises(UserError) as error:
        build_model("vgg11", 10)
    message = str(error.value)
    assert "\n" not in message and all(name in message for name in list_models())
    assert isinstance(build_model("LeNet", 10, 1), type(build_model("lenet", 10, 1)))


def test_kinds_filter_the_list():
    classifiers = list_models(kind="classifier")
    assert "csi_resnet18" not in classifiers and "lossnet" not in classifiers
    assert {"resnet18", "lfosa_resnet34", "lenet"} <= set(classifiers)
    assert list_models("encoder") == ["csi_resnet18"] and list_models("head") == ["lossnet"]
    assert sorted(sum((list_models(kind) for kind in MODEL_KINDS), [])) == list_models()


def test_model_from_config_reads_the_settings():
    data = SimpleNamespace(num_classes=5, in_channels=1)
    settings = {"MODEL": "ResNet18", "WIDTH": 8, "PRETRAINED": "unused.pth"}
    for cfg in (settings,):
        model = model_from_config(cfg, data, consistency_head=False)
        assert isinstance(model, CifarResNet) and model.stage_channels == [8, 16, 32, 64] and model.linear1 is None
        assert model.eval()(torch.randn(1, 1, 8, 8)).logits.shape == (1, 5)


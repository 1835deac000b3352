"""The adversarial strategies (DFAL's DeepFool and the toolkit's BIM) on models whose decision
boundaries are known in closed form, and through the registry on hand-made models."""

import numpy as np
import pytest
import torch
from torch import nn

import utils.samplers.adversarial  # noqa: F401  (registration)
from models import ModelOutput
from utils.core.data import BatchTransform, ImageData, TensorImages
from utils.core.distributed import Dist
from utils.samplers.adversarial import bim_norms, deepfool_norms
from utils.samplers.registry import QueryContext, get_strategy, top_k


def linear(weight, bias):
    return lambda x: x.flatten(1) @ weight.T + bias


def boundary_distances(weight, bias, x):
    """[N, C]: |(w_k - w_y)x + b_k - b_y| / ||w_k - w_y||, the distance to the boundary between the
    predicted class y and class k (inf at k = y)."""
    logits = linear(weight, bias)(x)
    label = logits.argmax(1)
    dist = (logits - logits.gather(1, label[:, None])).abs() / (weight[None] - weight[label][:, None]).norm(dim=2)
    return dist.scatter(1, label[:, None], float("inf")), label


class LinearNet(nn.Module):
    """Logits = W x + b on the flattened input."""

    def __init__(self, weight, bias):
        super().__init__()
        weight, bias = torch.as_tensor(weight), torch.as_tensor(bias)
        self.fc = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
            self.fc.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))

    def forward(self, x):
        logits = self.fc(x.flatten(1))
        return ModelOutput(logits, x.flatten(1))


def pixel_data(pixels, std=1 / 255):
    """1x1x2 images; the model sees pixel / (255 std) (raw pixel values by default)."""
    images = torch.tensor(pixels, dtype=torch.uint8).view(-1, 1, 1, 2)
    dataset = TensorImages(images, [0] * len(pixels))
    view = BatchTransform((0.0,), (std,))
    n = len(pixels)
    return ImageData("tiny", dataset, dataset, 3, 1, 1, view, view, np.arange(n), np.arange(n))


def context(model, data, candidates, query_size, batch_size=3):
    return QueryContext(model, data, np.array([], dtype=np.int64), np.asarray(candidates), query_size, Dist(),
                        batch_size=batch_size, rng=np.random.default_rng(0))


def test_deepfool_on_a_linear_model_is_the_distance_to_the_nearest_boundary():
    # at the origin class 0 wins; the boundaries with classes 1, 2, 3 are 1, 3 and 2 away: the last class is
    # not the nearest, so a running minimum that is never updated (the toolkit's bug) would step 2 * 1.02
    weight = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    bias = torch.tensor([0.0, -1.0, -3.0, -2.0], dtype=torch.float64)
    norms = deepfool_norms(linear(weight, bias), torch.zeros(1, 2, dtype=torch.float64))
    assert norms.tolist() == pytest.approx([1.02])
    assert deepfool_norms(linear(weight, bias), torch.zeros(1, 2, dtype=torch.float64), overshoot=0.5).item() == (
        pytest.approx(1.5))

    # random 5-class model in 6-D: the norm is (1 + overshoot) min_k distance, wherever the nearest class is
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(5, 6, generator=gen, dtype=torch.float64)
    bias = torch.randn(5, generator=gen, dtype=torch.float64)
    x = 2 * torch.randn(300, 6, generator=gen, dtype=torch.float64)
    dist, label = boundary_distances(weight, bias, x)
    nearest = dist.min(dim=1).values
    last = torch.where(label == 4, dist[:, 3], dist[:, 4])  # the last class other than the prediction
    assert (nearest < 0.9 * last).sum() > 100  # the bug would be visible on these
    assert len(set(dist.argmin(dim=1).tolist())) == 5
    torch.testing.assert_close(deepfool_norms(linear(weight, bias), x), 1.02 * nearest)


def test_deepfool_queries_the_points_nearest_a_boundary_first():
    # logits (0, a - 100, c - 100) on the pixels (a, c): distance min(100 - a, 100 - c) while class 0 wins
    model = LinearNet([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], [0.0, -100.0, -100.0])
    pixels = [[10, 20], [95, 0], [0, 90], [50, 50], [0, 98], [70, 10], [103, 0], [0, 0]]
    # distances:  80,     5,       10,      50,       2,       30,       3 (class 1 wins), 100
    strategy = get_strategy("dfal")
    assert strategy.name == "AdversarialDeepFool"
    assert sorted(strategy.select(context(model, pixel_data(pixels), range(8), 3)).tolist()) == [1, 4, 6]
    scores = strategy.scores(context(model, pixel_data(pixels), range(8), 3))
    expected = torch.tensor([80.0, 5, 10, 50, 2, 30, 3, 100])
    torch.testing.assert_close(scores, -1.02 * expected, rtol=1e-5, atol=1e-4)
    # candidates are dataset indices: only some of the pool, in any order
    assert sorted(strategy.select(context(model, pixel_data(pixels), [7, 0, 2, 3, 5], 2)).tolist()) == [2, 5]


def test_bim_steps_grow_with_the_distance_to_the_boundary():
    # two classes, logits (0, w.x + b): each step moves the margin by 0.05 ||w||_1 = 0.175 towards the
    # boundary and eta by 0.05 along the 3 non-zero coordinates of sign(w), so ||eta|| = 0.05 sqrt(3) steps
    weight = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, -2.0, 0.5, 0.0]], dtype=torch.float64)
    bias = torch.tensor([0.0, 0.01], dtype=torch.float64)
    margins = torch.tensor([0.3, -1.0, 2.0, -0.05, 5.0, 40.0], dtype=torch.float64)  # w.x + b
    x = (margins - 0.01)[:, None] * torch.tensor([1.0, 0.0, 0.0, 7.0], dtype=torch.float64)
    steps = torch.clamp(torch.floor(margins.abs() / 0.175) + 1, max=100)  # the last one is capped at 100
    norms = bim_norms(linear(weight, bias), x)
    torch.testing.assert_close(norms, 0.05 * 3**0.5 * steps)
    assert norms.argsort().tolist() == margins.abs().argsort().tolist()

    # the registered strategy: pixels seen as pixel / 10, boundary at pixel 100.1 of the first channel
    model = LinearNet([[0.0, 0.0], [-1.0, 0.0]], [0.0, 10.01])
    pixels = [[80, 0], [99, 9], [90, 0], [103, 0], [97, 200]]  # 41, 3, 21, 6 (class 0 wins) and 7 steps
    data = pixel_data(pixels, std=10 / 255)
    strategy = get_strategy("BIM")
    assert strategy.name == "AdversarialBIM"
    scores = strategy.scores(context(model, data, range(5), 2))
    torch.testing.assert_close(scores, -0.05**2 * torch.tensor([41.0, 3, 21, 6, 7]) ** 2, rtol=1e-5, atol=1e-5)
    assert sorted(strategy.select(context(model, data, range(5), 2)).tolist()) == [1, 3]


def test_samples_without_a_gradient_towards_another_class_are_queried_last():
    # logits (0.5, relu(x_1)): for x_1 < 0 no step can be computed; x_1 = 0.32 is 0.18 from the boundary
    def model_fn(x):
        return torch.stack([torch.full_like(x[:, 0], 0.5), torch.relu(x[:, 0])], dim=1)

    x = torch.tensor([[-1.0, 0.0], [0.32, 0.0]], dtype=torch.float64)
    assert deepfool_norms(model_fn, x).tolist() == pytest.approx([float("inf"), 0.18 * 1.02])
    assert bim_norms(model_fn, x).tolist() == pytest.approx([float("inf"), 0.05 * 4])


def small_net(seed):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Tanh(), nn.Flatten(),
                        nn.Linear(4 * 4 * 4, 6)).double()
    with torch.no_grad():
        net[1].running_mean.normal_()
        net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.mark.parametrize("attack", [deepfool_norms, bim_norms])
def test_batched_attacks_equal_per_sample_attacks(attack):
    net = small_net(0)
    seen = []

    def model_fn(x):
        seen.append(len(x))
        return net(x)

    x = torch.randn(8, 2, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    batched = attack(model_fn, x)
    assert any(0 < size < len(x) for size in seen)  # samples flipped at different iterations
    assert seen == sorted(seen, reverse=True)  # flipped samples are no longer attacked
    single = torch.cat([attack(net, x[i:i + 1]) for i in range(len(x))])
    assert torch.isfinite(batched).all() and (batched > 0).all()
    torch.testing.assert_close(batched, single)


class TinyConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.dropout = nn.Dropout(0.5)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        features = self.body(x)
        return ModelOutput(self.head(self.dropout(features)), features)


def test_aliases():
    assert {get_strategy(n).name for n in ("deepfool", "DFAL", "adversarial_deepfool")} == {"AdversarialDeepFool"}
    assert {get_strategy(n).name for n in ("bim", "Adversarial_BIM")} == {"AdversarialBIM"}


@pytest.mark.parametrize("name", ["AdversarialDeepFool", "AdversarialBIM"])
def test_registered_strategies_leave_the_model_untouched(name):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (14, 3, 6, 6), dtype=torch.uint8)
    dataset = TensorImages(images, np.arange(14) % 3)
    view = BatchTransform((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    data = ImageData("tiny", dataset, dataset, 3, 3, 6, view, view, np.arange(14), np.arange(14))
    model = TinyConvNet().train()
    modes = []
    model.register_forward_pre_hook(lambda module, _inputs: modes.append(module.training))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    candidates = np.array([13, 2, 5, 7, 8, 0, 11, 4, 9, 3])
    chosen = get_strategy(name).select(context(model, data, candidates, 4, batch_size=4))
    assert len(set(chosen.tolist())) == 4 and set(chosen.tolist()) <= set(candidates.tolist())
    assert modes and not any(modes)  # attacked in eval mode ...
    assert all(m.training for m in model.modules())  # ... and the mode restored
    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics
    # the same query with another batch size (eval mode: no dropout, no batch statistics)
    scores = get_strategy(name).scores(context(model, data, candidates, 4, batch_size=3))
    assert torch.isfinite(scores).all() and (scores < 0).all()
    assert set(candidates[top_k(scores, 4)].tolist()) == set(chosen.tolist())

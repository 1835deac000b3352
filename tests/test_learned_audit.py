"""Audit findings 4 and 5 on the learned strategies: the GCN's layers start as the authors'
``GraphConvolution`` (SeqGCN), and WAAL's critic reads LeNet's 320-d convolutional features (the
authors' and the toolkit's feature extractor), in training and in the query."""

import math

import numpy as np
import pytest
import torch

from models import build_model
from models.gcn import GCN, FactorisedAdjacency, GraphConvolution
from models.lenet import LeNet
from models.waal import Critic, critic_input, critic_input_dim
from utils.core.data import BatchTransform, ImageData, TensorImages, augmented_batches
from utils.core.distributed import Dist
from utils.samplers import QueryContext, get_strategy, train_gcn
from utils.samplers.hooks import HookSettings, WAALHook

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- finding 4: the GCN's initialisation

def test_gcn_layers_start_uniform_within_one_over_sqrt_out_features_as_the_authors():
    torch.manual_seed(0)
    model = GCN(50, hidden=128)
    hidden_bound, out_bound = 1 / math.sqrt(128), 1.0  # SeqGCN: stdv = 1 / sqrt(weight.size(1)) = 1/sqrt(out)
    w1, b1, w2, b2 = model.gc1.weight, model.gc1.bias, model.gc2.weight, model.gc2.bias
    assert [tuple(p.shape) for p in model.parameters()] == [(50, 128), (128,), (128, 1), (1,)]  # W [in, out], bias
    for values, bound in ((w1, hidden_bound), (b1, hidden_bound), (w2, out_bound), (b2, out_bound)):
        assert values.abs().max() <= bound
    # the whole range is used (nn.Linear's default, +-1/sqrt(in), gives 0.141 for the first layer, 0.088 for the
    # second), with a uniform's spread bound / sqrt(3) and mean 0
    assert w1.abs().max() > 0.99 * hidden_bound and b1.abs().max() > 0.9 * hidden_bound
    assert w2.abs().max() > 0.9 * out_bound
    assert w1.std().item() == pytest.approx(hidden_bound / math.sqrt(3), rel=0.03)
    assert w2.std().item() == pytest.approx(out_bound / math.sqrt(3), rel=0.15)
    assert abs(w1.mean().item()) < 0.02 * hidden_bound


def test_gcn_initialisation_and_training_are_reproducible_from_the_seed():
    def build(seed):
        torch.manual_seed(seed)
        return [p.detach().clone() for p in GCN(16, hidden=32).parameters()]

    assert all(torch.equal(a, b) for a, b in zip(build(3), build(3)))
    assert not any(torch.equal(a, b) for a, b in zip(build(3), build(4)))
    torch.manual_seed(0)
    features = torch.randn(40, 16)
    is_labeled = torch.arange(40) < 10
    first, second, other = (train_gcn(features, is_labeled, hidden=32, epochs=20, seed=s)[1] for s in (5, 5, 6))
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not torch.equal(first[0], other[0])


def test_graph_convolution_is_adjacency_times_inputs_times_weight_plus_bias():
    torch.manual_seed(0)
    layer = GraphConvolution(6, 3)
    features, x = torch.randn(10, 4), torch.randn(10, 6)
    f = torch.nn.functional.normalize(features, dim=1)
    dense = f @ f.T - torch.eye(10)
    dense = dense / dense.sum(0, keepdim=True) + torch.eye(10)
    expected = dense @ (x @ layer.weight) + layer.bias
    assert torch.allclose(layer(x, FactorisedAdjacency(features)), expected, atol=1e-5)


# ---------------------------------------------------------------- finding 5: WAAL's critic on LeNet

def images_28(n=32, seed=0):
    """``n`` random 1x28x28 images in 10 classes; train set = test set."""
    generator = torch.Generator().manual_seed(seed)
    dataset = TensorImages(torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8, generator=generator),
                           torch.arange(n) % 10)
    transform = BatchTransform((0.5,), (0.25,))
    return ImageData("noise28", dataset, dataset, 10, 1, 28, transform, transform, np.arange(n), np.arange(n))


def waal_hook(model, data, n_labeled=8):
    settings = HookSettings(lr=0.05, momentum=0.9, weight_decay=0.0, grad_clip=None, in_channels=1,
                            image_size=28, device=torch.device("cpu"))
    return WAALHook(model, np.arange(n_labeled), np.arange(n_labeled, len(data.train)),
                    lambda indices: augmented_batches(data, indices, 8, Dist()), settings)


def lenet_conv_features(model, x):
    """Net1_fea of the WAAL code: relu(pool(conv1)), relu(pool(dropout2d(conv2))), flattened (eval: no dropout)."""
    h = torch.relu(torch.nn.functional.max_pool2d(model.conv1(x), 2))
    return torch.flatten(torch.relu(torch.nn.functional.max_pool2d(model.conv2(h), 2)), 1)


def test_waal_critic_reads_lenets_320_conv_features_and_strategies_keep_the_50_d_embedding():
    torch.manual_seed(0)
    model = LeNet(10, 1, 28).eval()
    hook = waal_hook(model, images_28())
    assert critic_input_dim(model) == 320 and hook.critic.net[0].in_features == 320
    x = torch.randn(5, 1, 28, 28)
    out = model(x)
    assert out.features.shape == (5, 50)  # what every other strategy sees is unchanged
    assert torch.allclose(critic_input(model, out), lenet_conv_features(model, x))
    resnet = build_model("resnet18", 10, width=8).eval()  # a ResNet's classifier reads its pooled embedding
    resnet_out = resnet(torch.randn(2, 3, 32, 32))
    assert critic_input_dim(resnet) == resnet.feature_dim == 64
    assert critic_input(resnet, resnet_out) is resnet_out.features


def test_waal_adversarial_term_trains_the_feature_extractor_not_the_hidden_layer():
    """The authors' Wasserstein term D(f(x_U)) - gamma D(f(x_L)) depends on the conv features f only, so fc1
    (inside the classifier head) gets no gradient from it; the critic step then uses those 320-d features."""
    torch.manual_seed(0)
    data = images_28()
    model = LeNet(10, 1, 28).train()
    hook = waal_hook(model, data)
    x = data.train_transform(data.train.images[:8])
    out = model(x)
    hook.extra_loss(model, out, x, data.train.targets[:8], 0).backward()
    assert model.fc1.weight.grad is None and model.fc2.weight.grad is None
    assert model.conv2.weight.grad.abs().sum() > 0 and model.conv1.weight.grad.abs().sum() > 0
    assert [tuple(z.shape) for z in hook.features] == [(8, 320), (8, 320)]
    before = hook.critic.net[0].weight.detach().clone()
    hook.step(out, 0)
    assert not torch.equal(before, hook.critic.net[0].weight)


def test_waal_query_scores_softmax_bound_minus_ten_critic_of_the_conv_features():
    torch.manual_seed(0)
    data = images_28(12)
    model = LeNet(10, 1, 28).eval()
    critic = Critic(320).eval()
    with torch.no_grad():  # d(x) = sigmoid(relu(conv feature 7) - 1): a critic whose output is known
        critic.net[0].weight.zero_()
        critic.net[0].bias.zero_()
        critic.net[0].weight[0, 7] = 1.0
        critic.net[3].weight.zero_()
        critic.net[3].weight[0, 0] = 1.0
        critic.net[3].bias.fill_(-1.0)
    candidates = np.array([1, 3, 4, 6, 8, 9, 10, 11])
    ctx = QueryContext(model, data, np.setdiff1d(data.train_idx, candidates), candidates, 3, Dist(), batch_size=4,
                       rng=np.random.default_rng(0), extras={"critic": critic})
    scores = get_strategy("WAAL").scores(ctx)
    with torch.no_grad():
        x = data.eval_transform(data.train.images[candidates])
        log_p = torch.log_softmax(model(x).logits, 1)
        d = torch.sigmoid(torch.relu(lenet_conv_features(model, x)[:, 7]) - 1)
    expected = -(0.5 * log_p.norm(dim=1) + 0.5 * (-log_p).sum(1) - 10 * d)
    assert torch.allclose(scores, expected, atol=1e-4)
    assert d.std() > 0  # the critic term really varies over the candidates
    chosen = get_strategy("WAAL").select(ctx)  # the smallest u - 10 d, as the authors' query
    assert chosen.tolist() == candidates[torch.argsort(-expected)[:3].numpy()].tolist()

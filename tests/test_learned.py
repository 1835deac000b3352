"""Strategies with networks of their own (issue #4): each trained part learns, the selection rules
give known answers, and every one runs through main_al.py under both protocols."""

import numpy as np
import pytest
import torch
from conftest import tiny_context, tiny_data

import main_al
from models.gcn import FactorisedAdjacency
from models.lenet import LeNet
from utils.core.data import BatchTransform, ImageData, TensorImages, augmented_batches
from utils.core.distributed import Dist
from utils.core.results import read_cycles
from utils.samplers import get_strategy, learned, train_gcn, waal_scores
from utils.samplers.hooks import HookSettings, LossPredictionHook, VAALHook, WAALHook
from utils.samplers.learned import asal_select, train_gan


def hook_inputs(data, lr=0.05):
    """(stream, settings) a protocol hands a training hook, for ``data`` on the CPU (a narrow VAE)."""
    settings = HookSettings(lr=lr, momentum=0.9, weight_decay=0.0, grad_clip=None, in_channels=data.in_channels,
                            image_size=data.image_size, device=torch.device("cpu"), params={"VAE_WIDTH": 8})
    return (lambda indices: augmented_batches(data, indices, 16, Dist())), settings


def blobs_data(n=64):
    """Labeled images are bright, unlabeled ones dark (1x8x8)."""
    generator = torch.Generator().manual_seed(0)
    bright = torch.randint(180, 256, (n // 2, 1, 8, 8), dtype=torch.uint8, generator=generator)
    dark = torch.randint(0, 60, (n // 2, 1, 8, 8), dtype=torch.uint8, generator=generator)
    dataset = TensorImages(torch.cat([bright, dark]), torch.zeros(n, dtype=torch.long))
    transform = BatchTransform((0.5,), (0.5,))
    return ImageData("blobs", dataset, dataset, 2, 1, 8, transform, transform, np.arange(n), np.arange(0))


def test_vaal_trains_the_vae_and_its_discriminator_separates_labeled_from_unlabeled():
    torch.manual_seed(0)
    data = blobs_data()
    hook = VAALHook(LeNet(2, 1, 28), np.arange(32), np.arange(32, 64), *hook_inputs(data))
    before = [p.detach().clone() for p in hook.vae.parameters()]
    hook.step(None, 0)  # 2 VAE steps and 1 discriminator step on the hook's own batches
    assert all(not torch.equal(a, b) for a, b in zip(before, hook.vae.parameters()))  # the VAE is updated

    def pixels(indices):
        return torch.nn.functional.interpolate(data.eval_transform(data.train.images[indices]), size=(32, 32),
                                               mode="bilinear")

    x_l, x_u = pixels(np.arange(32)), pixels(np.arange(32, 64))
    for _ in range(100):
        hook.discriminator_step(x_l, x_u)
    with torch.no_grad():  # (the VAE stays in training mode, as the discriminator saw it)
        labeled = hook.discriminator(hook.vae.encode(x_l)[0]).mean().item()
        unlabeled = hook.discriminator(hook.vae.encode(x_u)[0]).mean().item()
    assert labeled > 0.8 and unlabeled < 0.2, (labeled, unlabeled)


def test_waal_critic_learns_to_score_unlabeled_features_higher():
    torch.manual_seed(0)
    data = blobs_data()
    model = LeNet(2, 1, 28)
    hook = WAALHook(model, np.arange(32), np.arange(32, 64), *hook_inputs(data, lr=0.5))
    assert len(hook.train_indices(np.arange(10))) == 32  # the labeled set is cycled to the pool's size
    z_l, z_u = torch.randn(64, 320) + 2, torch.randn(64, 320) - 2
    for _ in range(300):
        hook.features = (z_l, z_u)
        hook.critic.train()
        hook.step(None, 0)
    hook.critic.eval()
    assert hook.critic(z_u).mean() > hook.critic(z_l).mean() + 0.5


def test_waal_score_combines_uncertainty_bound_and_critic():
    probs = torch.tensor([[0.5, 0.5], [0.9, 0.1], [0.9, 0.1]])
    critic = torch.tensor([0.0, 0.0, 0.5])
    scores = waal_scores(probs, critic)
    log_p = probs.log()
    expected = -(0.5 * log_p.norm(dim=1) + 0.5 * (-log_p).sum(1) - 10 * critic)
    assert torch.allclose(scores, expected)
    assert int(torch.argmax(scores)) == 2  # "looks unlabeled" to the critic wins


def test_loss_module_learns_to_rank_losses():
    torch.manual_seed(0)

    class Stages(torch.nn.Module):
        stage_channels = (4,)

    hook = LossPredictionHook(Stages(), np.arange(4), np.arange(4, 8), *hook_inputs(blobs_data(), lr=0.1))
    for _ in range(300):
        x = torch.randn(32, 4)
        out = type("Out", (), {"stages": [x[:, :, None, None]], "logits": torch.stack([x[:, 0], -x[:, 0]], 1)})
        loss = hook.extra_loss(None, out, None, torch.zeros(32, dtype=torch.long), 0)  # CE grows with x_0
        hook.zero_grad()
        loss.backward()
        hook.step(out, 0)
    x = torch.randn(200, 4)
    predicted = hook.module([x[:, :, None, None]])
    target = torch.nn.functional.cross_entropy(torch.stack([x[:, 0], -x[:, 0]], 1), torch.zeros(200, dtype=torch.long),
                                               reduction="none")
    agree = ((predicted[:, None] > predicted[None]) == (target[:, None] > target[None])).float().mean()
    assert agree > 0.9


def test_gcn_separates_labeled_from_unlabeled_nodes_and_its_graph_is_exact():
    torch.manual_seed(0)
    features = torch.cat([torch.randn(30, 16) + 3, torch.randn(60, 16) - 3])
    is_labeled = torch.zeros(90, dtype=torch.bool)
    is_labeled[:30] = True
    _, (probability, hidden, out) = train_gcn(features, is_labeled, epochs=200)
    assert probability[:30].mean() > 0.6 and probability[30:].mean() < 0.4
    f = torch.nn.functional.normalize(features[:20], dim=1)
    dense = f @ f.T - torch.eye(20)
    dense = dense / dense.sum(0, keepdim=True) + torch.eye(20)
    y = torch.randn(20, 3)
    assert torch.allclose(FactorisedAdjacency(features[:20]) @ y, dense @ y, atol=1e-4)


def fixed_gcn(monkeypatch, probability=None, hidden=None, out=None):
    """Replace ``train_gcn`` (as ``_gcn_nodes`` calls it) by one that returns the given per-node outputs (labeled
    nodes first, then the candidates in order); records the arguments of every call."""
    calls = []

    def train(features, is_labeled, **options):
        calls.append((features, is_labeled, options))
        n = len(features)
        return None, (torch.zeros(n) if probability is None else probability,
                      torch.zeros(n, 2) if hidden is None else hidden, torch.zeros(n) if out is None else out)

    monkeypatch.setattr(learned, "train_gcn", train)
    return calls


def test_uncertain_gcn_queries_the_unlabeled_nodes_nearest_the_margin(monkeypatch):
    data = tiny_data(12)
    candidates = np.array([1, 3, 4, 6, 7, 9, 10, 11])  # labeled: 0, 2, 5, 8 (the first 4 GCN nodes)
    #                                   candidate position:  0     1    2     3     4      5    6    7
    probability = torch.tensor([0.1, 0.1, 0.1, 0.1] + [0.9, 0.12, 0.5, 0.03, 0.095, 0.3, 0.2, 0.7])
    calls = fixed_gcn(monkeypatch, probability)
    ctx = tiny_context(candidates, 3, data=data)
    # |p - 0.1| over the candidates: 0.8, 0.02, 0.4, 0.07, 0.005, 0.2, 0.1, 0.6; the labeled nodes (exactly at the
    # margin) are never queried
    assert learned.uncertain_gcn(ctx).tolist() == [4, 1, 3]
    features, is_labeled, options = calls[0]
    assert features.shape == (12, 8) and torch.allclose(features.norm(dim=1), torch.ones(12))
    assert is_labeled.tolist() == [True] * 4 + [False] * 8
    assert options["hidden"] == 128 and options["weight"] == 1.2  # the GCN_* settings' defaults
    assert get_strategy("UncertainGCN").select(tiny_context(candidates, 3, data=data)).tolist() == [7, 3, 6]


def test_uncertain_gcn_breaks_distance_ties_by_position(monkeypatch):
    data = tiny_data(8)
    candidates = np.arange(2, 8)  # labeled: 0, 1
    # margin 0.25 (GCN_S_MARGIN); every distance is exact in float32
    #                   candidate position:  0 (below) 1      2 (above) 3 (above) 4 (below) 5
    probability = torch.tensor([0.25, 0.25] + [0.125, 0.875, 0.375, 0.3125, 0.1875, 0.625])
    fixed_gcn(monkeypatch, probability)
    ctx = tiny_context(candidates, 5, data=data)
    ctx.settings["GCN_S_MARGIN"] = 0.25
    # distances 0.125, 0.625, 0.125, 0.0625, 0.0625, 0.375: each tied pair in position order, whichever side of the
    # margin comes first (3 above before 4 below, 0 below before 2 above)
    assert learned.uncertain_gcn(ctx).tolist() == [3, 4, 0, 2, 5]


def test_uncertain_gcn_applies_the_rule_to_the_trained_gcn(monkeypatch):
    outputs = []
    real = learned.train_gcn

    def spy(*args, **kwargs):
        outputs.append(real(*args, **kwargs)[1])
        return None, outputs[-1]

    monkeypatch.setattr(learned, "train_gcn", spy)
    candidates = np.arange(10, 30)
    chosen = get_strategy("UncertainGCN").select(tiny_context(candidates, 3))
    probability = outputs[0][0][40:]  # 40 labeled nodes first
    expected = torch.argsort((probability - 0.1).abs(), stable=True)[:3]
    assert chosen.tolist() == candidates[expected.numpy()].tolist()


def test_core_gcn_takes_farthest_first_from_the_labeled_nodes_on_hidden_and_output_features(monkeypatch):
    data = tiny_data(8)
    candidates = np.array([0, 2, 3, 4, 6, 7])  # labeled: 1, 5 (the first 2 GCN nodes)
    # node = (hidden_0, hidden_1, pre-sigmoid output); labeled nodes at (0, 0, 0) and (10, 1, 0)
    nodes = torch.tensor([[0.0, 0, 0], [10, 1, 0],
                          [1, 0, 0], [10, 0, 0], [0, 6, 0], [9, 0, 0], [0, 0, 5], [5, 5, 0]])
    fixed_gcn(monkeypatch, hidden=nodes[:, :2], out=nodes[:, 2])
    # squared distances to the labeled set: 1, 1, 36, 2, 25, 41 (position 1, farthest from the origin, sits next to
    # the second labeled node). Picks: 5 (41); then 2 (26 from position 5); then 4 (25, its distance lies in the
    # output column only); then 3 (2)
    assert learned.core_gcn(tiny_context(candidates, 4, data=data)).tolist() == [5, 2, 4, 3]
    assert get_strategy("CoreGCN").select(tiny_context(candidates, 4, data=data)).tolist() == [7, 3, 6, 4]


def test_asal_gan_moves_towards_the_pool_distribution():
    torch.manual_seed(0)
    images = torch.rand(128, 1, 8, 8) * 0.4 + 0.5  # a bright pool, mean 0.7 in [-1, 1]
    untrained = train_gan(images, steps=0, batch_size=32, latent=16, lr=1e-3, generator=torch.Generator(), width=16)
    trained = train_gan(images, steps=200, batch_size=32, latent=16, lr=1e-3,
                        generator=torch.Generator().manual_seed(0), width=16)
    with torch.no_grad():
        before, after = untrained(torch.randn(256, 16)).mean().item(), trained(torch.randn(256, 16)).mean().item()
    assert abs(after - 0.7) < 0.2 < abs(before - 0.7)


def test_asal_keeps_the_most_uncertain_fakes_and_retrieves_their_nearest_real_samples():
    fake_probs = torch.tensor([[0.5, 0.5], [0.99, 0.01], [0.6, 0.4]])
    fake_features = torch.tensor([[0.0, 10.0], [5.0, 5.0], [10.0, 0.0]])
    pool = torch.tensor([[9.0, 1.0], [0.0, 9.0], [1.0, 1.0], [0.5, 9.5]])
    assert asal_select(fake_probs, fake_features, pool, 2).tolist() == [3, 0]


DEEPAL = ["--protocol", "deepal", "--dataset", "digits", "--model", "LeNet", "--nStart", "10", "--nQuery", "5",
          "--nEnd", "20", "--n_epoch", "1", "--quiet", "--cycles", "2"]
RETHINKING = ["--dataset", "digits", "--arch", "lenet", "--split", "0", "--al-budget", "20", "--epochs", "1",
              "--cycles", "2", "--max-train-samples", "200", "--max-test-samples", "50", "--lr", "0.05", "--quiet"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["LearningLoss", "VAAL", "WAAL", "UncertainGCN", "CoreGCN", "ASAL"])
def test_each_runs_through_main_al_under_both_protocols(tmp_path, strategy):
    narrow = {"VAAL": ["--set", "VAE_WIDTH=16"],  # the paper's 128 costs a minute here
              "ASAL": ["--asal_steps", "10"]}.get(strategy, [])  # (a strategy's own settings only)
    main_al.main([*DEEPAL, *narrow, "--strategy", strategy, "--out", str(tmp_path / "deepal")])
    assert [r["n_labeled"] for r in read_cycles(str(tmp_path / "deepal"))] == [143, 214]
    main_al.main([*RETHINKING, *narrow, "--al-method", strategy.lower(), "--data-root", str(tmp_path / "data"),
                  "--out", str(tmp_path / "rethinking")])
    final = np.load(tmp_path / "rethinking" / "labeled" / "trial0_cycle1.npy")
    assert len(set(final.tolist())) == 60

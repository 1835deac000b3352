"""The strategy library: properties every registered strategy must have, and a known answer
for each selection rule."""

import math

import numpy as np
import pytest
import torch
from conftest import TinyNet, tiny_context, tiny_data
from torch import nn

from models import ModelOutput
from utils.core.distributed import Dist
from utils.samplers import (
    badge_select,
    bald_scores,
    cluster_margin_select,
    entropy_scores,
    get_strategy,
    kcenter_greedy,
    kmeans_select,
    least_confidence_scores,
    list_strategies,
    margin_scores,
)
from utils.samplers.mc_dropout import mc_dropout_probs

# ------------------------------------------------------------------------ properties of every strategy

@pytest.mark.parametrize("name", list_strategies())
def test_every_strategy_returns_distinct_candidates_deterministically(name):
    candidates = np.arange(10, 50, 2)
    strategy = get_strategy(name)
    first = strategy.select(tiny_context(candidates, 7, seed=3))
    again = strategy.select(tiny_context(candidates, 7, seed=3))
    size = 7 if strategy.fixed_size else len(first)  # CCAL: up to its per-class quota
    assert len(first) == size and len(set(first.tolist())) == size and 0 < size <= 7
    assert set(first.tolist()) <= set(candidates.tolist())
    assert np.array_equal(first, again)


@pytest.mark.parametrize("name", list_strategies())
def test_every_strategy_can_take_the_whole_small_pool(name):
    strategy = get_strategy(name)
    chosen = strategy.select(tiny_context([4, 9, 13], 3)).tolist()
    assert sorted(chosen) == [4, 9, 13] if strategy.fixed_size else len(chosen) and set(chosen) <= {4, 9, 13}


def test_names_ignore_case_and_accept_the_seeds_spellings():
    assert get_strategy("uncertainty_entropy") is get_strategy("EntropySampling")
    assert get_strategy("CORESET").name == "CoreSet" and get_strategy("badge").name == "BadgeSampling"
    assert get_strategy("kcenter").name == "KCenterGreedy" and get_strategy("bald").name == "BALDDropout"


# ------------------------------------------------------------------------ known answers: uncertainty

PROBS = torch.tensor([[0.9, 0.05, 0.05], [0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.6, 0.3, 0.1]])


def test_least_confidence_margin_and_entropy_scores():
    assert torch.allclose(least_confidence_scores(PROBS), torch.tensor([0.1, 0.5, 2 / 3, 0.4]))
    assert torch.allclose(margin_scores(PROBS), torch.tensor([-0.85, 0.0, 0.0, -0.3]))
    assert torch.allclose(entropy_scores(PROBS)[2], torch.tensor(math.log(3)))
    assert entropy_scores(torch.tensor([[1.0, 0.0]])).item() == 0.0  # 0 log 0 = 0, no NaN


@pytest.mark.parametrize("name,first", [("LeastConfidence", 2), ("MarginSampling", 1), ("EntropySampling", 2)])
def test_single_pass_uncertainty_strategies_rank_by_their_rule(name, first):
    ctx = tiny_context(np.arange(4), 1)
    ctx._cache["pool"] = torch.cat([PROBS, torch.zeros(4, 8)], dim=1)  # probabilities the model "predicted"
    assert get_strategy(name).select(ctx).tolist() == [first]


def test_bald_is_the_mutual_information_in_nats():
    agree = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    disagree = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mc = torch.stack([agree, disagree], dim=1)  # [K=2 passes, N=2 points, C=2]
    assert torch.allclose(bald_scores(mc), torch.tensor([0.0, math.log(2)]), atol=1e-6)


@pytest.mark.parametrize("name,first", [("BALDDropout", 1), ("EntropySamplingDropout", 1),
                                        ("LeastConfidenceDropout", 1), ("MarginSamplingDropout", 1)])
def test_mc_dropout_strategies_rank_the_mc_samples(name, first):
    # point 0: all passes sure of class 0; point 1: passes split between classes; point 2: fairly sure
    mc = torch.tensor([[[1.0, 0, 0], [1.0, 0, 0], [0.8, 0.2, 0]],
                       [[1.0, 0, 0], [0, 1.0, 0], [0.8, 0.2, 0]]])
    ctx = tiny_context(np.arange(3), 1)
    ctx._cache["mc"] = mc
    assert get_strategy(name).select(ctx).tolist() == [first]


def test_mc_dropout_is_really_stochastic_with_batchnorm_frozen():
    data = tiny_data()
    model = TinyNet()
    model.train()
    for _ in range(3):  # give BatchNorm non-trivial running statistics
        model(data.eval_transform(data.train.images[:16]))
    model.eval()
    running = model.body[2].running_mean.clone()
    probs = mc_dropout_probs(model, data, np.arange(40), 6, 16, Dist(), seed=1)
    assert probs.shape == (6, 40, 3)
    assert (probs[0] - probs[1]).abs().max() > 1e-4  # dropout is on
    assert torch.equal(model.body[2].running_mean, running) and not model.training  # BN untouched, mode kept
    assert model.trunk_calls == 3  # one trunk pass per batch (40 / 16), K head passes on it
    same = mc_dropout_probs(model, data, np.arange(40), 6, 40, Dist(), seed=1)
    assert torch.allclose(probs, same, atol=1e-6)  # one mask per pass for the whole pool
    eval_probs = torch.softmax(model(data.eval_transform(data.train.images[:40])).logits, 1)
    assert not torch.allclose(probs.mean(0), eval_probs)  # not the deterministic prediction


def test_ensembles_query_where_the_members_disagree():
    class Fixed(nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = logits

        def forward(self, x):
            return ModelOutput(self.logits[: len(x)], x.flatten(1))

    sure = torch.tensor([[9.0, 0, 0], [9.0, 0, 0], [0, 9.0, 0]])
    other = torch.tensor([[9.0, 0, 0], [0, 0, 9.0], [0, 9.0, 0]])
    ctx = tiny_context(np.arange(3), 1)
    ctx.batch_size = 3
    ctx.extras["ensemble"] = [Fixed(sure), Fixed(other)]
    assert get_strategy("Ensembles").select(ctx).tolist() == [1]


# ------------------------------------------------------------------------ known answers: diversity

def test_kcenter_greedy_takes_the_farthest_point_first_and_matches_the_full_matrix_rule():
    pool = torch.tensor([[0.0, 1.0], [10.0, 10.0], [0.0, 2.0], [5.0, 0.0]])
    labeled = torch.tensor([[0.0, 0.0]])
    assert kcenter_greedy(pool, labeled, 3).tolist() == [1, 3, 2]
    torch.manual_seed(0)
    pool, labeled = torch.randn(500, 8), torch.randn(40, 8)
    min_dist = torch.cdist(pool, labeled).min(1).values
    reference = []
    for _ in range(30):
        pick = int(torch.argmax(min_dist))
        reference.append(pick)
        min_dist = torch.minimum(min_dist, torch.cdist(pool, pool[pick:pick + 1])[:, 0])
    assert kcenter_greedy(pool, labeled, 30).tolist() == reference


def test_badge_factorised_distances_and_first_pick():
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(200, 4) * 2, 1)
    emb = torch.randn(200, 6)
    grad = probs.clone()
    grad[torch.arange(200), probs.argmax(1)] -= 1
    g = (grad[:, :, None] * emb[:, None, :]).flatten(1)  # the dense gradient embedding, for the check
    chosen = badge_select(probs, emb, 20, torch.Generator().manual_seed(0))
    assert int(chosen[0]) == int(g.norm(dim=1).argmax())
    assert len(set(chosen.tolist())) == 20
    # two well-separated groups of gradient embeddings: the second centre comes from the other group
    probs = torch.tensor([[0.6, 0.4]] * 5 + [[0.4, 0.6]] * 5)
    emb = torch.cat([torch.ones(5, 2), -torch.ones(5, 2)]) * torch.arange(1, 11)[:, None].float() / 10
    first_two = badge_select(probs, emb, 2, torch.Generator().manual_seed(1))
    assert int(first_two[0]) == 9 and int(first_two[1]) < 5


def test_badge_never_repeats_a_point_even_with_duplicates():
    probs = torch.tensor([[0.7, 0.3]] * 6)
    emb = torch.ones(6, 3)
    assert sorted(badge_select(probs, emb, 6, torch.Generator().manual_seed(0)).tolist()) == list(range(6))


def test_kmeans_takes_the_point_nearest_each_centre():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])
    points = np.concatenate([c + rng.normal(0, 1, (30, 2)) for c in centres])
    chosen = kmeans_select(torch.from_numpy(points).float(), 3, seed=0).numpy()
    assert sorted(chosen // 30) == [0, 1, 2]  # one per blob
    for c in chosen:
        blob = points[(c // 30) * 30:(c // 30 + 1) * 30]
        nearest = np.argmin(((blob - blob.mean(0)) ** 2).sum(1))
        assert c % 30 == nearest  # the member closest to its cluster mean


def test_cluster_margin_round_robin_from_the_smallest_cluster():
    margins = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 0, 1])
    # margin set = the 6 lowest margins; clusters there: 2 (1 point), 1 (2), 0 (3)
    assert cluster_margin_select(margins, labels, 6, margin_multiple=1).tolist() == [5, 3, 0, 4, 1, 2]
    # margin set = the 4 lowest; cluster 1 holds one of them, cluster 0 three
    assert cluster_margin_select(margins, labels, 2, margin_multiple=2).tolist() == [3, 0]


def test_cluster_margin_random_pick_takes_a_random_member_of_each_cluster_in_turn():
    margins = torch.arange(12, dtype=torch.float) / 100
    labels = torch.tensor([0, 1] * 6)  # the 8 lowest margins: 4 in cluster 0, 4 in cluster 1
    picks = set()
    for seed in range(20):
        generator = torch.Generator().manual_seed(seed)
        chosen = cluster_margin_select(margins, labels, 4, margin_multiple=2, generator=generator)
        assert sorted(labels[chosen].tolist()) == [0, 0, 1, 1] and (chosen < 8).all()  # one per cluster per round
        picks.add(tuple(chosen.tolist()))
    assert len(picks) > 5  # not the lowest margins every time, as the toolkit's [1, 0, 3, 2]
    assert cluster_margin_select(margins, labels, 4, margin_multiple=2).tolist() == [0, 1, 2, 3]


def test_cluster_margin_settings_reach_the_strategy(monkeypatch):
    from utils.samplers import diversity

    seen = {}
    monkeypatch.setattr(diversity, "hac_labels", lambda emb, n, seed: seen.setdefault("clusters", n) and
                        torch.arange(len(emb)) % 2)
    ctx = tiny_context(np.arange(10, 50), 4)
    ctx.settings.update(CLUSTER_MARGIN_KM=1, CLUSTER_MARGIN_CLUSTERS=7, CLUSTER_MARGIN_PICK="random")
    chosen = get_strategy("ClusterMarginSampling").select(ctx)
    margins = (lambda p: p.topk(2, dim=1).values)(ctx.probs())
    lowest = np.asarray(ctx.candidates)[torch.argsort(margins[:, 0] - margins[:, 1])[:4].numpy()]
    assert seen["clusters"] == 7 and sorted(chosen.tolist()) == sorted(lowest.tolist())  # k_m = 1: the 4 lowest


def test_cluster_margin_clusters_once_per_trial():
    ctx = tiny_context(np.arange(10, 50), 5)
    get_strategy("ClusterMarginSampling").select(ctx)
    labels = ctx.extras["state"]["cluster_margin_labels"]
    assert labels.shape == (60,) and (labels >= 0).all()
    later = tiny_context(np.arange(20, 50), 5)
    later.extras["state"] = ctx.extras["state"]
    get_strategy("ClusterMarginSampling").select(later)
    assert later.extras["state"]["cluster_margin_labels"] is labels


def test_badge_draws_proportionally_to_d2_and_never_a_zero_weight():
    from utils.samplers.diversity import _draw

    generator = torch.Generator().manual_seed(0)
    weights = torch.tensor([0.0, 1.0, 0.0, 3.0], dtype=torch.float64)
    counts = np.bincount([_draw(weights, generator) for _ in range(4000)], minlength=4)
    assert counts[0] == counts[2] == 0 and 0.2 < counts[1] / 4000 < 0.3

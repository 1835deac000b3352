"""CoreSet: robust k-center with outliers (Sener & Savarese, ICLR'18, Alg. 2) by MIP on top of greedy k-center."""

import itertools

import numpy as np
import pytest
import torch
from torch import nn

import utils.samplers.coreset as coreset
from models import ModelOutput
from utils.core.data import BatchTransform, ImageData, TensorImages
from utils.core.distributed import Dist
from utils.samplers import QueryContext, get_strategy, kcenter_greedy
from utils.samplers.coreset import near_pairs, robust_kcenter, robust_kcenter_solve


def plus_shape(centre):
    """A centre point and its four neighbours at distance 1: the centre covers them at radius 1, any other
    member needs radius >= sqrt(2)."""
    offsets = torch.tensor([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    return torch.tensor(centre, dtype=torch.float32) + offsets


def three_clusters_and_an_outlier():
    a, b, c = plus_shape([0, 0]), plus_shape([10, 0]), plus_shape([0, 10])
    labeled = a[:1]  # the centre of cluster A is labeled
    pool = torch.cat([a[1:], b, c, torch.tensor([[100.0, 100.0]])])  # A's ring 0-3, B 4-8, C 9-13, outlier 14
    return pool, labeled


def covering_radius(pool, labeled, chosen, skip=0):
    """Distance of the (skip + 1)-th farthest pool point from labeled ∪ chosen (exact, full matrix)."""
    dist = torch.cdist(pool.double(), torch.cat([labeled, pool[chosen]]).double()).min(1).values
    return float(dist.sort(descending=True).values[skip])


def brute_force(pool, labeled, query_size):
    """The optimal (outlier-free) k-center radius and all optimal centre sets, by enumeration."""
    combos = torch.tensor(list(itertools.combinations(range(len(pool)), query_size)))
    dist = torch.cdist(pool.double(), pool.double())
    to_labeled = torch.cdist(pool.double(), labeled.double()).min(1).values
    radius = torch.minimum(dist[:, combos].min(2).values, to_labeled[:, None]).max(0).values
    best = float(radius.min())
    return best, {tuple(c) for c in combos[radius <= best + 1e-9].tolist()}


def test_outlier_budget_covers_the_clusters_instead_of_the_outlier():
    pool, labeled = three_clusters_and_an_outlier()
    greedy = kcenter_greedy(pool, labeled, 2)
    assert 14 in greedy.tolist()  # greedy spends a centre on the outlier and leaves a cluster at distance ~10
    # Ξ = floor(0.07 * 16 points) = 1 outlier allowed
    result = robust_kcenter_solve(pool, labeled, 2, outlier_fraction=0.07)
    assert result.outliers == 1 and result.path == "mip"
    assert sorted(result.positions.tolist()) == [4, 9]  # the centres of clusters B and C
    assert result.radius == pytest.approx(1.0)  # every point but the outlier within 1
    assert covering_radius(pool, labeled, result.positions, skip=1) == pytest.approx(1.0)
    assert covering_radius(pool, labeled, greedy, skip=1) > 9.0
    assert result.greedy_radius > 9.0 and result.delta_greedy == pytest.approx(11.0)
    # without an outlier budget the outlier must be covered, and then greedy is already optimal
    strict = robust_kcenter_solve(pool, labeled, 2, outliers=0)
    assert strict.path == "greedy" and strict.positions.tolist() == greedy.tolist()


@pytest.mark.parametrize("seed", [1, 4, 7, 14])
def test_without_outliers_the_mip_finds_the_optimal_radius(seed):
    generator = torch.Generator().manual_seed(seed)
    points = torch.rand(26, 2, generator=generator)
    labeled, pool = points[:2], points[2:]
    optimum, optimal_sets = brute_force(pool, labeled, 3)
    greedy = kcenter_greedy(pool, labeled, 3)
    assert covering_radius(pool, labeled, greedy) > optimum + 1e-3  # greedy is not optimal on these seeds
    result = robust_kcenter_solve(pool, labeled, 3, outliers=0, max_steps=20)
    assert result.path == "mip" and result.outliers == 0 and result.nodes == len(pool) and result.exact
    assert covering_radius(pool, labeled, result.positions) == pytest.approx(optimum, abs=1e-6)
    assert result.radius <= result.greedy_radius
    assert tuple(sorted(result.positions.tolist())) in optimal_sets


def test_the_result_is_never_worse_than_greedy_and_has_query_size_distinct_positions():
    generator = torch.Generator().manual_seed(0)
    pool, labeled = torch.randn(400, 8, generator=generator), torch.randn(30, 8, generator=generator)
    for kwargs in ({"outliers": 0}, {"outliers": 3}, {"max_nodes": 60}):  # the last: MIP on a 60-point subset
        result = robust_kcenter_solve(pool, labeled, 25, max_steps=6, **kwargs)
        again = robust_kcenter(pool, labeled, 25, max_steps=6, **kwargs)
        chosen = result.positions
        assert chosen.dtype == torch.long and len(chosen) == 25 and len(set(chosen.tolist())) == 25
        assert 0 <= int(chosen.min()) and int(chosen.max()) < len(pool)
        assert torch.equal(chosen, again)  # deterministic
        skip = kwargs.get("outliers", 0)
        assert covering_radius(pool, labeled, chosen, skip) <= covering_radius(
            pool, labeled, kcenter_greedy(pool, labeled, 25), skip) + 1e-5
    assert result.nodes == 60 and result.path in ("mip", "greedy")


def test_falls_back_to_greedy_on_the_time_limit_and_the_size_caps():
    generator = torch.Generator().manual_seed(0)
    pool, labeled = torch.randn(2000, 32, generator=generator), torch.randn(50, 32, generator=generator)
    greedy = kcenter_greedy(pool, labeled, 20)
    timeout = robust_kcenter_solve(pool, labeled, 20, time_limit=1e-3)
    assert timeout.path == "timeout" and timeout.timed_out and torch.equal(timeout.positions, greedy)
    few_nodes = robust_kcenter_solve(pool, labeled, 20, max_nodes=39)  # fewer than 2 x query_size nodes
    assert few_nodes.path == "too_large" and torch.equal(few_nodes.positions, greedy)
    flat_pool, flat_labeled = pool[:300, :2], labeled[:, :2]  # in 2-D the δ-balls hold many points
    few_pairs = robust_kcenter_solve(flat_pool, flat_labeled, 20, max_pairs=10)  # the pair cap cuts the nodes
    assert few_pairs.path == "too_large" and few_pairs.nodes < 40
    assert torch.equal(few_pairs.positions, kcenter_greedy(flat_pool, flat_labeled, 20))
    whole = robust_kcenter_solve(pool[:5], labeled, 5)
    assert whole.path == "trivial" and sorted(whole.positions.tolist()) == [0, 1, 2, 3, 4]


def test_near_pairs_matches_the_full_matrix_and_stops_at_the_pair_cap():
    generator = torch.Generator().manual_seed(0)
    points = torch.randn(300, 4, generator=generator)
    dist_sq = torch.cdist(points.double(), points.double()).pow(2)
    expected = {(i, j) for i, j in torch.nonzero(dist_sq <= 2.0).tolist() if j < i}
    rows, cols, sq, kept = near_pairs(points, 2.0, 10**9)
    assert kept == 300 and set(zip(rows.tolist(), cols.tolist())) == expected
    assert np.allclose(sq, dist_sq[rows, cols].numpy(), atol=1e-9)
    rows, cols, _, kept = near_pairs(points, 2.0, 500)
    within = {(i, j) for i, j in expected if i < kept}
    assert set(zip(rows.tolist(), cols.tolist())) == within and len(within) <= 500
    assert len({(i, j) for i, j in expected if i <= kept}) > 500  # one more row would pass the cap


class PixelFeatures(nn.Module):
    """Logits and features = the two pixel values of a 1x1x2 image."""

    def forward(self, x):
        values = x.flatten(1)
        return ModelOutput(values, values)


def test_registered_strategy_runs_through_a_query_context():
    # a line: labeled point at 0, candidates at 3, 5, 8, 10. Greedy takes 10 (radius 5); the optimum is 8 (radius 3)
    pixels = [[0, 0], [3, 0], [5, 0], [8, 0], [10, 0]]
    images = torch.tensor(pixels, dtype=torch.uint8).view(-1, 1, 1, 2)
    dataset = TensorImages(images, [0] * len(pixels))
    identity = BatchTransform((0.0,), (1 / 255,))  # images reach the model as raw pixel values
    data = ImageData("line", dataset, dataset, 2, 1, 1, identity, identity, np.arange(5), np.arange(5))

    def ctx():
        return QueryContext(PixelFeatures(), data, np.array([0]), np.array([4, 2, 1, 3]), 1, Dist(), batch_size=2,
                            rng=np.random.default_rng(0))

    strategy = get_strategy("coreset")
    assert strategy.name == "CoreSet" and get_strategy("core_set") is strategy
    assert strategy.select(ctx()).tolist() == [3]
    assert coreset.coreset_positions.last_solution.path == "mip"
    assert coreset.coreset_positions.last_solution.radius == pytest.approx(3.0)
    assert get_strategy("KCenterGreedy").select(ctx()).tolist() == [4]


def test_coreset_settings_reach_the_solver(monkeypatch):
    seen = {}
    real = coreset.robust_kcenter_solve

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(coreset, "robust_kcenter_solve", spy)
    pixels = [[0, 0], [3, 0], [5, 0], [8, 0], [10, 0]]
    images = torch.tensor(pixels, dtype=torch.uint8).view(-1, 1, 1, 2)
    dataset = TensorImages(images, [0] * len(pixels))
    identity = BatchTransform((0.0,), (1 / 255,))
    data = ImageData("line", dataset, dataset, 2, 1, 1, identity, identity, np.arange(5), np.arange(5))
    ctx = QueryContext(PixelFeatures(), data, np.array([0]), np.array([4, 2, 1, 3]), 1, Dist(), batch_size=2,
                       rng=np.random.default_rng(0),
                       settings={"CORESET_OUTLIER_FRACTION": 0.5, "CORESET_TIME_LIMIT": 7.0})
    # 2 of the 5 points may be outliers: greedy's 10 leaves 3, 5 and 8 at 3, 5 and 2, radius 2 once 3 and 5
    # are given up, which no centre beats (without outliers the optimum is 8, radius 3: see above)
    assert get_strategy("CoreSet").select(ctx).tolist() == [4]
    assert coreset.coreset_positions.last_solution.radius == pytest.approx(2.0)
    assert seen == {"outlier_fraction": 0.5, "time_limit": 7.0}

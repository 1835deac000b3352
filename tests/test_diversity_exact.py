"""Known answers for the unique nearest-neighbour assignment (ASAL's retrieval, KMeansSampling's
empty clusters) and for KMeansSampling, the toolkit's rule."""

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

from utils.samplers import diversity
from utils.samplers.diversity import kmeans_select, nearest_unique


def greedy_reference(points: np.ndarray, centres: np.ndarray) -> list[int]:
    """The definition, written out: in order, each centre takes the nearest point not yet taken."""
    dist = ((centres[:, None, :].astype(np.float64) - points[None].astype(np.float64)) ** 2).sum(-1)
    taken: list[int] = []
    for row in dist:
        row[taken] = np.inf
        taken.append(int(np.argmin(row)))
    return taken


def test_nearest_unique_more_centres_than_neighbours_searched_share_the_same_points():
    points = np.stack([np.arange(60.0), np.zeros(60)], 1)  # a line of points, 0 ... 59
    centres = np.tile([[59.3, 0.0]], (20, 1))  # 20 centres at the end of the line
    # each takes the nearest free point: 59, 58, ..., 40 (the old helper gave 59..44, then 0, 1, 2, 3)
    assert nearest_unique(points, centres).tolist() == list(range(59, 39, -1))


def test_nearest_unique_is_greedy_in_the_given_order():
    points = np.array([[0.0], [1.0], [3.0]])
    a, b = [0.9], [0.6]  # both nearest to point 1; the second nearest is point 0 for both
    assert nearest_unique(points, np.array([a, b])).tolist() == [1, 0]
    assert nearest_unique(points, np.array([b, a])).tolist() == [1, 0]  # the first centre wins, not the nearer
    duplicates = np.array([[1.0], [0.0], [0.0], [0.0]])
    assert nearest_unique(duplicates, np.zeros((3, 1))).tolist() == [1, 2, 3]  # equal distances: lowest index


@pytest.mark.parametrize("chunk", [diversity.CHUNK_ELEMENTS, 1000, 1])
def test_nearest_unique_matches_the_definition_in_blocks_of_any_size(chunk, monkeypatch):
    rng = np.random.default_rng(0)
    points = rng.normal(size=(400, 8)).astype(np.float32)
    # 150 centres crowded around 5 pool points: dozens compete for the same neighbours
    centres = (points[rng.integers(0, 5, 150)] + rng.normal(0, 0.05, (150, 8))).astype(np.float32)
    monkeypatch.setattr(diversity, "CHUNK_ELEMENTS", chunk)
    assert nearest_unique(points, centres).tolist() == greedy_reference(points, centres)


def test_nearest_unique_refuses_more_centres_than_points():
    with pytest.raises(ValueError, match="distinct points"):
        nearest_unique(np.zeros((3, 2)), np.zeros((4, 2)))


def twelve_clusters(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """12 well-separated Gaussian blobs of unequal sizes (10 ... 65 points), shuffled."""
    rng = np.random.default_rng(seed)
    sizes = 10 + 5 * np.arange(12)
    labels = rng.permutation(np.repeat(np.arange(12), sizes))
    means = 40.0 * np.eye(12, 16)
    return (means[labels] + rng.normal(size=(len(labels), 16))).astype(np.float32), labels


@pytest.mark.parametrize("seed", range(5))
def test_kmeans_takes_the_member_nearest_the_mean_of_every_one_of_twelve_clusters(seed):
    points, labels = twelve_clusters(seed)
    chosen = kmeans_select(torch.from_numpy(points), 12, seed=seed).numpy()
    expected = set()
    for blob in range(12):  # found clusters are the blobs, their centres the blob means
        members = np.flatnonzero(labels == blob)
        expected.add(int(members[np.argmin(((points[members] - points[members].mean(0)) ** 2).sum(1))]))
    assert sorted(labels[chosen].tolist()) == list(range(12))  # every cluster covered once
    assert set(chosen.tolist()) == expected


def test_kmeans_follows_the_toolkit_rule_on_unclustered_data():
    rng = np.random.default_rng(1)
    points = rng.normal(size=(300, 6))
    # the toolkit: KMeans(n_clusters=k) (scikit-learn 1.0.2: k-means++, n_init 10), then per cluster
    # the member with the smallest squared distance to its centre
    fitted = KMeans(n_clusters=25, n_init=10, random_state=7).fit(points)
    cluster = fitted.predict(points)
    dist = ((points - fitted.cluster_centers_[cluster]) ** 2).sum(1)
    toolkit = [np.flatnonzero(cluster == i)[np.argmin(dist[cluster == i])] for i in range(25)]
    assert kmeans_select(torch.from_numpy(points), 25, seed=7).tolist() == toolkit  # float64 as ours


@pytest.mark.parametrize("query_size", [3, 5, 8, 12, 18, 19, 20, 25])
def test_kmeans_always_returns_exactly_the_query_size_distinct_positions(query_size):
    square = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]]).repeat(5, 1)  # 20 points, 4 distinct
    size = min(query_size, 20)
    for points, distinct in ((square, 4), (torch.ones(20, 3), 1)):
        chosen = kmeans_select(points, query_size, seed=0).tolist()
        assert len(chosen) == len(set(chosen)) == size and set(chosen) <= set(range(20))
        assert len({tuple(p) for p in points[chosen].tolist()}) == min(size, distinct)  # each distinct point first


def test_kmeans_is_deterministic_for_a_seed():
    points = torch.from_numpy(np.random.default_rng(2).normal(size=(500, 10)).astype(np.float32))
    first = kmeans_select(points, 40, seed=3)
    assert torch.equal(first, kmeans_select(points, 40, seed=3))
    assert len(set(first.tolist())) == 40

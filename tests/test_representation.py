"""The representation-based strategies (utils/samplers/representation.py): known answers on hand-made
embeddings, and the same picks (or, where ties are broken differently by design, the same objective)
as scikit-activeml's TypiClust, ProbCover and MaxHerding."""

import warnings

import numpy as np
import pytest
import torch
from conftest import tiny_context

from utils.core.errors import UserError
from utils.samplers import (
    centroid_initial,
    dropquery_select,
    get_strategy,
    herding_select,
    probcover_select,
    purity_delta,
    select_initial,
    typiclust_select,
)
from utils.samplers import representation as rep

pytestmark = pytest.mark.usefixtures("one_thread")


def blobs(sizes, dim=8, spread=0.05, seed=0):
    """Unit-norm Gaussian blobs of the given sizes around random unit centres; (points, blob of each)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    points = np.concatenate([c + spread * rng.normal(size=(s, dim)) for c, s in zip(centres, sizes)])
    return rep.normalise(points), np.repeat(np.arange(len(sizes)), sizes)


def pairwise(points):
    return np.sqrt(np.maximum(((points[:, None] - points[None]) ** 2).sum(-1), 0))


# ------------------------------------------------------------------------ neighbour search

def test_knn_is_exact_without_self_and_ivf_recall_is_measured():
    points, _ = blobs([200, 150, 100], dim=16)
    sq, idx = rep.knn(points, 5, "exact")
    truth = pairwise(points)
    np.fill_diagonal(truth, np.inf)
    assert np.array_equal(np.sort(idx, 1), np.sort(np.argsort(truth, 1, kind="stable")[:, :5], 1))
    assert np.allclose(np.sqrt(sq), np.sort(truth, 1)[:, :5], atol=1e-5)
    assert rep.neighbour_recall(points, idx) == 1.0
    _, approx = rep.knn(points, 5, "ivf")
    assert 0.8 <= rep.neighbour_recall(points, approx) <= 1.0
    assert rep.neighbour_recall(points, np.roll(idx, 1, axis=0)) < 0.1  # the wrong neighbours score low


def test_auto_search_is_exact_up_to_the_documented_size():
    assert rep.resolve_search("auto", rep.EXACT_MAX_POINTS) == "exact"
    assert rep.resolve_search("auto", rep.EXACT_MAX_POINTS + 1) == "ivf"
    assert rep.resolve_search("exact", 10**7) == "exact" and rep.resolve_search("ivf", 10) == "ivf"


# ------------------------------------------------------------------------ TypiClust

def stars(arms=(8, 7, 6, 5), radius=0.3):
    """Stars on the unit sphere in 8-d: centre e_i (i < 4) and ``arms`` points normalise(e_i + radius *
    (+-e_j)), j >= 4 (tangent, pairwise sqrt(2) x farther apart than from the centre): each centre is its
    star's most typical point. Returns the points and the centres' positions."""
    eye = np.eye(8)
    tangents = np.concatenate([eye[4:], -eye[4:]])
    parts = [np.concatenate([eye[[i]], eye[i] + radius * tangents[:n]]) for i, n in enumerate(arms)]
    return rep.normalise(np.concatenate(parts)), np.cumsum([0] + [len(p) for p in parts])[:-1]


def test_typiclust_takes_the_most_typical_point_of_the_largest_uncovered_clusters():
    points, centres = stars()
    picks = typiclust_select(points, points[:0], 4, neighbours=20)  # cold start: 4 clusters, one pick each
    assert picks.tolist() == centres.tolist()  # every star's centre, largest star first
    # a labeled arm of the largest star covers it: the 3 picks are the other stars' centres, largest first
    rest = np.delete(np.arange(len(points)), 1)
    picks = rest[typiclust_select(points[rest], points[[1]], 3, neighbours=20)]
    assert picks.tolist() == centres[1:].tolist()


def test_typiclust_matches_scikit_activeml():
    from skactiveml.pool import TypiClust

    points, blob = blobs([60, 55, 50, 45, 40, 35, 30, 25])
    labeled = np.array([0, 60])  # blobs 0 and 1 are covered
    y = np.full(len(points), np.nan)
    y[labeled] = 0
    candidates = np.setdiff1d(np.arange(len(points)), labeled)
    theirs = TypiClust(k=5, random_state=0).query(points, y, batch_size=6)
    ours = candidates[typiclust_select(points[candidates], points[labeled], 6, neighbours=5)]
    assert ours.tolist() == theirs.tolist()
    assert blob[ours].tolist() == [2, 3, 4, 5, 6, 7]


# ------------------------------------------------------------------------ ProbCover

def line_points():
    """1-d clusters of 5, 3 and 2 points (spacing 0.1) far apart, plus 2 isolated points."""
    xs = [0, 0.1, 0.2, 0.3, 0.4, 5, 5.1, 5.2, 9, 9.1, 20, 30]
    return np.array([[x, 1.0] for x in xs], dtype=np.float32)


def coverage(points, picks, delta):
    return int((pairwise(points)[picks] < delta).any(0).sum())


def test_probcover_greedy_covers_the_most_points_per_pick():
    points = line_points()  # probcover_select normalises: a short line (x / 100, 1) stays nearly straight
    points = rep.normalise(np.concatenate([points[:, :1] / 100, points[:, 1:]], 1))
    delta = float(np.sqrt(((points[0] - points[2]) ** 2).sum())) * 1.001  # a ball spans 2 spacings each way
    picks = probcover_select(points, points[:0], 4, delta=delta)
    within = pairwise(points) < delta
    assert picks[0] == 2 and within[2].sum() == within.sum(1).max() == 5  # the middle of the 5
    assert [coverage(points, picks[:i + 1], delta) for i in range(4)] == [5, 8, 10, 11]
    assert picks[1] == 5  # every point of the 3 covers them all: the lowest position


def test_probcover_purity_delta_is_the_largest_pure_radius():
    points, _ = blobs([40, 30, 20], spread=0.2, seed=3)
    delta = purity_delta(points, 3, alpha=0.9)
    labels = rep.pseudo_labels(points, 3, 0)
    dist = pairwise(points)

    def purity(d):
        return np.mean([(labels[dist[i] < d] == labels[i]).all() for i in range(len(points))])

    assert purity(delta) >= 0.9 > purity(delta * 1.0001)


def test_probcover_matches_scikit_activeml():
    from skactiveml.pool import ProbCover

    points, blob = blobs([30, 24, 18, 12, 6], spread=0.03, seed=1)
    y = np.full(len(points), np.nan)
    y[0] = 0
    candidates = np.arange(1, len(points))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its warning that one delta was given
        theirs = ProbCover(deltas=[0.3], random_state=0).query(points, y, batch_size=4)
        searched = ProbCover(n_classes=5, random_state=0)
        searched.query(points, y, batch_size=1)
    ours = candidates[probcover_select(points[candidates], points[[0]], 4, delta=0.3)]
    # every member of a blob covers the whole blob: scikit-activeml draws one at random, we take the
    # first; the blobs chosen and the coverage are the same
    assert blob[ours].tolist() == blob[theirs].tolist() == [1, 2, 3, 4]
    assert coverage(points, np.r_[0, ours], 0.3) == coverage(points, np.r_[0, theirs], 0.3) == len(points)
    # its delta is the largest of its grid (0.2, 0.4, ...) below ours
    assert searched.delta_max_ <= purity_delta(points, 5) < searched.delta_max_ + 0.2


def test_probcover_is_uniform_once_everything_is_covered_and_refuses_huge_graphs(monkeypatch):
    points, _ = blobs([10, 10], spread=0.01)
    picks = probcover_select(points, points[:0], 6, delta=0.5, rng=np.random.default_rng(0))
    assert len(set(picks.tolist())) == 6
    monkeypatch.setattr(rep, "MAX_EDGES", 50)
    with pytest.raises(UserError, match="PROBCOVER_DELTA"):
        probcover_select(points, points[:0], 2, delta=0.5)


# ------------------------------------------------------------------------ herding

def gaussian_coverage(points, picks, sigma, weights=None):
    kernel = np.exp(-pairwise(points) ** 2 / sigma**2)
    weights = np.ones(len(points)) if weights is None else weights
    return float((weights * kernel[picks].max(0)).sum())


def test_maxherding_first_pick_maximises_the_kernel_sum_and_each_pick_the_gain():
    rng = np.random.default_rng(0)
    points = rep.normalise(rng.normal(size=(80, 5)))
    picks = herding_select(points, points[:0], 5, sigma=0.7, neighbours=79)
    kernel = np.exp(-pairwise(points) ** 2 / 0.49)
    assert picks[0] == np.argmax(kernel.sum(0))
    for i in range(1, 5):  # the greedy gain, brute force
        best = max(range(80), key=lambda c: gaussian_coverage(points, np.r_[picks[:i], c], 0.7))
        assert picks[i] == best


def test_maxherding_matches_scikit_activeml():
    from skactiveml.pool import MaxHerding

    points = rep.normalise(np.random.default_rng(0).normal(size=(120, 6)))
    labeled = np.array([3, 50])
    y = np.full(len(points), np.nan)
    y[labeled] = 1
    candidates = np.setdiff1d(np.arange(len(points)), labeled)
    theirs = MaxHerding(metric_dict={"gamma": 1 / 0.5**2}, random_state=0).query(points, y, batch_size=8)
    ours = candidates[herding_select(points[candidates], points[labeled], 8, 0.5, neighbours=len(candidates) - 1)]
    assert ours.tolist() == theirs.tolist()


def test_maxherding_on_a_knn_graph_keeps_the_objective():
    points, _ = blobs([100, 80, 60, 40], dim=16, spread=0.1)
    full = herding_select(points, points[:0], 6, 0.3, neighbours=len(points) - 1)
    sparse = herding_select(points, points[:0], 6, 0.3, neighbours=30)
    assert gaussian_coverage(points, sparse, 0.3) >= 0.98 * gaussian_coverage(points, full, 0.3)  # 98.7 %


def test_uherding_weighs_the_gain_by_uncertainty():
    points, blob = blobs([30, 30], dim=6, spread=0.05)
    weights = np.where(blob == 1, 1.0, 0.01)  # the model is unsure about blob 1 only
    picks = herding_select(points, points[:0], 3, 0.3, neighbours=59, weights=weights)
    assert (blob[picks[:2]] == 1).all()
    best = max(range(60), key=lambda c: gaussian_coverage(points, [c], 0.3, weights))
    assert picks[0] == best
    assert np.allclose(rep.margin_uncertainty(torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]])), [0.5, 1.0])
    assert rep.adaptive_sigma(points, points[[0, 1, 40]]) == pytest.approx(pairwise(points[[0, 1, 40]])[0, 1])


# ------------------------------------------------------------------------ DropQuery

def test_dropquery_clusters_the_points_whose_prediction_dropout_flips():
    rng = np.random.default_rng(0)
    confident = np.tile([[10.0, 0.0]], (40, 1))  # class 0 with or without either feature
    unsure = np.concatenate([[[1.0, 1.01]] + 0.001 * rng.normal(size=(10, 2)),
                             [[3.0, 3.03]] + 0.001 * rng.normal(size=(10, 2))])
    features = torch.tensor(np.concatenate([confident, unsure]), dtype=torch.float32)
    # logits = the features: dropping x1 flips an unsure point to class 0 (prob. 0.75 per pass)
    picks = dropquery_select(features, lambda h: h, 2, p=0.75, passes=31, generator=torch.Generator().manual_seed(0))
    assert sorted((picks >= 40).tolist()) == [True, True]
    assert sorted(((picks - 40) // 10).tolist()) == [0, 1]  # one from each unsure group


def test_centroid_initial_set_takes_the_point_nearest_each_blob_centre():
    points, blob = blobs([25, 20, 15], spread=0.05, seed=4)
    picks = centroid_initial(points, 3)
    assert sorted(blob[picks].tolist()) == [0, 1, 2]
    for b in range(3):
        members = np.flatnonzero(blob == b)
        centre = points[members].mean(0)
        assert picks[blob[picks] == b][0] == members[np.argmin(((points[members] - centre) ** 2).sum(1))]


# ------------------------------------------------------------------------ cold start and adapters

@pytest.mark.parametrize("name", ["TypiClust", "ProbCover", "MaxHerding", "DropQuery"])
def test_select_initial_works_without_labels(name):
    points, blob = blobs([30, 25, 20, 15], seed=2)
    picks = select_initial(name, points, 4, np.random.default_rng(0), classes=4)
    again = select_initial(name, points, 4, np.random.default_rng(0), classes=4)
    assert np.array_equal(picks, again) and len(set(picks.tolist())) == 4
    assert sorted(blob[picks].tolist()) == [0, 1, 2, 3]  # one per blob: each rule spreads over the blobs


def test_select_initial_refuses_an_unknown_rule():
    with pytest.raises(UserError, match="initial-set rule"):
        select_initial("UHerding", np.zeros((5, 2)), 2, np.random.default_rng(0))


def test_settings_are_declared_with_the_papers_defaults():
    assert get_strategy("TypiClust").params_from(None).neighbours == 20
    assert get_strategy("ProbCover").params_from(None).alpha == 0.95
    dropquery = get_strategy("DropQuery").params_from(None)
    assert (dropquery.p, dropquery.passes) == (0.75, 3)
    assert get_strategy("MaxHerding").params_from(None).search == "auto"


def test_dropquery_refuses_a_model_without_a_linear_head():
    ctx = tiny_context(np.arange(10, 30), 3)
    ctx.features()  # computed (and cached) with the tiny net, whose fc is its head
    assert len(get_strategy("DropQuery").select(ctx)) == 3
    ctx.model = torch.nn.Sequential()
    with pytest.raises(UserError, match="linear layer"):
        get_strategy("DropQuery").select(ctx)


def test_the_strategies_declare_what_reads_the_feature_source_and_what_needs_no_model():
    """Declared at registration (no table elsewhere): the feature source serves the strategies that
    select on embeddings alone; a cold start takes those that need no trained model."""
    from utils.methods.features import declared

    assert set(declared("embeddings")) == {"KCenterGreedy", "KMeansSampling", "CoreSet", "TypiClust", "ProbCover",
                                           "MaxHerding", "UHerding", "DropQuery"}
    assert set(declared("model_free")) == {"KCenterGreedy", "KMeansSampling", "CoreSet", "TypiClust", "ProbCover",
                                           "MaxHerding", "DropQuery"}


def test_dropquery_without_a_model_takes_its_centroid_initial_set():
    ctx = tiny_context(np.arange(0, 30), 4)
    ctx.features()  # the tiny net's features, cached
    ctx.labeled_idx, ctx.model = ctx.labeled_idx[:0], None  # a cold start: no trained model
    seed = int(np.random.default_rng(0).integers(2**31))  # the first draw of the context's rng (seed 0)
    expected = ctx.candidates[centroid_initial(ctx.features(), 4, seed=seed)]
    assert sorted(get_strategy("DropQuery").select(ctx).tolist()) == sorted(expected.tolist())

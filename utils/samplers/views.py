"""Strategies that score augmented views of the pool: the query rules of the toolkit's MixMatch
strategies ssl_Consistency, ssl_Diff2AugDirect and ssl_Diff2AugKmeans (spec 003 §5; its ssl_Random and
ssl_LC query as RandomSampling and LeastConfidence). A view is the training augmentation (random crop
and flip) of the uint8 images, scored with the model in eval mode; views come from the global torch RNG.
"""

from __future__ import annotations

import numpy as np
import torch

from utils.core.config import Key
from utils.core.train import softmax_probs
from utils.samplers.registry import QueryContext, register_scorer, register_selector
from utils.samplers.uncertainty import margin_scores

CONSISTENCY_VIEWS = 50  # the toolkit's ssl_Consistency
DIFF2AUG_CLUSTERS = 20  # the toolkit's ssl_Diff2AugKmeans


def view_variance(view_probs) -> torch.Tensor:
    """sum_c Var_v p_c(view_v(x)) over views (population variance), accumulated view by view
    (Welford) from an iterable of ``[N, C]`` softmax outputs: ``[N]`` (Gao et al., ECCV'20, the toolkit's
    simplification: weak views, no un-augmented one)."""
    mean = m2 = None
    for count, probs in enumerate(view_probs, start=1):
        probs = probs.double()
        if mean is None:
            mean, m2 = probs.clone(), torch.zeros_like(probs)
            continue
        delta = probs - mean
        mean += delta / count
        m2 += delta * (probs - mean)
    return (m2 / count).sum(1).float()


def stratified_by_cluster(order: np.ndarray, clusters: np.ndarray, query_size: int) -> np.ndarray:
    """The toolkit's ssl_Diff2AugKmeans allocation: ``order`` ranks the candidates (most uncertain first),
    ``clusters`` their cluster ids (0..K-1). Cluster c takes its first floor(k |U_c| / |U|) in that
    order; the shortfall is filled one per cluster per pass from cluster 0 upward (its next in order),
    skipping exhausted clusters. Positions into the candidates, cluster by cluster."""
    n, k = len(order), min(query_size, len(order))
    by_cluster = order[np.argsort(clusters[order], kind="stable")]  # cluster-major, rank order within
    _, starts, sizes = np.unique(clusters[by_cluster], return_index=True, return_counts=True)
    quota = sizes * k // n
    short = k - int(quota.sum())
    while short > 0:  # one more per non-exhausted cluster per pass (at most K passes of a vector step)
        room = quota < sizes
        extra = np.cumsum(room) <= short
        quota += room & extra
        short = k - int(quota.sum())
    ranks = np.arange(len(by_cluster)) - np.repeat(starts, sizes)
    return by_cluster[ranks < np.repeat(quota, sizes)]


def two_view_margins(ctx: QueryContext) -> torch.Tensor:
    """Margin (top-1 minus top-2) of the mean of the plain view's and one training view's softmax."""
    plain = ctx.probs()
    augmented = ctx.predict(softmax_probs, transform=ctx.data.train_transform)
    return margin_scores((plain + augmented) / 2)


@register_scorer("ConsistencySampling", aliases=("consistency",), prefix="CONSISTENCY", params={
    "VIEWS": Key(CONSISTENCY_VIEWS, "ConsistencySampling: augmented views of every candidate (the toolkit's "
                 "ssl_Consistency: 50)", minimum=2)})
def consistency(ctx: QueryContext) -> torch.Tensor:
    """The toolkit's ssl_Consistency: the largest variance of the softmax over CONSISTENCY_VIEWS
    training views."""
    return view_variance(ctx.predict(softmax_probs, transform=ctx.data.train_transform)
                         for _ in range(ctx.params.views))


@register_scorer("TwoViewMargin", aliases=("diff2aug_direct",))
def two_view_margin(ctx: QueryContext) -> torch.Tensor:
    """The toolkit's ssl_Diff2AugDirect: the smallest margins of the two-view mean (no difference
    between the views is computed, despite the name)."""
    return -two_view_margins(ctx)


@register_selector("TwoViewMarginKMeans", aliases=("diff2aug_kmeans",), prefix="DIFF2AUG", params={
    "CLUSTERS": Key(DIFF2AUG_CLUSTERS, "TwoViewMarginKMeans: k-means clusters the query is stratified over (the "
                    "toolkit's ssl_Diff2AugKmeans: 20)", minimum=1)})
def two_view_margin_kmeans(ctx: QueryContext) -> torch.Tensor:
    """The toolkit's ssl_Diff2AugKmeans: the two-view margin ranking stratified over the k-means clusters
    (DIFF2AUG_CLUSTERS, scikit-learn, seeded) of the whole pool's embeddings, labeled images included;
    each candidate's own penultimate embedding (the toolkit gives every image of a batch the embedding
    of the batch's second image)."""
    from sklearn.cluster import KMeans

    clusters = ctx.params.clusters
    points = torch.cat([ctx.features(), ctx.labeled_features()]).double().numpy()
    clusters = min(clusters, len(points))
    labels = KMeans(clusters, n_init=1, random_state=int(ctx.rng.integers(2**31))).fit(points).labels_
    order = torch.argsort(two_view_margins(ctx), stable=True).numpy()  # smallest margin first
    return torch.from_numpy(stratified_by_cluster(order, labels[: len(ctx.candidates)], ctx.query_size))

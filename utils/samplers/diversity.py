"""Diversity-based strategies over embeddings: k-center greedy (Sener & Savarese, ICLR'18)."""

import warnings

import numpy as np
import torch

from utils.core.config import Key
from utils.samplers.registry import Need, QueryContext, register_selector
from utils.samplers.uncertainty import margin_scores

CHUNK_ELEMENTS = 2**24  # distance-matrix blocks stay below 64 MB of float32


def min_sq_distances(points: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """min_j ||points_i - centers_j||^2 for every point, computed in blocks (never N x L)."""
    result = torch.full((len(points),), float("inf"), dtype=torch.float32, device=points.device)
    if len(centers) == 0:
        return result
    point_norms = points.pow(2).sum(1)
    rows = max(1, CHUNK_ELEMENTS // max(1, len(centers)))
    cols = max(1, CHUNK_ELEMENTS // rows)
    for start in range(0, len(centers), cols):
        block = centers[start:start + cols]
        block_norms = block.pow(2).sum(1)
        for row in range(0, len(points), rows):
            part = points[row:row + rows]
            dist = point_norms[row:row + rows, None] + block_norms[None] - 2 * (part @ block.T)
            result[row:row + rows] = torch.minimum(result[row:row + rows], dist.min(1).values)
    return result.clamp_min_(0)


def kcenter_greedy(pool_emb: torch.Tensor, labeled_emb: torch.Tensor, query_size: int) -> torch.Tensor:
    """Furthest-first traversal (Sener & Savarese, Alg. 1): repeatedly take the pool point
    farthest from the labeled set and the points taken so far. Returns ``query_size`` indices
    into ``pool_emb`` in pick order; O(N D) memory, one N x D mat-vec per pick."""
    pool = pool_emb.float()
    labeled = labeled_emb.float().to(pool.device)
    if query_size > len(pool):
        raise ValueError(f"cannot pick {query_size} centres from {len(pool)} points")
    min_dist = min_sq_distances(pool, labeled)
    norms = pool.pow(2).sum(1)
    chosen = torch.empty(query_size, dtype=torch.long)
    for i in range(query_size):
        pick = int(torch.argmax(min_dist))  # the first of equal maxima: deterministic
        chosen[i] = pick
        dist = (norms + norms[pick] - 2 * torch.mv(pool, pool[pick])).clamp_min_(0)
        min_dist = torch.minimum(min_dist, dist)
        min_dist[pick] = -1.0  # never again, even among exact duplicates
    return chosen


@register_selector("KCenterGreedy", aliases=("kcenter", "k_center_greedy"), embeddings=True, model_free=True)
def kcenter_positions(ctx: QueryContext) -> torch.Tensor:
    """Greedy k-center on the penultimate embeddings of the candidates and the labeled set."""
    device = ctx.dist.device
    return kcenter_greedy(ctx.features().to(device), ctx.labeled_features().to(device), ctx.query_size)


def badge_select(probs: torch.Tensor, emb: torch.Tensor, query_size: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """BADGE (Ash et al., ICLR'20, Alg. 1): k-means++ seeding over the gradient embeddings
    g_i = (p_i - onehot(argmax p_i)) (x) h_i, the last-layer gradient of the loss at the predicted
    label. g is never formed: ||g_i - g_j||^2 = |a_i|^2 |h_i|^2 + |a_j|^2 |h_j|^2 - 2 (a_i.a_j)(h_i.h_j)
    with a = p - onehot, so memory is O(N (C + D)) and each pick costs two mat-vecs.
    The first centre is the largest ||g_i||; the next ones are drawn with probability ~ D^2,
    the squared distance to the nearest centre. Returns positions in pick order."""
    if query_size > len(probs):
        raise ValueError(f"cannot pick {query_size} centres from {len(probs)} points")
    a = probs.double().clone()
    a[torch.arange(len(a)), probs.argmax(1)] -= 1.0
    emb = emb.float().to(probs.device)
    sq_norms = a.pow(2).sum(1) * emb.double().pow(2).sum(1)
    chosen = torch.empty(query_size, dtype=torch.long)
    pick = int(torch.argmax(sq_norms))
    min_dist = torch.full_like(sq_norms, float("inf"))
    for i in range(query_size):
        chosen[i] = pick
        dots = torch.mv(a, a[pick]) * torch.mv(emb, emb[pick]).double()
        min_dist = torch.minimum(min_dist, (sq_norms + sq_norms[pick] - 2 * dots).clamp_min_(0))
        min_dist[pick] = 0.0
        if i + 1 == query_size:
            break
        if min_dist.sum() > 0:
            weights = min_dist
        else:  # every point left coincides with a centre: uniform over the points not yet chosen
            weights = torch.ones_like(min_dist).index_fill_(0, chosen[: i + 1].to(min_dist.device), 0)
        pick = _draw(weights, generator)
    return chosen


def _draw(weights: torch.Tensor, generator: torch.Generator | None) -> int:
    """One index drawn with probability proportional to ``weights`` (inverse CDF: a cumulative sum
    and a binary search, cheaper than torch.multinomial on large vectors). Zero weights are never
    drawn."""
    cdf = torch.cumsum(weights, 0)
    u = torch.rand(1, generator=generator, dtype=cdf.dtype, device=cdf.device) * cdf[-1]
    return int(torch.searchsorted(cdf, u, right=True).clamp_max_(len(cdf) - 1))


@register_selector("BadgeSampling", aliases=("badge",))
def badge_positions(ctx: QueryContext) -> torch.Tensor:
    device = ctx.dist.device
    generator = torch.Generator(device=device).manual_seed(int(ctx.rng.integers(2**31)))
    return badge_select(ctx.probs().to(device), ctx.features().to(device), ctx.query_size, generator)


def nearest_unique(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Greedy unique nearest neighbours, exact: the centres, in the given order, each take the point
    nearest to them (squared L2 in float32; of equal distances the lowest index) among the points no
    earlier centre took, however many centres share the same neighbours. Every centre searches the
    whole pool: distances of a block of centres to all points, CHUNK_ELEMENTS floats (one row if the
    pool is larger). Returns one point index per centre."""
    if len(centres) > len(points):
        raise ValueError(f"cannot give {len(centres)} centres distinct points out of {len(points)}")
    pool = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32))
    queries = torch.from_numpy(np.ascontiguousarray(centres, dtype=np.float32))
    norms = pool.pow(2).sum(1)
    taken = torch.zeros(len(pool), dtype=torch.bool)
    chosen = np.empty(len(queries), dtype=np.int64)
    rows = max(1, CHUNK_ELEMENTS // max(1, len(pool)))
    for start in range(0, len(queries), rows):
        # ||p||^2 - 2 p.c: the squared distance less ||c||^2, which does not change a row's argmin
        dist = torch.addmm(norms, queries[start:start + rows], pool.T, alpha=-2)
        for offset, row in enumerate(dist):  # a loop over centres, one masked argmin over the pool each
            pick = int(torch.argmin(row.masked_fill_(taken, float("inf"))))
            chosen[start + offset] = pick
            taken[pick] = True
    return chosen


KMEANS_RESTARTS = 10  # scikit-learn 1.0.2's n_init, the toolkit's


def kmeans_select(emb: torch.Tensor, query_size: int, seed: int = 0) -> torch.Tensor:
    """The toolkit's KMeansSampling: scikit-learn k-means on the whole pool (k = query size,
    k-means++ seeding, the best of KMEANS_RESTARTS runs by inertia, Lloyd until tol 1e-4 or 300
    iterations; in float64, whose seeding scikit-learn runs about 10x faster than float32's), then
    from every cluster its member nearest the centre (squared L2; of equal distances the lowest
    position), in cluster order. Clusters left empty (only when the pool has fewer distinct points
    than k) take the nearest points not yet picked (``nearest_unique``), so the answer is always
    min(query_size, N) distinct positions."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    points = np.ascontiguousarray(emb.double().cpu().numpy())
    if query_size >= len(points):
        return torch.arange(len(points))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # fewer distinct points than clusters: handled below
        kmeans = KMeans(query_size, n_init=KMEANS_RESTARTS, random_state=seed % 2**32).fit(points)
    labels, centres = kmeans.labels_, kmeans.cluster_centers_
    diff = centres[labels]
    diff -= points
    by_cluster = np.lexsort((np.einsum("ij,ij->i", diff, diff), labels))  # cluster, distance, position
    nearest = by_cluster[np.r_[True, labels[by_cluster][1:] != labels[by_cluster][:-1]]]
    chosen = np.empty(query_size, dtype=np.int64)
    chosen[labels[nearest]] = nearest
    empty = np.setdiff1d(np.arange(query_size), labels)
    if len(empty):
        free = np.setdiff1d(np.arange(len(points)), nearest)
        chosen[empty] = free[nearest_unique(points[free], centres[empty])]
    return torch.from_numpy(chosen)


@register_selector("KMeansSampling", aliases=("kmeans", "k_means"), embeddings=True, model_free=True)
def kmeans_positions(ctx: QueryContext) -> torch.Tensor:
    return kmeans_select(ctx.features(), ctx.query_size, seed=int(ctx.rng.integers(2**31)))


def hac_labels(emb: torch.Tensor, n_clusters: int = 20, max_points: int = 5000, seed: int = 0) -> torch.Tensor:
    """Average-linkage agglomerative clustering (Euclidean) of the embeddings. Above
    ``max_points`` points the tree is built on a seeded random sample and every other point
    takes the cluster of its nearest sampled point, so memory stays O(max_points^2)."""
    import faiss
    from sklearn.cluster import AgglomerativeClustering

    points = np.ascontiguousarray(emb.float().cpu().numpy())
    sample = np.arange(len(points))
    if len(points) > max_points:
        sample = np.sort(np.random.default_rng(seed).choice(len(points), max_points, replace=False))
    n_clusters = min(n_clusters, len(sample))
    sample_labels = AgglomerativeClustering(n_clusters=n_clusters, linkage="average").fit_predict(points[sample])
    if len(sample) == len(points):
        return torch.from_numpy(sample_labels.astype(np.int64))
    index = faiss.IndexFlatL2(points.shape[1])
    index.add(points[sample])
    _, nearest = index.search(points, 1)
    return torch.from_numpy(sample_labels[nearest[:, 0]].astype(np.int64))


def cluster_margin_select(margins: torch.Tensor, labels: torch.Tensor, query_size: int,
                          margin_multiple: int = 10, generator: torch.Generator | None = None) -> torch.Tensor:
    """Cluster-Margin (Citovsky et al., NeurIPS'21, Alg. 1): take the ``margin_multiple * k``
    lowest-margin points (k_m = ``margin_multiple``), group them by cluster, and pick round-robin
    over the clusters from the smallest to the largest, each time the lowest-margin point left in
    the cluster (as the toolkit) or, given a ``generator``, a random one (as the paper).
    ``margins`` are p_(1) - p_(2)."""
    order = torch.argsort(margins, stable=True)[: min(len(margins), margin_multiple * query_size)]
    if generator is not None:  # a random order within each cluster: the sorts below are stable
        order = order[torch.randperm(len(order), generator=generator)]
    member_labels = labels[order]
    _, dense, counts = torch.unique(member_labels, return_inverse=True, return_counts=True)
    cluster_rank = torch.empty_like(counts)
    cluster_rank[torch.argsort(counts, stable=True)] = torch.arange(len(counts))  # smallest cluster first
    by_cluster = torch.argsort(dense, stable=True)  # members grouped by cluster, in the order above
    starts = torch.cumsum(counts, 0) - counts
    rank_in_cluster = torch.empty_like(dense)
    rank_in_cluster[by_cluster] = torch.arange(len(dense)) - starts[dense[by_cluster]]
    round_robin = torch.argsort(rank_in_cluster * len(counts) + cluster_rank[dense], stable=True)
    return order[round_robin[:query_size]]


@register_selector("ClusterMarginSampling", aliases=("cluster_margin", "clustermargin"), needs=(Need.STATE,),
                   prefix="CLUSTER_MARGIN", params={
    "KM": Key(10, "ClusterMarginSampling: the k_m x query-size lowest-margin points are clustered (the toolkit's 10)",
              minimum=1),
    "CLUSTERS": Key(20, "ClusterMarginSampling: clusters of the average-linkage HAC (the toolkit's 20)", minimum=1),
    "PICK": Key("lowest", "ClusterMarginSampling: the point taken from a cluster in each round: lowest margin (the "
                "toolkit) or random (the paper)", choices=("lowest", "random"))})
def cluster_margin_positions(ctx: QueryContext) -> torch.Tensor:
    """HAC labels (CLUSTER_MARGIN_CLUSTERS clusters) of every training sample are computed at the first
    query of a trial (with that cycle's model) and kept in ``ctx.extras['state']`` for the trial's later
    queries; then cluster_margin_select with k_m = CLUSTER_MARGIN_KM, picking as CLUSTER_MARGIN_PICK."""
    params = ctx.params
    state = ctx.extras["state"]
    if "cluster_margin_labels" not in state:
        everything = np.concatenate([ctx.labeled_idx, ctx.candidates])
        emb = ctx.predict(lambda out, _y: out.features.float(), everything)
        labels = torch.full((len(ctx.data.train),), -1, dtype=torch.long)
        labels[torch.as_tensor(everything)] = hac_labels(emb, params.clusters, seed=int(ctx.rng.integers(2**31)))
        state["cluster_margin_labels"] = labels
    margins = -margin_scores(ctx.probs())
    generator = torch.Generator().manual_seed(int(ctx.rng.integers(2**31))) if params.pick == "random" else None
    return cluster_margin_select(margins, state["cluster_margin_labels"][torch.as_tensor(ctx.candidates)],
                                 ctx.query_size, params.km, generator)

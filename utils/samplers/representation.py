"""Representation-based low-budget strategies over embeddings: TypiClust (Hacohen et al., ICML'22),
ProbCover (Yehuda et al., NeurIPS'22), MaxHerding (Bae et al., 2024), UHerding (Bae et al.,
ICLR'25) and DropQuery (Gupte et al., TMLR'24), plus ``select_initial`` for a cold start.

Every rule is a pure function over embeddings (rows of a float array; the labeled set may be empty)
returning positions into the candidates; the registered adapters read ``ctx.features()`` and
``ctx.labeled_features()``. Embeddings are L2-normalised first (the TypiClust/ProbCover authors'
``load_features``, scikit-activeml's herding).

Neighbour search never forms an N x N matrix: faiss, exact (``IndexFlatL2``, N^2 D work) or an
inverted-file index (``IndexIVFFlat``: 4 sqrt(N) lists, IVF_PROBES of them probed per query).
``<PREFIX>_SEARCH=auto`` (the default) is exact up to EXACT_MAX_POINTS points and IVF above;
bench/low_budget.py prints the IVF neighbours' recall against exact search.
"""

import math

import numpy as np
import torch

from utils.core.config import Key
from utils.core.errors import UserError
from utils.samplers.diversity import kmeans_select
from utils.samplers.registry import QueryContext, linear_head, register_selector

SEARCH_CHOICES = ("auto", "exact", "ivf")
EXACT_MAX_POINTS = 50_000  # auto: exact search (N^2 D work) up to here, IVF above
IVF_PROBES = 32  # inverted lists probed per query
QUERY_ROWS = 8192  # queries per faiss call (bounds the range-search results held at once)
MAX_EDGES = 100_000_000  # ProbCover's delta-graph: 2 x 5 bytes per edge (the graph and its transpose)

TYPICLUST_MIN_CLUSTER_SIZE = 5  # the authors' code drops clusters of at most 5 points
TYPICLUST_MAX_CLUSTERS = 500  # ... and clusters into min(|L| + B, 500)
TYPICLUST_KMEANS_MAX = 50  # ... with KMeans up to 50 clusters, MiniBatchKMeans (batches of 5,000) above
MAXHERDING_SIGMA = 1.0  # MaxHerding's Gaussian kernel width on unit-norm embeddings
SEEDING_SAMPLE = 20_000  # k-means++ seeds are drawn on at most this many points
PURITY_SAMPLE = 10_000  # points whose purity estimates ProbCover's delta
PURITY_NEIGHBOURS = 50  # neighbours searched for each point's nearest differently pseudo-labeled point


def _search_key(name: str) -> Key:
    return Key("auto", f"{name}: neighbour search: exact (faiss IndexFlatL2), ivf (faiss IndexIVFFlat, approximate) "
               f"or auto (exact up to {EXACT_MAX_POINTS:,} points, ivf above)", choices=SEARCH_CHOICES)


def normalise(emb, out: np.ndarray | None = None) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), as C-contiguous float32, written into ``out``
    if given; else a new array, except for a float32 array whose rows are unit-norm already (returned
    as it is, no copy)."""
    points = np.ascontiguousarray(torch.as_tensor(emb).detach().float().cpu().numpy())
    norms = np.linalg.norm(points, axis=1, keepdims=True)
    if out is None and np.all(np.abs(norms - 1) < 1e-5):
        return points
    out = np.zeros_like(points) if out is None else out
    return np.divide(points, norms, out=out, where=norms > 0)


def joined(labeled_emb, emb) -> tuple:
    """(unit-norm rows of the labeled set and then of the candidates, in one array; the labeled count)."""
    if len(labeled_emb) == 0:
        return normalise(emb), 0
    n_labeled = len(labeled_emb)
    points = np.zeros((n_labeled + len(emb), np.shape(emb)[1]), np.float32)
    normalise(labeled_emb, points[:n_labeled])
    normalise(emb, points[n_labeled:])
    return points, n_labeled


def resolve_search(search: str, n: int) -> str:
    """'exact' or 'ivf' for ``n`` points under the setting ``search`` (auto: exact up to EXACT_MAX_POINTS)."""
    if search not in SEARCH_CHOICES:
        raise ValueError(f"search must be one of {SEARCH_CHOICES}, not {search!r}")
    return "exact" if search == "exact" or (search == "auto" and n <= EXACT_MAX_POINTS) else "ivf"


def build_index(points: np.ndarray, search: str = "auto", seed: int = 0):
    """A faiss index holding ``points``: IndexFlatL2, or IndexIVFFlat with 4 sqrt(N) lists (at least 39
    training points each, trained on a seeded sample of at most 64 per list), IVF_PROBES probed."""
    import faiss

    n, dim = points.shape
    if resolve_search(search, n) == "exact":
        index = faiss.IndexFlatL2(dim)
    else:
        lists = max(1, min(int(4 * math.sqrt(n)), n // 39))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, lists)
        index.cp.seed = seed % 2**31
        sample = np.random.default_rng(seed).choice(n, min(n, 64 * lists), replace=False)
        index.train(points[np.sort(sample)])
        index.nprobe = min(IVF_PROBES, lists)
    index.add(points)
    return index


def knn(points: np.ndarray, k: int, search: str = "auto", seed: int = 0, rows: np.ndarray | None = None) -> tuple:
    """The ``k`` nearest other points of every point (of ``rows`` only, if given): (squared L2 distances
    [R, k] float32, indices [R, k] int64), nearest first. A point's own entry is dropped (or, among exact
    duplicates, the last of the k + 1 found); an approximate search that finds fewer fills with index -1
    and distance inf."""
    n = len(points)
    rows = np.arange(n) if rows is None else np.asarray(rows)
    k = min(k, n - 1)
    if k <= 0:
        return np.zeros((len(rows), 0), np.float32), np.zeros((len(rows), 0), np.int64)
    index = build_index(points, search, seed)
    dist = np.empty((len(rows), k + 1), np.float32)
    idx = np.empty((len(rows), k + 1), np.int64)
    for start in range(0, len(rows), QUERY_ROWS):
        block = slice(start, start + QUERY_ROWS)
        dist[block], idx[block] = index.search(points[rows[block]], k + 1)
    dist[idx < 0] = np.inf
    keep = idx != rows[:, None]
    keep[keep.all(1), -1] = False
    return dist[keep].reshape(len(rows), k), idx[keep].reshape(len(rows), k)


def neighbour_recall(points: np.ndarray, idx: np.ndarray, sample: int = 1000, seed: int = 0) -> float:
    """The fraction of the exact k nearest neighbours of a seeded sample of points that ``idx`` (an
    approximate knn's [N, k] indices) holds: recall@k of the approximate search."""
    import faiss

    rows = np.sort(np.random.default_rng(seed).choice(len(points), min(sample, len(points)), replace=False))
    index = faiss.IndexFlatL2(points.shape[1])
    index.add(points)
    k = idx.shape[1]
    _, exact = index.search(points[rows], k + 1)
    keep = exact != rows[:, None]
    keep[keep.all(1), -1] = False
    exact = exact[keep].reshape(len(rows), k)
    found = (exact[:, :, None] == idx[rows][:, None, :]).any(2)
    return float(found.mean())


def kmeans_labels(points: np.ndarray, clusters: int, seed: int = 0) -> np.ndarray:
    """k-means cluster labels as TypiClust's authors cluster: scikit-learn KMeans up to
    TYPICLUST_KMEANS_MAX clusters, MiniBatchKMeans (batches of 5,000) above; one run from k-means++
    seeds drawn on a seeded sample of at most SEEDING_SAMPLE points in float64 (scikit-learn seeds
    float32 data about 20x slower; MiniBatchKMeans seeds on 15,000 points anyway)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans, kmeans_plusplus

    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(points), min(len(points), SEEDING_SAMPLE), replace=False))
    seeds, _ = kmeans_plusplus(points[sample].astype(np.float64), clusters, random_state=seed % 2**32)
    seeds = seeds.astype(points.dtype)
    if clusters <= TYPICLUST_KMEANS_MAX:
        model = KMeans(clusters, init=seeds, n_init=1, random_state=seed % 2**32)
    else:
        model = MiniBatchKMeans(clusters, init=seeds, batch_size=5000, n_init=1, random_state=seed % 2**32)
    return model.fit_predict(points)


def typicality(points: np.ndarray, k: int, search: str = "auto", seed: int = 0) -> np.ndarray:
    """Hacohen et al., Eq. 3: Typicality(x) = (1/K sum_{x_i in KNN(x)} ||x - x_i||_2)^-1 (1e-5 added to
    the mean, as the authors' code). Zero neighbours: every point is equally typical (ones)."""
    if k <= 0:
        return np.ones(len(points))
    sq, _ = knn(points, k, search, seed)
    return 1.0 / (np.sqrt(np.maximum(sq, 0)).mean(1) + 1e-5)


def typiclust_select(emb, labeled_emb, budget: int, neighbours: int = 20, seed: int = 0,
                     search: str = "auto") -> np.ndarray:
    """TypiClust (Hacohen et al., Alg. 1, with the authors' code's constants): k-means of labeled +
    candidates into min(|L| + B, 500) clusters; clusters of more than 5 points, ordered by fewest labeled
    members, then largest; pick i takes, from cluster i (cycling), the most typical of its members not
    yet labeled or picked (typicality among those members, K = min(``neighbours``, n // 2)).
    Returns ``budget`` positions into ``emb`` in pick order; works with no labeled set."""
    points, n_labeled = joined(labeled_emb, emb)
    if budget > len(points) - n_labeled:
        raise ValueError(f"cannot pick {budget} of {len(points) - n_labeled} points")
    clusters = min(n_labeled + budget, TYPICLUST_MAX_CLUSTERS, len(points))
    labels = kmeans_labels(points, clusters, seed)
    sizes = np.bincount(labels, minlength=clusters)
    labeled_counts = np.bincount(labels[:n_labeled], minlength=clusters)
    kept = np.flatnonzero(sizes > TYPICLUST_MIN_CLUSTER_SIZE)
    if len(kept) == 0:  # every cluster is tiny (a small pool): use them all
        kept = np.flatnonzero(sizes)
    order = kept[np.lexsort((-sizes[kept], labeled_counts[kept]))]
    by_cluster = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)])
    free = np.ones(len(points), dtype=bool)
    free[:n_labeled] = False
    free_count = sizes - labeled_counts
    chosen = np.empty(budget, dtype=np.int64)
    turn = 0
    for i in range(budget):
        if not free_count[order].any():  # the kept clusters are used up: go on with the tiny ones
            rest = np.flatnonzero(free_count)
            order, turn = rest[np.lexsort((-sizes[rest], labeled_counts[rest]))], 0
        while free_count[order[turn % len(order)]] == 0:
            turn += 1
        cluster = order[turn % len(order)]
        turn += 1
        members = by_cluster[starts[cluster]:starts[cluster + 1]]
        members = members[free[members]]
        pick = members[np.argmax(typicality(points[members], min(neighbours, len(members) // 2), search, seed))]
        free[pick] = False
        free_count[cluster] -= 1
        chosen[i] = pick - n_labeled
    return chosen


def pseudo_labels(points: np.ndarray, classes: int, seed: int = 0) -> np.ndarray:
    """ProbCover's pseudo-labels: k-means (k = ``classes``, one k-means++ run) fit on a seeded sample of
    at most SEEDING_SAMPLE points, every point labeled by its nearest centre (no copy of the pool)."""
    from sklearn.cluster import KMeans

    fit = np.sort(np.random.default_rng(seed).choice(len(points), min(len(points), SEEDING_SAMPLE), replace=False))
    kmeans = KMeans(min(classes, len(fit)), n_init=1, random_state=seed % 2**32).fit(points[fit])
    return kmeans.labels_ if len(fit) == len(points) else kmeans.predict(points)


def purity_delta(points: np.ndarray, classes: int, alpha: float = 0.95, seed: int = 0,
                 search: str = "auto") -> float:
    """ProbCover's radius (Yehuda et al., Sec. 4.1): the largest delta whose balls {x' : ||x - x'|| < delta}
    are pure (one k-means pseudo-label, k = ``classes``; k-means fit on a seeded sample of at most
    SEEDING_SAMPLE points) for at least ``alpha`` of the points.
    With r_i the distance from x_i to its nearest point of another pseudo-label, purity(delta) =
    mean(r >= delta), so delta is the (floor((1 - alpha) n) + 1)-th smallest of n values of r (no grid),
    taken over a seeded sample of PURITY_SAMPLE points (all of them if fewer). r_i is searched among the
    PURITY_NEIGHBOURS nearest points; where none of them differs, their farthest distance stands in (a
    lower bound: delta can only come out smaller, i.e. purer)."""
    labels = pseudo_labels(points, classes, seed)
    rows = np.arange(len(points))
    if len(points) > PURITY_SAMPLE:
        rows = np.sort(np.random.default_rng(seed).choice(len(points), PURITY_SAMPLE, replace=False))
    sq, idx = knn(points, PURITY_NEIGHBOURS, search, seed, rows)
    differ = (labels[np.maximum(idx, 0)] != labels[rows, None]) & (idx >= 0)
    first = np.where(differ.any(1), differ.argmax(1), sq.shape[1] - 1)
    r = np.sqrt(np.maximum(sq[np.arange(len(rows)), first], 0))
    m = min(int(math.floor((1 - alpha) * len(rows) + 1e-9)), len(rows) - 1)  # (1 - 0.9) * 90 = 8.99...
    return float(np.partition(r, m)[m])


def delta_graph(points: np.ndarray, delta: float, search: str = "auto", seed: int = 0):
    """ProbCover's graph as a sparse boolean CSR matrix: x -> y iff ||x - y|| < delta (faiss range
    search, squared radius; every point is in its own ball). More than MAX_EDGES edges is an error."""
    import scipy.sparse as sp

    n = len(points)
    index = build_index(points, search, seed)
    counts, columns, total = [], [], 0
    for start in range(0, n, QUERY_ROWS):
        lims, _, found = index.range_search(points[start:start + QUERY_ROWS], float(delta) ** 2)
        total += len(found)
        if total > MAX_EDGES:
            raise UserError(f"ProbCover: delta {delta:.4g} puts more than {MAX_EDGES:,} edges in the graph; "
                            "set a smaller PROBCOVER_DELTA")
        counts.append(np.diff(lims))
        columns.append(found.astype(np.int32))
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(counts))])
    graph = sp.csr_matrix((np.ones(total, dtype=bool), np.concatenate(columns), indptr), shape=(n, n))
    return graph


def probcover_select(emb, labeled_emb, budget: int, delta: float | None = None, classes: int = 10,
                     alpha: float = 0.95, rng: np.random.Generator | None = None, seed: int = 0,
                     search: str = "auto") -> np.ndarray:
    """ProbCover (Yehuda et al., Alg. 1): on the delta-graph of labeled + candidates, drop the edges into
    points the labeled balls cover, then ``budget`` times take the candidate of largest out-degree (the
    most uncovered points in its ball; of equal degrees the lowest position) and drop the edges into the
    points its ball covers. Once everything is covered, picks are uniform over the candidates left (the
    paper). ``delta`` None: ``purity_delta`` with ``classes`` and ``alpha``. Returns positions into ``emb``."""
    points, n_labeled = joined(labeled_emb, emb)
    n = len(points)
    if budget > n - n_labeled:
        raise ValueError(f"cannot pick {budget} of {n - n_labeled} points")
    rng = rng if rng is not None else np.random.default_rng(seed)
    if delta is None:
        delta = purity_delta(points, classes, alpha, seed, search)
    graph = delta_graph(points, delta, search, seed)
    into = graph.T.tocsr()  # row y: the points whose balls hold y
    covered = np.zeros(n, dtype=bool)
    covered[graph[:n_labeled].indices] = True
    degree = np.asarray(graph @ (~covered).astype(np.int64)).ravel()
    taken = np.zeros(n, dtype=bool)
    taken[:n_labeled] = True
    chosen = np.empty(budget, dtype=np.int64)
    for i in range(budget):
        pick = int(np.argmax(np.where(taken, -1, degree)))
        if degree[pick] <= 0:
            pick = int(rng.choice(np.flatnonzero(~taken)))
        ball = graph.indices[graph.indptr[pick]:graph.indptr[pick + 1]]
        new = ball[~covered[ball]]
        covered[new] = True
        degree -= np.bincount(into[new].indices, minlength=n)
        taken[pick] = True
        chosen[i] = pick - n_labeled
    return chosen


def herding_select(emb, labeled_emb, budget: int, sigma: float, neighbours: int = 100,
                   weights: np.ndarray | None = None, seed: int = 0, search: str = "auto") -> np.ndarray:
    """Greedy (uncertainty-)weighted generalised coverage on a kNN graph. MaxHerding (Bae et al. 2024,
    Alg. 1): C(S) = sum_x max_{s in L u S} k(x, s) with the Gaussian kernel k(x, s) = exp(-||x - s||^2 /
    sigma^2); each pick maximises the gain sum_x w(x) max(k(x, c) - m(x), 0), m(x) = max_{s in L u S}
    k(x, s); UHerding (Bae et al., ICLR'25, Eq. 4) weighs x by its uncertainty w(x) (``weights``, over
    the candidates; None: ones). The kernel of a candidate c is kept on c and its ``neighbours``
    nearest candidates (zero beyond); m from the labeled set is exact (each candidate's nearest labeled
    point). Of equal gains the lowest position. Returns ``budget`` positions into ``emb`` in pick order."""
    import faiss

    points, labeled = normalise(emb), normalise(labeled_emb)
    n = len(points)
    if budget > n:
        raise ValueError(f"cannot pick {budget} of {n} points")
    sq, idx = knn(points, neighbours, search, seed)
    missing = idx < 0
    cols = np.concatenate([np.arange(n)[:, None], np.where(missing, np.arange(n)[:, None], idx)], 1).astype(np.int32)
    del idx
    vals = np.concatenate([np.ones((n, 1), np.float32), np.exp(-np.where(missing, np.inf, sq) / sigma**2)], 1)
    weights = np.ones(n, np.float32) if weights is None else np.asarray(weights, np.float32)
    covered = np.zeros(n, np.float32)  # m(x)
    if len(labeled):
        index = faiss.IndexFlatL2(labeled.shape[1])
        index.add(labeled)
        nearest, _ = index.search(points, 1)
        covered = np.exp(-np.maximum(nearest[:, 0], 0) / sigma**2).astype(np.float32)
    import scipy.sparse as sp

    order = np.argsort(cols.ravel(), kind="stable")  # row x of ``holders``: the candidates c whose row holds x
    indptr = np.concatenate([[0], np.cumsum(np.bincount(cols.ravel(), minlength=n))])
    holders = sp.csr_matrix((np.ones(len(order), dtype=bool), (order // cols.shape[1]).astype(np.int32), indptr),
                            shape=(n, n))
    del order

    def gains(of: np.ndarray) -> np.ndarray:
        c = cols[of]
        return (weights[c] * np.maximum(vals[of] - covered[c], 0)).sum(1)

    gain = gains(np.arange(n))
    chosen = np.empty(budget, dtype=np.int64)
    taken = np.zeros(n, dtype=bool)
    for i in range(budget):
        pick = int(np.argmax(np.where(taken, -np.inf, gain)))
        better = vals[pick] > covered[cols[pick]]
        changed = cols[pick][better]
        covered[changed] = vals[pick][better]
        taken[pick] = True
        chosen[i] = pick
        affected = np.unique(holders[changed].indices)
        gain[affected] = gains(affected)
    return chosen


def adaptive_sigma(candidates: np.ndarray, labeled: np.ndarray, seed: int = 0, sample: int = 2000) -> float:
    """UHerding's kernel width (the paper's adaptive radius, as scikit-activeml): the smallest non-zero
    distance between labeled points; without two distinct labeled points, the median non-zero distance
    between candidates (on a seeded sample of at most ``sample`` of them). 1.0 if neither exists."""
    if len(labeled) > 1:
        sq, _ = knn(labeled, min(len(labeled) - 1, 8), "exact", seed)
        positive = sq[np.isfinite(sq) & (sq > 0)]
        if len(positive):
            return float(np.sqrt(positive.min()))
    rows = np.random.default_rng(seed).choice(len(candidates), min(sample, len(candidates)), replace=False)
    distances = torch.pdist(torch.from_numpy(candidates[np.sort(rows)]))
    distances = distances[distances > 0]
    return float(distances.median()) if len(distances) else 1.0


def margin_uncertainty(probs, temperature: float = 1.0) -> np.ndarray:
    """UHerding's uncertainty: 1 - (p_(1) - p_(2)) of the temperature-scaled softmax, softmax(log p / T)."""
    logp = torch.log(torch.as_tensor(probs).double().clamp_min(1e-300)) / temperature
    top = torch.softmax(logp, dim=1).topk(min(2, logp.shape[1]), dim=1).values
    margin = top[:, 0] - (top[:, 1] if top.shape[1] > 1 else 0)
    return (1 - margin).float().numpy()


def dropquery_select(features, head, budget: int, p: float = 0.75, passes: int = 3,
                     generator: torch.Generator | None = None, seed: int = 0) -> np.ndarray:
    """DropQuery (Gupte et al., Sec. 4): ``head`` (features -> logits) predicts every candidate from its
    features and from ``passes`` (M) copies with dropout p on the features (inverted scaling, as
    torch's dropout); the candidates whose prediction changes in more than M // 2 copies (the authors'
    ``mismatch > num_iter // 2``) are clustered by k-means into ``budget`` clusters and the member nearest
    each centre is taken (``kmeans_select``). Fewer such candidates than ``budget``: the ``budget`` most
    changed ones (scikit-activeml's fallback). Returns positions into ``features``."""
    features = torch.as_tensor(features).float()
    if budget > len(features):
        raise ValueError(f"cannot pick {budget} of {len(features)} points")
    changes = torch.zeros(len(features), dtype=torch.long)
    with torch.no_grad():
        for start in range(0, len(features), QUERY_ROWS):
            part = features[start:start + QUERY_ROWS]
            reference = head(part).argmax(1)
            for _ in range(passes):
                keep = torch.rand(part.shape, generator=generator) >= p
                changes[start:start + QUERY_ROWS] += head(part * keep / (1 - p)).argmax(1) != reference
    uncertain = torch.nonzero(changes > passes // 2).ravel()
    if len(uncertain) < budget:
        uncertain = torch.argsort(changes, descending=True, stable=True)[:budget]
    positions = uncertain.numpy()
    return positions[kmeans_select(features[positions], budget, seed=seed).numpy()]


def centroid_initial(emb, budget: int, seed: int = 0) -> np.ndarray:
    """DropQuery's initial set (Gupte et al., centroid init): k-means of the embeddings into ``budget``
    clusters, the point nearest each centre (``kmeans_select``)."""
    return kmeans_select(torch.as_tensor(normalise(emb)), budget, seed=seed).numpy()


def select_initial(name: str, embeddings, budget: int, rng: np.random.Generator, classes: int = 10,
                   search: str = "auto") -> np.ndarray:
    """A cold start without a trained model: ``budget`` positions into ``embeddings`` chosen by
    TypiClust, ProbCover (purity delta, ``classes`` pseudo-classes), MaxHerding (its default kernel
    width) or DropQuery (``centroid_initial``), each with its paper's defaults and an empty labeled set.
    UHerding needs a model's predictions: at a cold start use MaxHerding."""
    seed = int(rng.integers(2**31))
    empty = np.zeros((0, np.shape(embeddings)[1]), np.float32)
    key = name.lower()
    if key == "typiclust":
        return typiclust_select(embeddings, empty, budget, seed=seed, search=search)
    if key == "probcover":
        return probcover_select(embeddings, empty, budget, classes=classes, rng=rng, seed=seed, search=search)
    if key == "maxherding":
        return herding_select(embeddings, empty, budget, MAXHERDING_SIGMA, seed=seed, search=search)
    if key == "dropquery":
        return centroid_initial(embeddings, budget, seed=seed)
    raise UserError(f"no initial-set rule {name!r}; choose TypiClust, ProbCover, MaxHerding or DropQuery")


# ------------------------------------------------------------------------ registered adapters


def _seed(ctx: QueryContext) -> int:
    return int(ctx.rng.integers(2**31))


@register_selector("TypiClust", aliases=("typical_clustering",), embeddings=True, model_free=True, params={
    "NEIGHBOURS": Key(20, "TypiClust: K nearest neighbours of the typicality (Hacohen et al.: 20)", minimum=1),
    "SEARCH": _search_key("TypiClust")})
def typiclust_positions(ctx: QueryContext) -> np.ndarray:
    return typiclust_select(ctx.features(), ctx.labeled_features(), ctx.query_size, ctx.params.neighbours,
                            seed=_seed(ctx), search=ctx.params.search)


@register_selector("ProbCover", aliases=("prob_cover",), embeddings=True, model_free=True, params={
    "DELTA": Key(0.0, "ProbCover: ball radius on unit-norm embeddings; 0: the purity heuristic (the largest delta "
                      "whose balls are pure for ALPHA of the points, k-means pseudo-labels)", minimum=0),
    "ALPHA": Key(0.95, "ProbCover: purity the heuristic's delta keeps (Yehuda et al.: 0.95)", above=0, below=1),
    "SEARCH": _search_key("ProbCover")})
def probcover_positions(ctx: QueryContext) -> np.ndarray:
    delta = ctx.params.delta or None
    return probcover_select(ctx.features(), ctx.labeled_features(), ctx.query_size, delta, ctx.data.num_classes,
                            ctx.params.alpha, rng=ctx.rng, seed=_seed(ctx), search=ctx.params.search)


@register_selector("MaxHerding", aliases=("max_herding",), embeddings=True, model_free=True, params={
    "SIGMA": Key(MAXHERDING_SIGMA, "MaxHerding: Gaussian kernel width, k = exp(-d^2 / sigma^2), on unit-norm "
                                   "embeddings", above=0),
    "NEIGHBOURS": Key(100, "MaxHerding: the kernel is kept on each point's nearest neighbours (zero beyond)",
                      minimum=1),
    "SEARCH": _search_key("MaxHerding")})
def maxherding_positions(ctx: QueryContext) -> np.ndarray:
    return herding_select(ctx.features(), ctx.labeled_features(), ctx.query_size, ctx.params.sigma,
                          ctx.params.neighbours, seed=_seed(ctx), search=ctx.params.search)


@register_selector("UHerding", aliases=("uncertainty_herding",), embeddings=True, params={
    "TEMPERATURE": Key(1.0, "UHerding: softmax temperature of the margin uncertainty", above=0),
    "SIGMA": Key(0.0, "UHerding: Gaussian kernel width; 0: adaptive (the smallest distance between labeled "
                      "embeddings; with none, the median distance between candidates)", minimum=0),
    "NEIGHBOURS": Key(100, "UHerding: the kernel is kept on each point's nearest neighbours (zero beyond)",
                      minimum=1),
    "SEARCH": _search_key("UHerding")})
def uherding_positions(ctx: QueryContext) -> np.ndarray:
    seed = _seed(ctx)
    candidates, labeled = normalise(ctx.features()), normalise(ctx.labeled_features())
    sigma = ctx.params.sigma or adaptive_sigma(candidates, labeled, seed)
    weights = margin_uncertainty(ctx.probs(), ctx.params.temperature)
    return herding_select(candidates, labeled, ctx.query_size, sigma, ctx.params.neighbours, weights, seed=seed,
                          search=ctx.params.search)


@register_selector("DropQuery", aliases=("drop_query",), embeddings=True, model_free=True, params={
    "P": Key(0.75, "DropQuery: dropout probability on the features (Gupte et al.: 0.75)", above=0, below=1),
    "PASSES": Key(3, "DropQuery: M, the dropout copies of each prediction (Gupte et al.: 3)", minimum=1)})
def dropquery_positions(ctx: QueryContext) -> np.ndarray:
    """DropQuery's query; with no trained model yet (a cold start), its centroid initial set."""
    features = ctx.features()
    if ctx.model is None:
        return centroid_initial(features, ctx.query_size, seed=_seed(ctx))
    head = linear_head(ctx.model, features[:256], ctx.probs()[:256], "DropQuery")
    device = next(head.parameters()).device
    generator = torch.Generator().manual_seed(_seed(ctx))
    return dropquery_select(features, lambda h: head(h.to(device)).cpu(), ctx.query_size, ctx.params.p,
                            ctx.params.passes, generator, seed=_seed(ctx))

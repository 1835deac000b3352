"""Label propagation on a kNN graph of embeddings (Iscen et al., CVPR'19, "Label Propagation for
Deep Semi-supervised Learning"; Zhou et al., 2004), as Rethinking deep AL uses it for its +SEMI
training and its jLP acquisition (spec B.5, B.6).

    W      = sparse kNN affinities s_ij^gamma (cosine, k neighbours, no self), W <- W + W^T
    W_n    = D^-1/2 W D^-1/2
    F      = (I - alpha W_n)^-1 Y            (conjugate gradient, one right-hand side per class)
    P      = rows of max(F, 0) normalised to sum 1; pseudo-label argmax P
    weight = 1 - H(P) / log C, divided by its maximum
"""

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import cg

from utils.core.progress import stage_counter

KNN = 50
GAMMA = 3
ALPHA = 0.99
CG_TOL = 1e-6
CG_ITERATIONS = 20
SEARCH_CHUNK = 8192  # queries per faiss search


def knn_graph(features, k=KNN, gamma=GAMMA, use_gpu=False, desc="label propagation"):
    """The normalised affinity matrix W_n (scipy CSR, N x N with about 2 k N entries) of the
    L2-normalised ``features`` [N, D] (numpy float32). Exact inner-product search with faiss in
    chunks of queries; a GPU index when ``use_gpu`` and faiss has one. Under an active run a slow
    search reports ``[<desc>] kNN search n/N images`` per chunk (``utils.core.loop``)."""
    import faiss

    features = np.ascontiguousarray(features, dtype=np.float32)
    features /= np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    n, dim = features.shape
    k = min(k, n - 1)
    index = faiss.IndexFlatIP(dim)
    if use_gpu and hasattr(faiss, "StandardGpuResources"):
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    index.add(features)
    sims = np.empty((n, k), dtype=np.float32)
    neighbours = np.empty((n, k), dtype=np.int64)
    with stage_counter(desc, "kNN search", n, "images") as report:
        for start in range(0, n, SEARCH_CHUNK):
            s, i = index.search(features[start:start + SEARCH_CHUNK], k + 1)
            own = i == np.arange(start, start + len(i))[:, None]  # drop the point itself (wherever it ranks)
            keep = np.argsort(own, axis=1, kind="stable")[:, :k]
            sims[start:start + len(i)] = np.take_along_axis(s, keep, 1)
            neighbours[start:start + len(i)] = np.take_along_axis(i, keep, 1)
            report.update(len(i))
    rows = np.repeat(np.arange(n), k)
    sims = sims.ravel().astype(np.float64)
    w = sp.csr_matrix((np.sign(sims) * np.abs(sims) ** gamma, (rows, neighbours.ravel())), shape=(n, n))
    w = w + w.T
    w.setdiag(0)
    w.eliminate_zeros()
    degree = np.asarray(w.sum(axis=1)).ravel()
    with np.errstate(divide="ignore"):
        inv_sqrt = 1.0 / np.sqrt(degree)
    inv_sqrt[~np.isfinite(inv_sqrt)] = 0.0  # isolated or negative-degree nodes, as the seed
    d = sp.diags(inv_sqrt)
    return (d @ w @ d).tocsr()


def diffusion_operator(w_n, alpha=ALPHA):
    """A = I - alpha W_n."""
    return (sp.eye(w_n.shape[0], format="csr") - alpha * w_n).tocsr()


def solve(a, y, x0=None):
    """A f = y by conjugate gradient (tolerance 1e-6, at most 20 iterations, as the seed)."""
    f, _ = cg(a, y, x0=x0, rtol=CG_TOL, maxiter=CG_ITERATIONS)
    return f


def propagate(w_n, labeled_positions, labels, num_classes, alpha=ALPHA):
    """Class scores F [N, C]: for every class c, Y_c = 1/|L_c| on the labeled points of class c
    ("mean" pooling), then A F_c = Y_c. Under an active run a slow propagation reports
    ``[label propagation] solving c/C classes`` (one CG solve per class)."""
    a = diffusion_operator(w_n, alpha)
    scores = np.zeros((w_n.shape[0], num_classes), dtype=np.float64)
    labeled_positions, labels = np.asarray(labeled_positions), np.asarray(labels)
    with stage_counter("label propagation", "solving", num_classes, "classes") as report:
        for c in range(num_classes):
            members = labeled_positions[labels == c]
            if len(members):
                y = np.zeros(w_n.shape[0])
                y[members] = 1.0 / len(members)
                scores[:, c] = solve(a, y)
            report.update(1)
    return scores


def pseudo_labels(scores):
    """(argmax labels, certainty weights): P = rows of max(F, 0) normalised to sum 1, weight
    1 - H(P)/log C divided by the largest weight. Rows with no mass get weight 0 (the seed would
    produce NaN there)."""
    p = np.maximum(scores, 0)
    mass = p.sum(axis=1, keepdims=True)
    p = np.divide(p, mass, out=np.zeros_like(p), where=mass > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log(p), 0.0).sum(axis=1)
    weights = np.where(mass[:, 0] > 0, 1.0 - entropy / np.log(scores.shape[1]), 0.0)
    top = weights.max()
    return p.argmax(axis=1), (weights / top if top > 0 else weights)


def jlp_select(w_n, labeled_positions, budget, alpha=ALPHA):
    """jLP (Simeoni et al., Sec. 4): a class-agnostic diffusion from the labeled set, one point
    at a time: solve A f = y with y = 1 on labeled and already-picked points, pick the
    unlabeled point with the smallest f (the least reached on the graph), add it to y. Each CG
    solve starts from the previous solution. Returns ``budget`` positions in pick order. Under an
    active run a slow selection reports ``[query] jLP p/budget picks`` (one CG solve per pick)."""
    a = diffusion_operator(w_n, alpha)
    n = w_n.shape[0]
    y = np.zeros(n)
    y[np.asarray(labeled_positions)] = 1.0
    taken = y > 0
    if budget > n - taken.sum():
        raise ValueError(f"cannot pick {budget} of {n - taken.sum()} unlabeled points")
    f = None
    picks = np.empty(budget, dtype=np.int64)
    with stage_counter("query", "jLP", budget, "picks") as report:
        for t in range(budget):
            f = solve(a, y, x0=f)
            pick = int(np.argmin(np.where(taken, np.inf, f)))
            picks[t] = pick
            taken[pick] = True
            y[pick] = 1.0
            report.update(1)
    return picks

"""CCAL's joint query (Du et al., ICCV'21; spec 002 A.6), registered as the selector ``CCAL``.

* the query-time features of the two fixed encoders come from ``ctx.extras`` (``features``,
  ``positions``, ``labels``, ``k``, ``t``, ``target``: computed once per trial by active_main.py with
  utils.protocols.ccal.query_features; the need Need.CCAL_FEATURES);
* pure functions from features to scores to the queried positions, chunked over the pool (no
  pool x pool matrix): :func:`semantic_scores`, :func:`distinctive_scores`,
  :func:`joint_selection`, :func:`joint_query`, and :func:`ccal_query` on dataset indices;
* the selector ``CCAL``: the top ``target`` candidates per known class (at most
  ``target`` x classes; fewer when a class has fewer candidates and the pool runs out).
"""

import numpy as np
import torch
import torch.nn.functional as F

from utils.samplers.registry import Need, QueryContext, register_selector


def feature_rows(feature_idx: np.ndarray, num_images: int) -> np.ndarray:
    """``rows[i]``: the row of dataset index i in the features of ``feature_idx`` (-1: none)."""
    rows = np.full(num_images, -1, dtype=np.int64)
    rows[np.asarray(feature_idx, dtype=np.int64)] = np.arange(len(feature_idx))
    return rows


def min_max(x: torch.Tensor) -> torch.Tensor:
    """(x - min) / (max - min) over the pool (0 for a constant vector)."""
    return (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)


def nearest_anchor(queries: torch.Tensor, anchors: torch.Tensor,
                   chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of ``queries`` [N, D], its largest cosine similarity to the rows of ``anchors``
    and that anchor's position; chunked over N (memory O(chunk x |anchors|))."""
    a = F.normalize(anchors, dim=1)
    best, where = [], []
    for start in range(0, len(queries), chunk):
        sims = F.normalize(queries[start:start + chunk], dim=1) @ a.T
        value, position = sims.max(1)
        best.append(value)
        where.append(position)
    return torch.cat(best), torch.cat(where)


def semantic_scores(pool: torch.Tensor, labeled: torch.Tensor, labeled_y: torch.Tensor, k: float, t: float,
                    chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """The semantic score (A.6): S(x) = max_j cos(x, l_j) over all labeled known images, min-max
    normalised over the pool to S^, squashed to (1 - e^{-k(S^ - t)}) / (1 + e^{-k(S^ - t)}) =
    tanh(k (S^ - t) / 2); and the pseudo-label y_sem(x), the label of the nearest labeled image."""
    similarity, nearest = nearest_anchor(pool, labeled, chunk)
    return torch.tanh(k * (min_max(similarity) - t) / 2), labeled_y[nearest]


def distinctive_scores(pool: torch.Tensor, anchors: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """The distinctive score of one class (A.6): D_c(x) = 1/R sum_r [(s1 - s2) + (cos(a1, a2) + s1)],
    with s1 >= s2 the two largest cosine similarities between x's rotation-r feature and the class's
    anchors (rotation r), a1, a2 those anchors. ``pool`` [N, R, D], ``anchors`` [n_c >= 2, R, D]."""
    a = F.normalize(anchors, dim=2)
    scores = []
    for start in range(0, len(pool), chunk):
        x = F.normalize(pool[start:start + chunk], dim=2)
        total = torch.zeros(len(x))
        for r in range(x.shape[1]):
            top = (x[:, r] @ a[:, r].T).topk(2, dim=1)
            a1, a2 = a[top.indices[:, 0], r], a[top.indices[:, 1], r]
            total += 2 * top.values[:, 0] - top.values[:, 1] + (a1 * a2).sum(1)
        scores.append(total / x.shape[1])
    return torch.cat(scores)


def joint_selection(sigma: torch.Tensor, pseudo_labels: torch.Tensor, distinctive: torch.Tensor,
                    target: int) -> np.ndarray:
    """The joint query (A.6) over a pool of N images and C known classes: for class c,
    score_c = sigma + 1 - D^_c (D^_c = ``distinctive[:, c]``, min-max normalised), set to -1 where
    the pseudo-label is not c; the ``target`` highest positions per class (ties: the lower position
    first), classes in order, a position picked by an earlier class not repeated."""
    picks = []
    for c in range(distinctive.shape[1]):
        score = torch.where(pseudo_labels == c, sigma + 1 - distinctive[:, c], torch.full_like(sigma, -1.0))
        picks.append(torch.sort(score, descending=True, stable=True).indices[:target])
    order = torch.cat(picks).numpy()
    _, first = np.unique(order, return_index=True)
    return order[np.sort(first)]


def joint_query(features, pool_rows, labeled_rows, labels, num_known: int, k: float, t: float,
                target: int) -> np.ndarray:
    """Positions into ``pool_rows`` queried from ``features`` = (distinctive [N, R, D], semantic
    [N, D]), the pool and the labeled known images being the feature rows ``pool_rows`` and
    ``labeled_rows`` with classes ``labels`` (0..K-1)."""
    return _joint_query(features, pool_rows, labeled_rows, labels, num_known, k, t, target)[0]


def _joint_query(features, pool_rows, labeled_rows, labels, num_known, k, t, target):
    """(the queried positions, the pseudo-label of every pool image)."""
    if len(pool_rows) == 0:
        return np.empty(0, dtype=np.int64), torch.empty(0, dtype=torch.long)
    dis, sem = features
    labels = torch.as_tensor(np.asarray(labels))
    sigma, pseudo = semantic_scores(sem[pool_rows], sem[labeled_rows], labels, k, t)
    dis_pool = dis[pool_rows]
    distinctive = torch.stack([min_max(distinctive_scores(dis_pool, dis[labeled_rows[(labels == c).numpy()]]))
                               for c in range(num_known)], 1)
    return joint_selection(sigma, pseudo, distinctive, target), pseudo


def pseudo_label_counts(features, pool_rows, labeled_rows, labels, num_known: int) -> list:
    """How many pool images the semantic nearest neighbour labels with each known class."""
    if len(pool_rows) == 0:
        return [0] * num_known
    sem = features[1]
    _, nearest = nearest_anchor(sem[pool_rows], sem[labeled_rows])
    return torch.bincount(torch.as_tensor(np.asarray(labels))[nearest], minlength=num_known).tolist()


def ccal_query(features, feature_idx, pool_idx, labeled_idx, labels, num_known, k, t, target):
    """:func:`joint_query` on dataset indices: ``pool_idx`` and ``labeled_idx`` among the images
    ``feature_idx`` (sorted) whose rows ``features`` holds. Returns the queried indices and the
    number of pool images pseudo-labelled with each class."""
    pool_idx = np.asarray(pool_idx)
    pool_rows, labeled_rows = np.searchsorted(feature_idx, pool_idx), np.searchsorted(feature_idx, labeled_idx)
    picked, pseudo = _joint_query(features, pool_rows, labeled_rows, labels, num_known, k, t, target)
    return pool_idx[picked], torch.bincount(pseudo, minlength=num_known).tolist()


@register_selector("CCAL", needs=(Need.CCAL_FEATURES,), fixed_size=False)
def ccal_positions(ctx: QueryContext) -> np.ndarray:
    """The joint query over ``ctx.candidates`` given ``ctx.labeled_idx`` (known images). Extras:
    ``features`` (distinctive [N, R, D], semantic [N, D]), ``positions`` (dataset index -> row of
    the features, see :func:`feature_rows`), ``labels`` (the classes 0..K-1 of ``ctx.labeled_idx``),
    ``k`` and ``t`` (the semantic squashing) and ``target`` (picks per known class);
    ``ctx.data.num_classes`` is K (the known-class view)."""
    extras = ctx.extras
    rows = np.asarray(extras["positions"])
    pool_rows, labeled_rows = rows[np.asarray(ctx.candidates)], rows[np.asarray(ctx.labeled_idx)]
    if (pool_rows < 0).any() or (labeled_rows < 0).any():
        raise ValueError("CCAL: every candidate and labeled image needs a row in the query features")
    return joint_query(extras["features"], pool_rows, labeled_rows, extras["labels"], ctx.data.num_classes,
                       extras["k"], extras["t"], extras["target"])

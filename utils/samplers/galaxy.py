"""GALAXY (Zhang, Katz-Samuels & Nowak, "GALAXY: Graph-based Active Learning at the Extreme",
ICML 2022): for class k, every sample (labeled or not) is a node of a line graph ordered by the
margin m_k = p_k - max_c p_c (highest first); labeled nodes carry the bit [y = k]. A query takes
a random class's graph and bisects the shortest path between two neighbouring labeled nodes of
different bits (the midpoint of the unlabeled run between them); when every cut edge joins two
labeled nodes, it takes the unlabeled node nearest such an edge, and otherwise a random unlabeled
node. Two classes: one graph, ordered by p_0.

The rules of the scan (ties, the direction of the cut edges searched) are LabelBench's
``galaxy.py`` (maintained by the first author). Within a batch a queried node counts as labeled
with the model's predicted class (LabelBench reads the true label of the nodes it has just
queried, which a query cannot know).
"""

import numpy as np
import torch

from utils.samplers.bait import labeled_probs
from utils.samplers.registry import QueryContext, register_selector


def galaxy_orders(probs: torch.Tensor) -> torch.Tensor:
    """The node order of each class's graph, [G, M]: by decreasing p_k - max p + 1e-8 max p (G = C), or
    by decreasing p_0 for two classes (G = 1), ties in index order."""
    if probs.shape[1] == 2:
        return torch.argsort(probs[:, 0], descending=True, stable=True)[None]
    top = probs.max(1, keepdim=True).values
    margins = probs - top + 1e-8 * top
    return torch.argsort(margins.T, dim=1, descending=True, stable=True)


def galaxy_pick(order: torch.Tensor, labeled: torch.Tensor, bits: torch.Tensor) -> int | None:
    """One GALAXY pick on the line graph ``order`` (node indices), given which nodes are ``labeled``
    and their ``bits`` ([y = k], read at labeled nodes only); None when no cut edge points to a node.
    Returns a node index."""
    lab = labeled[order]
    positions = torch.nonzero(lab).flatten()
    if len(positions) < 2:
        return None
    bit = bits[order][positions]
    gaps = positions[1:] - positions[:-1] - 1
    cut = bit[1:] != bit[:-1]
    runs = torch.nonzero(cut & (gaps > 0)).flatten()
    if len(runs):  # the shortest unlabeled run between labeled nodes of different bits; ties: the first
        j = runs[torch.argmin(gaps[runs])]
        return int(order[(positions[j] + positions[j + 1]) // 2])
    # cut edges joining two labeled nodes, bit 0 then bit 1: the nearest unlabeled node to either side
    edges = torch.nonzero((gaps == 0) & ~bit[:-1] & bit[1:]).flatten()
    if len(edges) == 0:
        return None
    everywhere = torch.arange(len(order))
    unlabeled_at = torch.where(~lab, everywhere, -1)
    before = torch.cummax(unlabeled_at, 0).values  # the last unlabeled position at or before i
    after = torch.flip(torch.cummin(torch.flip(torch.where(~lab, everywhere, len(order)), [0]), 0).values, [0])
    left, right = before[positions[edges]], after[positions[edges + 1]]
    best, node = len(order) + 1, None
    has_left = left >= 0
    if has_left.any():  # the left scan keeps the last of equal distances
        dist = torch.where(has_left, positions[edges] - left, len(order) + 1)
        j = len(dist) - 1 - int(torch.argmin(torch.flip(dist, [0])))
        best, node = int(dist[j]), int(left[j])
    has_right = right < len(order)
    if has_right.any():  # the right scan (from the end) keeps the first strictly nearer
        dist = torch.where(has_right, right - positions[edges + 1], len(order) + 1)
        j = len(dist) - 1 - int(torch.argmin(torch.flip(dist, [0])))
        if int(dist[j]) < best:
            node = int(right[j])
    return None if node is None else int(order[node])


def galaxy_select(probs: torch.Tensor, labeled: torch.Tensor, labels: torch.Tensor, graphs: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """GALAXY's batch over M nodes: ``probs`` [M, C], the ``labeled`` mask, ``labels`` (read where
    labeled), and ``graphs`` (the class graph of each pick, len = query size; 0 for two classes).
    Picks are sequential: each picked node then counts as labeled with its predicted class. Returns
    node indices in pick order; O(M) vectorised work per pick."""
    orders = galaxy_orders(probs)
    labeled = labeled.clone()
    labels = torch.where(labeled, labels, probs.argmax(1))
    chosen = torch.empty(len(graphs), dtype=torch.long)
    for i, k in enumerate(graphs.tolist()):
        node = galaxy_pick(orders[k], labeled, labels == k)
        if node is None:  # no cut edge to bisect: a random unlabeled node
            free = torch.nonzero(~labeled).flatten()
            node = int(free[torch.randint(len(free), (1,), generator=generator)])
        chosen[i] = node
        labeled[node] = True
    return chosen


@register_selector("GALAXY")
def galaxy(ctx: QueryContext) -> torch.Tensor:
    """Nodes: the candidates, then the labeled set (labels from the labeled set only)."""
    probs = torch.cat([ctx.probs().cpu(), labeled_probs(ctx)])
    n = len(ctx.candidates)
    labeled = torch.arange(len(probs)) >= n
    labels = torch.zeros(len(probs), dtype=torch.long)
    labels[n:] = torch.as_tensor(np.asarray(ctx.data.train_targets)[ctx.labeled_idx], dtype=torch.long)
    graphs = torch.from_numpy(ctx.rng.integers(probs.shape[1] if probs.shape[1] > 2 else 1, size=ctx.query_size))
    generator = torch.Generator().manual_seed(int(ctx.rng.integers(2**31)))
    return galaxy_select(probs, labeled, labels, graphs, generator)

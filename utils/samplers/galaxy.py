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


def galaxy_pick(positions: torch.Tensor, bits: torch.Tensor, size: int) -> int | None:
    """One GALAXY pick on a line graph of ``size`` nodes whose labeled nodes sit at the sorted
    ``positions`` with ``bits`` ([y = k]); returns a graph position, or None when no cut edge points
    to an unlabeled node. O(L) work: the unlabeled nodes are the gaps between labeled positions."""
    if len(positions) < 2:
        return None
    gaps = positions[1:] - positions[:-1] - 1
    cut = bits[1:] != bits[:-1]
    runs = torch.nonzero(cut & (gaps > 0)).flatten()
    if len(runs):  # the shortest unlabeled run between labeled nodes of different bits; ties: the first
        j = runs[torch.argmin(gaps[runs])]
        return int((positions[j] + positions[j + 1]) // 2)
    # cut edges joining two labeled nodes, bit 0 then bit 1: the nearest unlabeled node to either side,
    # just outside the block of consecutive labeled nodes holding the edge
    edges = torch.nonzero((gaps == 0) & ~bits[:-1] & bits[1:]).flatten()
    if len(edges) == 0:
        return None
    new_block = torch.cat([torch.ones(1, dtype=torch.bool), gaps > 0])
    block = torch.cumsum(new_block.long(), 0) - 1
    starts, ends = positions[new_block], positions[torch.cat([gaps > 0, torch.ones(1, dtype=torch.bool)])]
    left, right = starts[block[edges]] - 1, ends[block[edges + 1]] + 1
    far = size + 1
    best, chosen = far, None
    left_dist = torch.where(left >= 0, positions[edges] - left, far)
    if int(left_dist.min()) < far:  # the left-to-right scan keeps the last of equal distances
        j = len(edges) - 1 - int(torch.argmin(torch.flip(left_dist, [0])))
        best, chosen = int(left_dist[j]), int(left[j])
    right_dist = torch.where(right < size, right - positions[edges + 1], far)
    if int(right_dist.min()) < best:  # the right-to-left scan keeps the first strictly nearer: the last one
        j = len(edges) - 1 - int(torch.argmin(torch.flip(right_dist, [0])))
        chosen = int(right[j])
    return chosen


def galaxy_select(probs: torch.Tensor, labeled: torch.Tensor, labels: torch.Tensor, graphs: torch.Tensor,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """GALAXY's batch over M nodes: ``probs`` [M, C], the ``labeled`` mask, ``labels`` (read where
    labeled), and ``graphs`` (the class graph of each pick, len = query size; 0 for two classes).
    Picks are sequential: each picked node then counts as labeled with its predicted class. Returns
    node indices in pick order; each pick costs O(L log L) for L labeled nodes."""
    orders = galaxy_orders(probs)
    ranks = torch.empty_like(orders).scatter_(1, orders, torch.arange(orders.shape[1]).expand_as(orders))
    labeled = labeled.clone()
    labels = torch.where(labeled, labels, probs.argmax(1))
    nodes = torch.nonzero(labeled).flatten()
    chosen = torch.empty(len(graphs), dtype=torch.long)
    for i, k in enumerate(graphs.tolist()):
        positions, by_rank = torch.sort(ranks[k][nodes])
        position = galaxy_pick(positions, labels[nodes[by_rank]] == k, len(probs))
        if position is None:  # no cut edge to bisect: a random unlabeled node
            free = torch.nonzero(~labeled).flatten()
            node = int(free[torch.randint(len(free), (1,), generator=generator)])
        else:
            node = int(orders[k][position])
        chosen[i] = node
        labeled[node] = True
        nodes = torch.cat([nodes, chosen[i:i + 1]])
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
